"""vpcnet.api"""
