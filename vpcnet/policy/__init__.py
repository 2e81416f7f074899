"""vpcnet.policy"""
