"""vpcnet.cloud"""
