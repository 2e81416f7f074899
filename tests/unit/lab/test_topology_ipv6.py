"""The lab topology in both families: the /56 and one /64 per subnet."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest

from vpcnet.lab.topology import DEFAULT_VPC_IPV6_CIDR, TopologyError, build_topology


def test_ipv4_has_no_ipv6_blocks() -> None:
    topo = build_topology()
    assert topo.ip_family == "ipv4" and not topo.vpc_ipv6_cidr
    assert all(not s.ipv6_cidr for s in topo.subnets)


@pytest.mark.parametrize("family", ["dual", "ipv6"])
def test_each_subnet_gets_its_own_64_of_the_56(family: str) -> None:
    topo = build_topology(azs=3, pod_subnets=True, ip_family=family)
    vpc = IPv6Network(topo.vpc_ipv6_cidr)
    assert topo.vpc_ipv6_cidr == DEFAULT_VPC_IPV6_CIDR and vpc.prefixlen == 56
    blocks = [IPv6Network(s.ipv6_cidr) for s in topo.subnets]
    assert all(b.prefixlen == 64 and b.subnet_of(vpc) for b in blocks)
    assert len(set(blocks)) == len(blocks) == 6
    assert vpc.is_private and IPv6Network("2001:db8::/32").supernet_of(vpc)  # documentation range


def test_unknown_family_is_named() -> None:
    with pytest.raises(TopologyError, match="--ip-family"):
        build_topology(ip_family="ipv5")
