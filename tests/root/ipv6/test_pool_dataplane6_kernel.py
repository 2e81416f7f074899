"""The dual-stack pool data plane applied to a real kernel namespace: IPv6 block routes (blackhole, direct
onlink with the peer's neighbour pinned, through vxlan-v6.calico), the IPv6 VXLAN device over an IPv6
local address, IPv6 natOutgoing in ip6tables, beside the IPv4 ones; a second apply sends nothing (what is
read back matches what was written), and an empty state takes back only what is ours."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from vpcnet.api.base import ObjectMeta
from vpcnet.api.ippool import IPPool
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.poolroutes import render, vtep_mac, vtep_mac6
from vpcnet.dataplane.poolroutes_apply import apply_pool_dataplane
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.node_record import NodeRecord

pytestmark = pytest.mark.root


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def node(name: str, v4: str, v6: str, subnet4: str, subnet6: str) -> NodeRecord:
    return NodeRecord(
        name,
        IPv4Address(v4),
        IPv4Network(subnet4),
        vtep_mac(name),
        address6=IPv6Address(v6),
        subnet6=IPv6Network(subnet6),
        vtep_mac6=vtep_mac6(name),
        uplink_mac=vtep_mac(name, "eni"),
    )


@pytest.fixture
def netns() -> Iterator[str]:
    name = "vt6" + secrets.token_hex(2)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh(
            "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"
        )  # no dummy module
        sh("ip", "-n", name, "link", "set", "peer0", "up")
        sh("ip", "-n", name, "addr", "add", "10.77.1.11/24", "dev", "eth0")
        sh("ip", "-n", name, "addr", "add", "2001:db8:77:1::11/128", "dev", "eth0", "nodad")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_dual_stack_apply_is_idempotent_and_removes_only_its_own(netns: str) -> None:
    local = node("n1", "10.77.1.11", "2001:db8:77:1::11", "10.77.1.0/24", "2001:db8:77:1::/64")
    near = node("n2", "10.77.1.12", "2001:db8:77:1::12", "10.77.1.0/24", "2001:db8:77:1::/64")
    far = node("n3", "10.77.2.13", "2001:db8:77:2::13", "10.77.2.0/24", "2001:db8:77:2::/64")
    pools = [
        IPPool(
            ObjectMeta(name="v4"), IPv4Network("10.244.0.0/16"), vxlan_mode="CrossSubnet", nat_outgoing=True
        ),
        IPPool(
            ObjectMeta(name="v6"),
            IPv6Network("fd00:10:244::/64"),
            122,
            vxlan_mode="CrossSubnet",
            nat_outgoing=True,
        ),
    ]
    blocks = [
        Block.new(IPv6Network("fd00:10:244::/122"), "n1"),
        Block.new(IPv6Network("fd00:10:244::40/122"), "n2"),
        Block.new(IPv6Network("fd00:10:244::80/122"), "n3"),
        Block.new(IPv4Network("10.244.0.64/26"), "n3"),
    ]
    nodes = {n.name: n for n in (local, near, far)}
    desired = render(local, nodes, blocks, pools, uplink_mtu=1500)
    # Someone else's permanent IPv6 neighbour on the uplink, outside our /64: never ours to remove.
    sh("ip", "-n", netns, "neigh", "add", "2001:db8:99::1", "lladdr", "02:00:00:00:00:99", "dev", "eth0",
       "nud", "permanent")  # fmt: skip
    runner = SubprocessRunner(netns)
    first = asyncio.run(apply_pool_dataplane(desired, runner))
    assert first.changed and first.ip_lines >= 5
    routes = sh("ip", "-n", netns, "-6", "route", "show", "proto", "86")
    assert "blackhole fd00:10:244::/122" in routes
    assert "fd00:10:244::40/122 via 2001:db8:77:1::12 dev eth0" in routes
    assert "fd00:10:244::80/122 via 2001:db8:77:2::13 dev vxlan-v6.calico" in routes
    neigh = sh("ip", "-n", netns, "-6", "neigh", "show", "dev", "eth0")
    assert f"2001:db8:77:1::12 lladdr {near.uplink_mac} PERMANENT" in neigh
    link = sh("ip", "-n", netns, "-d", "link", "show", "vxlan-v6.calico")
    assert "local 2001:db8:77:1::11" in link and "mtu 1430" in link
    nat6 = sh("ip", "netns", "exec", netns, "ip6tables-save", "-t", "nat")
    assert "-A vpcn-nat-outgoing -s fd00:10:244::/64 -j MASQUERADE" in nat6
    # Again: nothing to send (routes, neighbours, FDB, tunnels and NAT read back as written).
    again = asyncio.run(apply_pool_dataplane(desired, runner))
    assert not again.changed, again
    # Nothing desired: ours go, the other neighbour stays.
    empty = render(local, {"n1": local}, [], [], uplink_mtu=1500)
    asyncio.run(apply_pool_dataplane(empty, runner))
    assert sh("ip", "-n", netns, "-6", "route", "show", "proto", "86").strip() == ""
    neigh = sh("ip", "-n", netns, "-6", "neigh", "show", "dev", "eth0")
    assert "2001:db8:77:1::12" not in neigh and "2001:db8:99::1" in neigh
    assert "MASQUERADE" not in sh("ip", "netns", "exec", netns, "ip6tables-save", "-t", "nat")
