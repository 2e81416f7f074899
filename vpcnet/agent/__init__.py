"""vpcnet.agent"""
