"""vpcnet.cli"""
