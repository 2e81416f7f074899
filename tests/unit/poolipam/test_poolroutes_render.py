"""Golden tests of the Calico-mode route/tunnel/NAT rendering (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from vpcnet.api.base import ObjectMeta
from vpcnet.api.ippool import IPPool
from vpcnet.dataplane.poolroutes import (
    FdbEntry,
    Neighbor,
    PoolDataplane,
    Route,
    encapsulate,
    render,
    render_fdb_batch,
    render_ip_batch,
    render_nat_restore,
    vtep_mac,
    vtep_mac6,
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


def node6(name: str, address: str, subnet: str, address6: str, subnet6: str) -> NodeRecord:
    return NodeRecord(
        name,
        IPv4Address(address),
        IPv4Network(subnet),
        vtep_mac(name),
        address6=IPv6Address(address6),
        subnet6=IPv6Network(subnet6),
        vtep_mac6=vtep_mac6(name),
    )


D1 = node6("d1", "10.0.1.11", "10.0.1.0/24", "2001:db8:0:1::11", "2001:db8:0:1::/64")
D2 = node6("d2", "10.0.1.12", "10.0.1.0/24", "2001:db8:0:1::12", "2001:db8:0:1::/64")
D3 = node6("d3", "10.0.2.13", "10.0.2.0/24", "2001:db8:0:2::13", "2001:db8:0:2::/64")


def pool6(cidr: str, **kw: object) -> IPPool:
    name = cidr.replace("/", "-").replace(":", "-")
    return IPPool(ObjectMeta(name=name), IPv6Network(cidr), block_size=122, **kw)  # type: ignore[arg-type]


def test_dual_stack_routes_each_family_over_its_own_underlay() -> None:
    v4, v6 = (
        pool("10.244.0.0/16", vxlan_mode="CrossSubnet"),
        pool6("fd00:10:244::/64", vxlan_mode="CrossSubnet"),
    )
    b4 = [Block.new(IPv4Network("10.244.0.64/26"), "d2"), Block.new(IPv4Network("10.244.0.128/26"), "d3")]
    b6 = [
        Block.new(IPv6Network("fd00:10:244::/122"), "d1"),
        Block.new(IPv6Network("fd00:10:244::40/122"), "d2"),
        Block.new(IPv6Network("fd00:10:244::80/122"), "d3"),
    ]
    b6[1].allocate("borrowed", "d3")  # d3 uses fd00:10:244::40 from d2's block
    nodes = {n.name: n for n in (D1, D2, D3)}
    desired = render(D1, nodes, b4 + b6, [v4, v6], uplink_mtu=9001)
    routes = {r.ip_args() for r in desired.routes}
    assert "blackhole fd00:10:244::/122 proto 86" in routes
    # Same IPv6 subnet: straight to the peer's IPv6 address, onlink (the node has a /128).
    assert "fd00:10:244::40/122 via 2001:db8:0:1::12 dev eth0 onlink proto 86" in routes
    # Across subnets: VXLAN over IPv6 on vxlan-v6.calico, beside the IPv4 vxlan.calico.
    assert "fd00:10:244::80/122 via 2001:db8:0:2::13 dev vxlan-v6.calico onlink proto 86" in routes
    assert "fd00:10:244::40/128 via 2001:db8:0:2::13 dev vxlan-v6.calico onlink proto 86" in routes
    assert "10.244.0.128/26 via 10.0.2.13 dev vxlan.calico onlink proto 86" in routes
    assert Neighbor("vxlan-v6.calico", IPv6Address("2001:db8:0:2::13"), vtep_mac6("d3")) in desired.neighbors
    assert FdbEntry("vxlan-v6.calico", vtep_mac6("d3"), IPv6Address("2001:db8:0:2::13")) in desired.fdb
    tunnels = {t.name: t for t in desired.tunnels}
    assert tunnels["vxlan-v6.calico"].local == IPv6Address("2001:db8:0:1::11")
    assert (tunnels["vxlan-v6.calico"].mtu, tunnels["vxlan.calico"].mtu) == (8931, 8951)
    # Both families in one batch, in a stable order (no comparison of IPv4 with IPv6).
    lines = render_ip_batch(set(), desired, set())
    assert lines == render_ip_batch(set(), desired, set()) and len(lines) == len(desired.routes) + 2


def test_ipv6_nat_outgoing_in_its_own_rules_and_ipv4_only_peers_are_noted() -> None:
    v4 = pool("10.244.0.0/16", nat_outgoing=True)
    v6 = pool6("fd00:10:244::/64", nat_outgoing=True)
    desired = render(
        D1, {"d1": D1, "n2": N2}, [Block.new(IPv6Network("fd00:10:244::40/122"), "n2")], [v4, v6]
    )
    assert desired.nat_rules == (
        "-A vpcn-nat-outgoing -d 10.244.0.0/16 -j RETURN",
        "-A vpcn-nat-outgoing -s 10.244.0.0/16 -j MASQUERADE",
    )
    assert desired.nat6_rules == (
        "-A vpcn-nat-outgoing -d fd00:10:244::/64 -j RETURN",
        "-A vpcn-nat-outgoing -s fd00:10:244::/64 -j MASQUERADE",
    )
    assert not desired.routes
    assert any("node n2 has no IPv6 address" in note for note in desired.notes)
