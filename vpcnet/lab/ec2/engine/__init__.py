"""The parts of the emulated EC2 engine behind `vpcnet.lab.ec2.state.Cloud`, one concern each.

- `tables.Tables`: the records of one account in one region (VPCs, subnets, security groups, instances,
  ENIs), the sequence counter, lookups that raise EC2's NotFound errors.
- `store.Store`: persistence and transactions: the lock, the versioned JSON state file, all-or-nothing
  mutations (rollback on any error) and the fabric hooks called inside them.
- `tagging`: tag rules (keys, values, the 50-tag limit) and Create/DeleteTags on any resource.
- `security_groups.SecurityGroups`: groups per VPC, the default group, membership checks for ENIs (5 per
  ENI), Create/Delete and Authorize/Revoke ingress and egress (60 rules per direction), the fabric told of
  every change; `sg_rules`: IpPermissions to rules (protocols, ports, ICMP, CIDR and group peers), pure.
- `addresses.AddressAssignment`: IPv4 addresses and /28 prefixes of ENIs: what a subnet uses, limits per ENI,
  prefix support, Assign/UnassignPrivateIpAddresses.
- `enis.EniLifecycle`: create/attach/detach/delete, device index and limits per network card, attributes.
- `topology.Topology`: VPCs, subnets, instance launch and termination (the lab-side API).

Each part holds the `Store` and works on its `Tables`; a part's public mutating method opens the mutation,
its helpers expect the caller to hold one. Where upcoming features land: IPv6 (AssignIpv6Addresses, /80
prefixes) in an `addresses6` part beside `addresses` (IPv6 records on `model.Eni`, arithmetic beside
`addressing`); trunk/branch ENIs in a `trunking` part that builds on `enis` (attach rules) and `addresses`.
"""
