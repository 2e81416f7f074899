"""vpcnet.cni"""
