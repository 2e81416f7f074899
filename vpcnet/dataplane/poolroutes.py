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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from vpcnet.api.ippool import IPPool
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.node_record import NodeRecord

VXLAN_DEVICE = "vxlan.calico"
VXLAN_VNI = 4096
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
IPIP_DEVICE = "tunl0"
IPIP_OVERHEAD = 20
NAT_CHAIN = "vpcn-nat-outgoing"
NAT_JUMP_COMMENT = "vpcnet pools natOutgoing"
# Routes we own carry this protocol number, so that applying never touches anyone else's routes.
ROUTE_PROTOCOL = 86


@dataclass(frozen=True, order=True)
class Route:
    dst: IPv4Network
    kind: str  # "blackhole" | "unicast"
    gateway: IPv4Address | None = None
    dev: str | None = None
    onlink: bool = False

    def ip_args(self) -> str:
        """The arguments of `ip route replace`."""
        if self.kind == "blackhole":
            return f"blackhole {self.dst} proto {ROUTE_PROTOCOL}"
        onlink = " onlink" if self.onlink else ""
        return f"{self.dst} via {self.gateway} dev {self.dev}{onlink} proto {ROUTE_PROTOCOL}"


@dataclass(frozen=True, order=True)
class Neighbor:
    dev: str
    address: IPv4Address
    mac: str


@dataclass(frozen=True, order=True)
class FdbEntry:
    dev: str
    mac: str
    dst: IPv4Address


@dataclass(frozen=True)
class Tunnel:
    kind: str  # "vxlan" | "ipip"
    name: str
    local: IPv4Address
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
    notes: tuple[str, ...] = field(default=())  # what could not be routed, and why


def vtep_mac(node: str) -> str:
    """A stable, locally administered unicast MAC for a node's VXLAN device."""
    raw = bytearray(hashlib.sha256(f"vtep:{node}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _pool_of(pools: list[IPPool], net: IPv4Network) -> IPPool | None:
    for pool in pools:
        if net.subnet_of(pool.cidr):
            return pool
    return None


def encapsulate(pool: IPPool, local: NodeRecord, peer: NodeRecord) -> str:
    """ "none", "vxlan" or "ipip": how traffic for pool addresses on peer leaves local."""
    mode = pool.encap_mode
    if pool.encapsulation == "none" or mode == "Never":
        return "none"
    if mode == "CrossSubnet" and peer.address in local.subnet:
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

    def via(dst: IPv4Network, pool: IPPool, peer: NodeRecord) -> None:
        how = encapsulate(pool, local, peer)
        if how == "none":
            # Within the subnet the peer is on-link; across subnets (pool without encapsulation) the
            # route still names the peer, onlink, and works only where the fabric knows pool addresses.
            routes.add(Route(dst, "unicast", peer.address, uplink, onlink=peer.address not in local.subnet))
        elif how == "vxlan":
            if not peer.vtep_mac:
                notes.append(f"{dst}: node {peer.name} has no VTEP MAC yet")
                return
            tunnel_kinds.add("vxlan")
            routes.add(Route(dst, "unicast", peer.address, VXLAN_DEVICE, onlink=True))
            neighbors.add(Neighbor(VXLAN_DEVICE, peer.address, peer.vtep_mac))
            fdb.add(FdbEntry(VXLAN_DEVICE, peer.vtep_mac, peer.address))
        else:
            tunnel_kinds.add("ipip")
            routes.add(Route(dst, "unicast", peer.address, IPIP_DEVICE, onlink=True))

    for block in sorted(blocks, key=lambda b: b.cidr):
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
            via(IPv4Network(block.address(ordinal)), pool, nodes[user])

    tunnels: list[Tunnel] = []
    if "vxlan" in tunnel_kinds or any(p.encapsulation == "vxlan" and not p.disabled for p in pools):
        mac = local.vtep_mac or vtep_mac(local.name)
        tunnels.append(Tunnel("vxlan", VXLAN_DEVICE, local.address, uplink, uplink_mtu - VXLAN_OVERHEAD, mac))
    if "ipip" in tunnel_kinds or any(p.encapsulation == "ipip" and not p.disabled for p in pools):
        tunnels.append(Tunnel("ipip", IPIP_DEVICE, local.address, uplink, uplink_mtu - IPIP_OVERHEAD))

    return PoolDataplane(
        frozenset(routes),
        frozenset(neighbors),
        frozenset(fdb),
        tuple(tunnels),
        nat_rules(pools),
        tuple(notes),
    )


def nat_rules(pools: list[IPPool]) -> tuple[str, ...]:
    """Masquerade from natOutgoing pools to destinations outside every pool (Calico's cali-nat-outgoing).
    A disabled pool still counts: disabling stops new allocations, while the pods that have its addresses
    keep running (and keep reaching the outside) until they are moved, as in Calico's masq set."""
    masq = [p for p in pools if p.nat_outgoing]
    if not masq:
        return ()
    rules = [f"-A {NAT_CHAIN} -d {p.cidr} -j RETURN" for p in sorted(pools, key=lambda p: p.cidr)]
    rules += [f"-A {NAT_CHAIN} -s {p.cidr} -j MASQUERADE" for p in sorted(masq, key=lambda p: p.cidr)]
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
    for route in sorted(current_routes - desired.routes):
        lines.append(f"route del {route.ip_args()}")
    for route in sorted(desired.routes - current_routes):
        lines.append(f"route replace {route.ip_args()}")
    for neigh in sorted(current_neighbors - desired.neighbors):
        lines.append(f"neigh del {neigh.address} dev {neigh.dev}")
    for neigh in sorted(desired.neighbors - current_neighbors):
        lines.append(f"neigh replace {neigh.address} lladdr {neigh.mac} dev {neigh.dev} nud permanent")
    return lines


def render_fdb_batch(current: set[FdbEntry], desired: PoolDataplane) -> list[str]:
    lines = [f"fdb del {e.mac} dev {e.dev} dst {e.dst}" for e in sorted(current - desired.fdb)]
    lines += [
        f"fdb replace {e.mac} dev {e.dev} dst {e.dst} self permanent" for e in sorted(desired.fdb - current)
    ]
    return lines
