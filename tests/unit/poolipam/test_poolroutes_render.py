"""Golden tests of the Calico-mode route/tunnel/NAT rendering (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from vpcnet.api.base import ObjectMeta
from vpcnet.api.ippool import IPPool
from vpcnet.dataplane.poolroutes import (
    PoolDataplane,
    Route,
    encapsulate,
    render,
    render_fdb_batch,
    render_ip_batch,
    render_nat_restore,
    vtep_mac,
)
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.node_record import NodeRecord


def pool(cidr: str, **kw: object) -> IPPool:
    return IPPool(ObjectMeta(name=cidr.replace("/", "-")), IPv4Network(cidr), **kw)  # type: ignore[arg-type]


def node(name: str, address: str, subnet: str) -> NodeRecord:
    return NodeRecord(name, IPv4Address(address), IPv4Network(subnet), vtep_mac(name))


N1 = node("n1", "10.0.1.11", "10.0.1.0/24")
N2 = node("n2", "10.0.1.12", "10.0.1.0/24")
N3 = node("n3", "10.0.2.13", "10.0.2.0/24")
NODES = {n.name: n for n in (N1, N2, N3)}


def blocks() -> list[Block]:
    b1 = Block.new(IPv4Network("10.244.0.0/26"), "n1")
    b2 = Block.new(IPv4Network("10.244.0.64/26"), "n2")
    b3 = Block.new(IPv4Network("10.244.0.128/26"), "n3")
    gone = Block.new(IPv4Network("10.244.0.192/26"), "n9")
    b1.allocate("h1", "n1")
    b2.allocate("h2", "n2")
    b2.allocate("h3", "n3")  # n3 borrowed 10.244.0.65 from n2's block
    b1.allocate("h4", "n2")  # n2 borrowed 10.244.0.1 from n1's block
    return [b1, b2, b3, gone]


def test_encapsulation_decision() -> None:
    cross = pool("10.244.0.0/16", vxlan_mode="CrossSubnet")
    always = pool("10.244.0.0/16", vxlan_mode="Always")
    never = pool("10.244.0.0/16")
    ipip = pool("10.244.0.0/16", ipip_mode="CrossSubnet")
    assert (encapsulate(cross, N1, N2), encapsulate(cross, N1, N3)) == ("none", "vxlan")
    assert (encapsulate(always, N1, N2), encapsulate(always, N1, N3)) == ("vxlan", "vxlan")
    assert (encapsulate(never, N1, N2), encapsulate(never, N1, N3)) == ("none", "none")
    assert (encapsulate(ipip, N1, N2), encapsulate(ipip, N1, N3)) == ("none", "ipip")


def test_vxlan_cross_subnet_golden() -> None:
    desired = render(
        N1, NODES, blocks(), [pool("10.244.0.0/16", vxlan_mode="CrossSubnet", nat_outgoing=True)]
    )
    lines = render_ip_batch(set(), desired, set())
    mac3 = vtep_mac("n3")
    assert lines == [
        "route replace blackhole 10.244.0.0/26 proto 86",
        "route replace 10.244.0.1/32 via 10.0.1.12 dev eth0 proto 86",
        "route replace 10.244.0.64/26 via 10.0.1.12 dev eth0 proto 86",
        "route replace 10.244.0.65/32 via 10.0.2.13 dev vxlan.calico onlink proto 86",
        "route replace 10.244.0.128/26 via 10.0.2.13 dev vxlan.calico onlink proto 86",
        f"neigh replace 10.0.2.13 lladdr {mac3} dev vxlan.calico nud permanent",
    ]
    assert render_fdb_batch(set(), desired) == [
        f"fdb replace {mac3} dev vxlan.calico dst 10.0.2.13 self permanent"
    ]
    # 10.244.0.1 is used on n2 but the block is n1's: n1 needs a /32 to n2 (it sits under n1's blackhole).
    assert Route(IPv4Network("10.244.0.1/32"), "unicast", N2.address, "eth0") in desired.routes
    (tunnel,) = desired.tunnels
    assert (tunnel.name, tunnel.local, tunnel.mtu, tunnel.mac) == (
        "vxlan.calico",
        N1.address,
        1450,
        vtep_mac("n1"),
    )
    assert render_nat_restore(desired.nat_rules, jump_present=False) == (
        "*nat\n"
        ":vpcn-nat-outgoing - [0:0]\n"
        "-A vpcn-nat-outgoing -d 10.244.0.0/16 -j RETURN\n"
        "-A vpcn-nat-outgoing -s 10.244.0.0/16 -j MASQUERADE\n"
        '-A POSTROUTING -m comment --comment "vpcnet pools natOutgoing" -j vpcn-nat-outgoing\n'
        "COMMIT\n"
    )
    # The gone node n9's block is not routed anywhere.
    assert not any(r.dst == IPv4Network("10.244.0.192/26") for r in desired.routes)


def test_ipip_always_golden() -> None:
    desired = render(N3, NODES, blocks(), [pool("10.244.0.0/16", ipip_mode="Always")])
    lines = render_ip_batch(set(), desired, set())
    assert lines == [
        "route replace 10.244.0.0/26 via 10.0.1.11 dev tunl0 onlink proto 86",
        "route replace 10.244.0.1/32 via 10.0.1.12 dev tunl0 onlink proto 86",
        "route replace 10.244.0.64/26 via 10.0.1.12 dev tunl0 onlink proto 86",
        "route replace blackhole 10.244.0.128/26 proto 86",
    ]
    assert [t.kind for t in desired.tunnels] == ["ipip"] and desired.tunnels[0].mtu == 1480
    assert not desired.neighbors and not desired.fdb and desired.nat_rules == ()


def test_diff_sends_only_changes() -> None:
    pools = [pool("10.244.0.0/16", vxlan_mode="CrossSubnet")]
    before = render(N1, NODES, blocks(), pools)
    nodes_without_n3 = {k: v for k, v in NODES.items() if k != "n3"}
    after = render(N1, nodes_without_n3, blocks(), pools)
    lines = render_ip_batch(set(before.routes), after, set(before.neighbors))
    assert lines == [
        "route del 10.244.0.65/32 via 10.0.2.13 dev vxlan.calico onlink proto 86",
        "route del 10.244.0.128/26 via 10.0.2.13 dev vxlan.calico onlink proto 86",
        "neigh del 10.0.2.13 dev vxlan.calico",
    ]
    assert render_ip_batch(set(after.routes), after, set(after.neighbors)) == []
    assert render_fdb_batch(set(before.fdb), after) == [
        f"fdb del {vtep_mac('n3')} dev vxlan.calico dst 10.0.2.13"
    ]


def test_nothing_to_do_renders_nothing() -> None:
    assert render(N1, {"n1": N1}, [], []) == PoolDataplane()


def test_a_disabled_pool_keeps_its_routes_and_nat_for_the_pods_that_have_its_addresses() -> None:
    """Disabling a pool (the first step of moving pods to another) stops new allocations only."""
    on = render(N1, NODES, blocks(), [pool("10.244.0.0/16", vxlan_mode="CrossSubnet", nat_outgoing=True)])
    off = render(
        N1,
        NODES,
        blocks(),
        [pool("10.244.0.0/16", vxlan_mode="CrossSubnet", nat_outgoing=True, disabled=True)],
    )
    assert off.routes == on.routes and off.tunnels == on.tunnels
    assert (
        off.nat_rules
        == on.nat_rules
        == (
            "-A vpcn-nat-outgoing -d 10.244.0.0/16 -j RETURN",
            "-A vpcn-nat-outgoing -s 10.244.0.0/16 -j MASQUERADE",
        )
    )
