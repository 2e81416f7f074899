"""vpcnet.lab"""
