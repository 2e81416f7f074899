"""vpcnet.dataplane"""
