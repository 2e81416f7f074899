"""The lab topology is pure data: subnet carving, AZ spread, validation."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpcnet.lab.topology import TopologyError, build_topology


def test_default_topology() -> None:
    topo = build_topology()
    assert topo.vpc_cidr == "10.0.0.0/16"
    assert topo.azs == ("us-east-1a", "us-east-1b")
    assert [(s.name, s.cidr, s.az, s.role) for s in topo.subnets] == [
        ("node-us-east-1a", "10.0.0.0/20", "us-east-1a", "node"),
        ("node-us-east-1b", "10.0.16.0/20", "us-east-1b", "node"),
    ]
    assert [(n.name, n.az, n.subnet, n.instance_type) for n in topo.nodes] == [
        ("node1", "us-east-1a", "node-us-east-1a", "t3.medium"),
        ("node2", "us-east-1b", "node-us-east-1b", "t3.medium"),
        ("node3", "us-east-1a", "node-us-east-1a", "t3.medium"),
    ]
    assert topo.subnet("node-us-east-1b").gateway == "10.0.16.1"
    assert topo.node_subnet("us-east-1a").prefix_len == 20
    assert topo.pod_subnet("us-east-1a") is None


def test_pod_subnets_follow_node_subnets() -> None:
    topo = build_topology(azs=3, pod_subnets=True)
    assert [s.cidr for s in topo.subnets if s.role == "pod"] == [
        "10.0.48.0/20",
        "10.0.64.0/20",
        "10.0.80.0/20",
    ]
    pod = topo.pod_subnet("us-east-1c")
    assert pod is not None and pod.name == "pod-us-east-1c"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"nodes": 0}, "--nodes"),
        ({"azs": 7}, "--azs"),
        ({"instance_type": "bogus"}, "--instance-type"),
        ({"vpc_cidr": "10.0.0.0/33"}, "VPC CIDR"),
        ({"vpc_cidr": "8.8.0.0/16"}, "private"),
        ({"vpc_cidr": "10.0.0.0/20", "azs": 2}, "room for 1"),
        ({"vpc_cidr": "10.0.0.0/12"}, "between /16"),
    ],
)
def test_bad_input_names_the_parameter(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(TopologyError, match=needle):
        build_topology(**kwargs)  # type: ignore[arg-type]


@given(nodes=st.integers(1, 64), azs=st.integers(1, 6), pods=st.integers(0, 2))
def test_subnets_disjoint_inside_vpc_and_nodes_round_robin(nodes: int, azs: int, pods: int) -> None:
    if azs * (1 + pods) > 15:  # a /16 holds 16 /20s, one of them the control plane's
        with pytest.raises(TopologyError, match="has room for 15"):
            build_topology(nodes=nodes, azs=azs, pod_subnets=pods)
        return
    topo = build_topology(nodes=nodes, azs=azs, pod_subnets=pods)
    vpc = ipaddress.ip_network(topo.vpc_cidr)
    nets = [ipaddress.ip_network(s.cidr) for s in topo.subnets]
    assert all(n.subnet_of(vpc) for n in nets)  # type: ignore[arg-type]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    assert len(topo.subnets) == azs * (1 + pods)
    counts = [sum(1 for n in topo.nodes if n.az == az) for az in topo.azs]
    assert max(counts) - min(counts) <= 1
    assert len({n.name for n in topo.nodes}) == nodes
    for n in topo.nodes:
        assert topo.subnet(n.subnet).az == n.az
        assert topo.subnet(n.subnet).role == "node"


def test_two_pod_subnets_per_zone() -> None:
    topo = build_topology(azs=2, pod_subnets=2)
    names = [s.name for s in topo.subnets if s.role == "pod"]
    assert names == ["pod-us-east-1a", "pod-us-east-1b", "pod2-us-east-1a", "pod2-us-east-1b"]
    with pytest.raises(TopologyError, match="0, 1 or 2"):
        build_topology(pod_subnets=3)
