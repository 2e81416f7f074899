"""Calico-mode routes, tunnels and NAT for one node, computed from the IPAM state (pure; no I/O).

Routes come from block affinities in the datastore (each node watches them), not from BGP:
- the node's own blocks: a blackhole (the CNI's /32 routes to the local "cali" veths are more specific),
  so addresses of the block that are not in use never leak out of the default route;
- another live node's block: via that node's address on the uplink when the pool does not encapsulate, or
  when it is CrossSubnet and the peer is in this node's subnet; else through the pool's tunnel
  (VXLAN: a route via the peer onlink on the VXLAN device, a permanent neighbour entry for the peer
  with its VTEP MAC, and an FDB entry sending that MAC to the peer's address; IP-in-IP: onlink via tunl0);
- an address borrowed from someone else's block: a /32 to the node that uses it;
- natOutgoing: masquerade from the pools that have it to anything outside every pool.
Both families go the same way, each over its own underlay: IPv6 blocks via the peer's IPv6 address (a
direct route within this node's IPv6 subnet, onlink: EC2 gives a node a /128) or through
`vxlan-v6.calico` (VXLAN over IPv6, as Calico's IPv6 VXLAN device), and IPv6 natOutgoing in ip6tables.
A direct IPv6 next hop also gets a permanent neighbour entry on the uplink with the peer's ENI MAC: what
the VPC answers to neighbour discovery for it (the lab's fabric answers with its router's MAC instead, and
its router has no route to pool addresses).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

from vpcnet.api.ippool import IPPool
from vpcnet.ipam.blocks import Block, BlockAddress, Cidr, within
from vpcnet.ipam.node_record import NodeRecord

VXLAN_DEVICE = "vxlan.calico"
VXLAN6_DEVICE = "vxlan-v6.calico"
VXLAN6_OVERHEAD = 70  # the IPv6 header is 20 bytes longer
VXLAN_VNI = 4096
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
IPIP_DEVICE = "tunl0"
IPIP_OVERHEAD = 20
NAT_CHAIN = "vpcn-nat-outgoing"
NAT_JUMP_COMMENT = "vpcnet pools natOutgoing"
# Routes we own carry this protocol number, so that applying never touches anyone else's routes.
ROUTE_PROTOCOL = 86


def ordered(items: Any) -> list[Any]:
    """Routes, neighbours or FDB entries in a stable order: field by field as dataclass ordering would,
    with every address or network keyed by its version first (Python will not compare an IPv4 address
    with an IPv6 one, so the dataclasses are not ordered)."""
    return sorted(items, key=_key)


def _key(item: Any) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in item.__dataclass_fields__:
        value = getattr(item, name)
        if hasattr(value, "version"):
            out.append((value.version, value))
        elif value is None:
            out.append((0,))
        else:
            out.append((1, value))
    return tuple(out)


@dataclass(frozen=True)
class Route:
    dst: Cidr
    kind: str  # "blackhole" | "unicast"
    gateway: BlockAddress | None = None
    dev: str | None = None
    onlink: bool = False

    def ip_args(self) -> str:
        """The arguments of `ip route replace`."""
        if self.kind == "blackhole":
            return f"blackhole {self.dst} proto {ROUTE_PROTOCOL}"
        onlink = " onlink" if self.onlink else ""
        return f"{self.dst} via {self.gateway} dev {self.dev}{onlink} proto {ROUTE_PROTOCOL}"


@dataclass(frozen=True)
class Neighbor:
    dev: str
    address: BlockAddress
    mac: str


@dataclass(frozen=True)
class FdbEntry:
    dev: str
    mac: str
    dst: BlockAddress


@dataclass(frozen=True)
class Tunnel:
    kind: str  # "vxlan" | "ipip"
    name: str
    local: BlockAddress
    parent: str
    mtu: int
    mac: str = ""  # VXLAN only
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT


@dataclass(frozen=True)
class PoolDataplane:
    routes: frozenset[Route] = frozenset()
    neighbors: frozenset[Neighbor] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()
    tunnels: tuple[Tunnel, ...] = ()
    nat_rules: tuple[str, ...] = ()  # the rules of NAT_CHAIN, as iptables-save prints them
    nat6_rules: tuple[str, ...] = ()  # the same for the IPv6 pools, as ip6tables-save prints them
    notes: tuple[str, ...] = field(default=())  # what could not be routed, and why
    uplink: str = "eth0"
    uplink_subnet6: Cidr | None = None  # where our IPv6 next hops' neighbour entries on the uplink live


def vtep_mac(node: str, salt: str = "vtep") -> str:
    """A stable, locally administered unicast MAC for a node's VXLAN device."""
    raw = bytearray(hashlib.sha256(f"{salt}:{node}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def vtep_mac6(node: str) -> str:
    """The MAC of a node's IPv6 VXLAN device (its own, as Calico's ipv6VXLANTunnelMACAddr)."""
    return vtep_mac(node, "vtep6")


def _pool_of(pools: list[IPPool], net: Cidr) -> IPPool | None:
    for pool in pools:
        if within(net, pool.cidr):
            return pool
    return None


@dataclass(frozen=True)
class Underlay:
    """One node as seen by one IP family: its address, subnet and VXLAN device (both None: no such family)."""

    address: BlockAddress | None
    subnet: Cidr | None
    vxlan_device: str
    vtep_mac: str

    def has(self, address: BlockAddress) -> bool:
        return self.subnet is not None and address.version == self.subnet.version and address in self.subnet


def underlay(node: NodeRecord, version: int) -> Underlay:
    if version == 4:
        return Underlay(node.address, node.subnet, VXLAN_DEVICE, node.vtep_mac)
    return Underlay(node.address6, node.subnet6, VXLAN6_DEVICE, node.vtep_mac6)


def encapsulate(pool: IPPool, local: NodeRecord, peer: NodeRecord) -> str:
    """ "none", "vxlan" or "ipip": how traffic for pool addresses on peer leaves local (each family over
    its own underlay: an IPv6 pool's CrossSubnet compares the nodes' IPv6 subnets)."""
    mode = pool.encap_mode
    if pool.encapsulation == "none" or mode == "Never":
        return "none"
    peer_address = underlay(peer, pool.cidr.version).address
    if (
        mode == "CrossSubnet"
        and peer_address is not None
        and underlay(local, pool.cidr.version).has(peer_address)
    ):
        return "none"
    return pool.encapsulation


def render(
    local: NodeRecord,
    nodes: dict[str, NodeRecord],
    blocks: list[Block],
    pools: list[IPPool],
    *,
    uplink: str = "eth0",
    uplink_mtu: int = 1500,
) -> PoolDataplane:
    routes: set[Route] = set()
    neighbors: set[Neighbor] = set()
    fdb: set[FdbEntry] = set()
    notes: list[str] = []
    tunnel_kinds: set[str] = set()

    def via(dst: Cidr, pool: IPPool, peer: NodeRecord) -> None:
        how = encapsulate(pool, local, peer)
        far = underlay(peer, dst.version)
        if far.address is None:
            notes.append(f"{dst}: node {peer.name} has no IPv{dst.version} address to route through")
            return
        if how == "none":
            # Within the subnet the peer is on-link (an IPv6 node has a /128, so onlink there too); across
            # subnets (pool without encapsulation) the route still names the peer, onlink, and works only
            # where the fabric knows pool addresses.
            onlink = dst.version == 6 or not underlay(local, 4).has(far.address)
            routes.add(Route(dst, "unicast", far.address, uplink, onlink=onlink))
            if dst.version == 6 and peer.uplink_mac and underlay(local, 6).has(far.address):
                neighbors.add(Neighbor(uplink, far.address, peer.uplink_mac))
        elif how == "vxlan":
            if not far.vtep_mac:
                notes.append(f"{dst}: node {peer.name} has no IPv{dst.version} VTEP MAC yet")
                return
            tunnel_kinds.add(far.vxlan_device)
            routes.add(Route(dst, "unicast", far.address, far.vxlan_device, onlink=True))
            neighbors.add(Neighbor(far.vxlan_device, far.address, far.vtep_mac))
            fdb.add(FdbEntry(far.vxlan_device, far.vtep_mac, far.address))
        else:
            tunnel_kinds.add("ipip")
            routes.add(Route(dst, "unicast", far.address, IPIP_DEVICE, onlink=True))

    for block in sorted(blocks, key=lambda b: (b.cidr.version, b.cidr)):
        pool = _pool_of(pools, block.cidr)
        if pool is None:
            notes.append(f"block {block.cidr}: in no pool (pool deleted?); not routed")
            continue
        owner = block.affinity
        if owner == local.name:
            routes.add(Route(block.cidr, "blackhole"))
        elif owner is not None and owner in nodes:
            via(block.cidr, pool, nodes[owner])
        # Addresses used on a node other than the block's (borrowed, or the owner is gone).
        for ordinal, allocation in sorted(block.allocations.items()):
            user = allocation.node
            if user == owner or user == local.name:
                continue  # the block route covers it, or the CNI's /32 to the local veth does
            if user not in nodes:
                continue  # its node is gone: nothing to route to
            via(ip_network(block.address(ordinal)), pool, nodes[user])

    tunnels: list[Tunnel] = []
    vxlan4 = any(p.encapsulation == "vxlan" and not p.disabled and p.cidr.version == 4 for p in pools)
    if VXLAN_DEVICE in tunnel_kinds or vxlan4:
        mac = local.vtep_mac or vtep_mac(local.name)
        tunnels.append(Tunnel("vxlan", VXLAN_DEVICE, local.address, uplink, uplink_mtu - VXLAN_OVERHEAD, mac))
    vxlan6 = any(p.encapsulation == "vxlan" and not p.disabled and p.cidr.version == 6 for p in pools)
    if local.address6 is not None and (VXLAN6_DEVICE in tunnel_kinds or vxlan6):
        mac = local.vtep_mac6 or vtep_mac6(local.name)
        mtu = uplink_mtu - VXLAN6_OVERHEAD
        tunnels.append(Tunnel("vxlan", VXLAN6_DEVICE, local.address6, uplink, mtu, mac))
    if "ipip" in tunnel_kinds or any(p.encapsulation == "ipip" and not p.disabled for p in pools):
        tunnels.append(Tunnel("ipip", IPIP_DEVICE, local.address, uplink, uplink_mtu - IPIP_OVERHEAD))

    return PoolDataplane(
        frozenset(routes),
        frozenset(neighbors),
        frozenset(fdb),
        tuple(tunnels),
        nat_rules=nat_rules(pools, 4),
        nat6_rules=nat_rules(pools, 6),
        notes=tuple(notes),
        uplink=uplink,
        uplink_subnet6=local.subnet6,
    )


def nat_rules(pools: list[IPPool], version: int = 4) -> tuple[str, ...]:
    """Masquerade from natOutgoing pools to destinations outside every pool (Calico's cali-nat-outgoing),
    for the pools of one IP version (iptables or ip6tables).
    A disabled pool still counts: disabling stops new allocations, while the pods that have its addresses
    keep running (and keep reaching the outside) until they are moved, as in Calico's masq set."""
    family = sorted((p for p in pools if p.cidr.version == version), key=lambda p: p.cidr)
    masq = [p for p in family if p.nat_outgoing]
    if not masq:
        return ()
    rules = [f"-A {NAT_CHAIN} -d {p.cidr} -j RETURN" for p in family]
    rules += [f"-A {NAT_CHAIN} -s {p.cidr} -j MASQUERADE" for p in masq]
    return tuple(rules)


def nat_jump() -> str:
    return f'-A POSTROUTING -m comment --comment "{NAT_JUMP_COMMENT}" -j {NAT_CHAIN}'


def render_nat_restore(rules: tuple[str, ...], jump_present: bool) -> str:
    """iptables-restore --noflush input: our chain declared (emptied) and refilled; the jump added once."""
    lines = ["*nat", f":{NAT_CHAIN} - [0:0]", *rules]
    if not jump_present:
        lines.append(nat_jump())
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_ip_batch(
    current_routes: set[Route], desired: PoolDataplane, current_neighbors: set[Neighbor]
) -> list[str]:
    """`ip -batch` lines that turn the current routes and neighbours (ours only) into the desired ones."""
    lines = []
    for route in ordered(current_routes - desired.routes):
        lines.append(f"route del {route.ip_args()}")
    for route in ordered(desired.routes - current_routes):
        lines.append(f"route replace {route.ip_args()}")
    for neigh in ordered(current_neighbors - desired.neighbors):
        lines.append(f"neigh del {neigh.address} dev {neigh.dev}")
    for neigh in ordered(desired.neighbors - current_neighbors):
        lines.append(f"neigh replace {neigh.address} lladdr {neigh.mac} dev {neigh.dev} nud permanent")
    return lines


def render_fdb_batch(current: set[FdbEntry], desired: PoolDataplane) -> list[str]:
    lines = [f"fdb del {e.mac} dev {e.dev} dst {e.dst}" for e in ordered(current - desired.fdb)]
    lines += [
        f"fdb replace {e.mac} dev {e.dev} dst {e.dst} self permanent" for e in ordered(desired.fdb - current)
    ]
    return lines
