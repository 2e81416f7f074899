"""vpcnet.datastore"""
