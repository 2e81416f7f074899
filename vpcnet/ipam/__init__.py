"""vpcnet.ipam"""
