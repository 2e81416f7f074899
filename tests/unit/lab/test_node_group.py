"""The lab nodes' security group: all among the nodes, all egress, and a calico-mode lab's pod pool."""

from __future__ import annotations

from vpcnet.lab.ec2.state import Cloud
from vpcnet.lab.labctl import create_node_group, pool_cidrs


def test_pool_cidrs_only_for_calico_mode_labs_with_agents() -> None:
    assert pool_cidrs(True, {"VPCNET_MODE": "calico"}) == ["10.244.0.0/16"]
    assert pool_cidrs(True, {"VPCNET_MODE": "calico", "CALICO_IPV4POOL_CIDR": "10.96.0.0/12"}) == [
        "10.96.0.0/12"
    ]
    assert pool_cidrs(True, {}) == [] and pool_cidrs(False, {"VPCNET_MODE": "calico"}) == []


def test_node_group_rules() -> None:
    cloud = Cloud()
    vpc = cloud.create_vpc("10.0.0.0/16")
    gid = create_node_group(cloud, vpc.id, "lab", ["10.244.0.0/16"])
    group = cloud.security_group(gid)
    assert group.name == "lab-nodes"
    ingress = {(r.protocol, r.group_id or r.cidr) for r in group.rules if not r.egress}
    egress = {(r.protocol, r.cidr) for r in group.rules if r.egress}
    assert ingress == {("-1", gid), ("-1", "10.244.0.0/16")}
    assert egress == {("-1", "0.0.0.0/0")}
