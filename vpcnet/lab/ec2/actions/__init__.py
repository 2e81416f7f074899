"""The EC2 actions of the lab endpoint, grouped by area; `vpcnet.lab.ec2.api.Ec2Api` dispatches to them.

- `common`: parameter helpers (`required`) and the handler types.
- `answers.Answers`: how records are rendered in answers (boto3's member names).
- `instances.InstanceActions`: DescribeInstances, DescribeInstanceTypes, DescribeVpcs, DescribeSubnets.
- `enis.EniActions`: Describe/Create/Attach/Detach/Delete NetworkInterface, ModifyNetworkInterfaceAttribute.
- `addresses.AddressActions`: Assign/UnassignPrivateIpAddresses (Assign/UnassignIpv6Addresses go here).
- `tags.TagActions`: CreateTags, DeleteTags.
- `security_groups.SecurityGroupActions`: Create/Delete/Describe security groups, Authorize/Revoke
  ingress and egress rules, DescribeSecurityGroupRules.
- `trunking.TrunkingActions`: Associate/DisassociateTrunkInterface, DescribeTrunkInterfaceAssociations.

Each group maps parameters, filters and paginates, and leaves the rules to `state.Cloud`. A new area is a new
group here, registered in `api.ACTIONS` and `Ec2Api`.
"""
