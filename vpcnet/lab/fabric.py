"""The namespace fabric: the VPC's data plane, built from veths, bridges and a bridge-family nft table.

Layout (all inside the lab's namespaces, nothing in the host's):
- `{prefix}-vpc` is the VPC. One Linux bridge per subnet; the namespace itself is the VPC router and holds
  each subnet's gateway (.1) on that subnet's bridge, the control-plane addresses (EC2, etcd, IMDS) on lo, and
  a veth to `{prefix}-inet`, the internet (198.51.100.0/24).
- An attached ENI is a veth pair: the outer end is a port of its subnet's bridge, the inner end is created
  directly in the node's namespace as `eth<device index>` with the ENI's MAC (EC2's hot-plug).
- VPC semantics (see render_nft): a packet is delivered to a port only if its destination is an address or
  prefix of that ENI; with SourceDestCheck on, a packet entering from a port must come from one of its
  addresses. Ports have learning and flooding off and a static fdb entry for the ENI's MAC, and answer ARP by
  proxy (`proxy_arp on` on each port, a permanent neighbour entry on the bridge for every assigned address):
  the VPC answers ARP for assigned addresses with the owning ENI's MAC, even where the node has not configured
  the address (pod addresses), and never for unassigned ones. Those neighbour entries are also the router's
  next hops. (`neigh_suppress on` on the ports was tried first, with the same neighbour entries: on this
  kernel (6.18) the bridge then did not answer ARP for an assigned address the owning node had not configured,
  i.e. for pod addresses; its proxy is meant for EVPN uplinks. `proxy_arp on` does answer, and it also stops
  broadcasts from being flooded to the ports, as the VPC does not flood.)

Branch ENIs (security groups for pods). On EC2 a branch ENI's frames reach the instance over its trunk ENI's
wire with an 802.1Q tag (the branch's VLAN id); the VPC CNI splits them off with a `vlan.eth.<id>` VLAN
device on the trunk's interface and routes the pod through its own table (VLAN id + 100). This kernel has no
8021q module, so the lab carries the tag in the topology instead: each associated branch gets its own veth,
its outer end a port of its subnet's bridge like any ENI's (the branch's MAC, its own address set for
delivery and SourceDestCheck, its own security groups in `sgfabric`), its inner end in the trunk's node as
`vlan.eth.<VLAN id>`. What differs from EKS: the frames do not cross the trunk's interface (a capture on
the trunk shows no branch traffic, and the trunk's MTU does not bound them), and there is no tag to strip:
the device is an Ethernet link of its own, not a VLAN child of the trunk, so it has its own link state and
MAC rather than the parent's. What holds: the branch's identity (MAC, addresses) and groups are the VPC's
view of it, apart from the node's and the trunk's; the node (the CNI) still routes the pod through the
device and a table of its own.

Security groups are enforced beside the delivery rules, in the same nft transaction (`sgfabric`: stateful,
per ENI, both directions; its docstring says how).

`Fabric` implements the EC2 emulator's FabricHooks, so every API change is in the kernel before the API
answers. Rendering is pure (text for `ip -batch`, `bridge -batch`, `nft -f`); applying is a few execs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vpcnet.lab import fabric6, netns
from vpcnet.lab.ec2.model import Eni, Instance, SecurityGroup
from vpcnet.lab.layout import (
    EC2_ENDPOINT_ADDRESS,
    ETCD_ENDPOINT_ADDRESS,
    IMDS_ADDRESS,
    INTERNET_CIDR,
    KUBEAPI_ADDRESS,
    LabLayout,
)
from vpcnet.lab.sgfabric import BRIDGE_CALLS_IPTABLES, render_security_groups

ENI_MTU = 9001  # EC2's jumbo frames inside the VPC
INTERNET_MTU = 1500  # traffic that leaves the VPC is limited to 1500, as on EC2
NODE_TAG = "vpcnet:lab-node"  # instance tag naming the lab node (namespace) an instance is
INTERNET_ROUTER_ADDRESS = "198.51.100.1"  # the VPC router's side of the internet link
INTERNET_HOST_ADDRESS = "198.51.100.100"  # a host on the internet that tests ping and curl
VPC_INET_LINK = "inet0"  # in the VPC namespace; names inside lab namespaces need no prefix


def _short_hash(text: str, length: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()[:length]


def port_name(eni_id: str) -> str:
    """The ENI's bridge port in the VPC namespace: 15 characters, hashed (never truncated into collisions)."""
    return "e" + _short_hash(eni_id, 14)


def branch_ifname(vlan_id: int) -> str:
    """The node's device of a branch ENI: the name the VPC CNI gives the VLAN device on the trunk in EKS
    (`vlan.eth.<VLAN id>`), here a veth of its own (see the Branch ENIs note in the module docstring)."""
    return f"vlan.eth.{vlan_id}"


def bridge_name(subnet_id: str) -> str:
    return "br" + _short_hash(subnet_id, 12)


def router_mac(subnet_id: str) -> str:
    """A fixed MAC for the subnet's router: a bridge would otherwise take its lowest port's MAC and change
    it as ENIs come and go, leaving stale ARP entries for the gateway in the nodes."""
    h = _short_hash("router" + subnet_id, 10)
    return "06:" + ":".join(h[i : i + 2] for i in range(0, 10, 2))


@dataclass(frozen=True)
class SubnetWire:
    subnet_id: str
    cidr: str
    ipv6_cidr: str = ""  # the subnet's /64 when the VPC has IPv6 (see fabric6)

    @property
    def bridge(self) -> str:
        return bridge_name(self.subnet_id)

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.cidr).network_address + 1)

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen


@dataclass(frozen=True)
class EniWire:
    """What the fabric needs to know of an attached ENI."""

    eni_id: str
    mac: str
    subnet: SubnetWire
    node_netns: str
    device_index: int
    primary_ip: str
    addresses: tuple[str, ...]  # primary first, then secondaries
    prefixes: tuple[str, ...]  # /28 blocks
    source_dest_check: bool
    ipv6_addresses: tuple[str, ...] = ()
    ipv6_prefixes: tuple[str, ...] = ()  # /80 blocks
    security_groups: tuple[str, ...] = ()
    vlan_id: int = 0  # a branch ENI's VLAN id on its trunk; 0 for an attached ENI

    @property
    def port(self) -> str:
        return port_name(self.eni_id)

    @property
    def ifname(self) -> str:
        """eth<device index> for an attached ENI; for a branch, EKS's name of its VLAN device."""
        return branch_ifname(self.vlan_id) if self.vlan_id else f"eth{self.device_index}"

    def owned_hosts(self) -> list[str]:
        """Every address the VPC delivers to this ENI: its addresses and each address of its prefixes."""
        hosts = list(self.addresses)
        for p in self.prefixes:
            hosts += [str(a) for a in ipaddress.ip_network(p)]
        return hosts


# ------------------------------------------------------------------ pure rendering


def render_vpc_base(layout: LabLayout) -> list[str]:
    """`ip -batch` lines for the VPC namespace before any subnet: router, control plane, internet link."""
    inet_len = ipaddress.ip_network(INTERNET_CIDR).prefixlen
    return [
        "link set lo up",
        f"address add {EC2_ENDPOINT_ADDRESS}/32 dev lo",
        f"address add {ETCD_ENDPOINT_ADDRESS}/32 dev lo",
        f"address add {KUBEAPI_ADDRESS}/32 dev lo",
        f"address add {IMDS_ADDRESS}/32 dev lo",
        f"link add {VPC_INET_LINK} mtu {INTERNET_MTU} type veth peer name eth0 netns {layout.internet_netns}",
        f"address add {INTERNET_ROUTER_ADDRESS}/{inet_len} dev {VPC_INET_LINK}",
        f"link set {VPC_INET_LINK} up",
        # Everything outside the VPC is "the internet".
        f"route add default via {INTERNET_HOST_ADDRESS} dev {VPC_INET_LINK} onlink",
    ]


def render_internet(vpc_cidr: str) -> list[str]:
    """`ip -batch` lines for the internet namespace: one host that routes the VPC back to the router."""
    inet_len = ipaddress.ip_network(INTERNET_CIDR).prefixlen
    return [
        "link set lo up",
        f"address add {INTERNET_HOST_ADDRESS}/{inet_len} dev eth0",
        "link set eth0 up",
        f"route add {vpc_cidr} via {INTERNET_ROUTER_ADDRESS} dev eth0",
    ]


def render_subnet(subnet: SubnetWire) -> list[str]:
    return [
        f"link add {subnet.bridge} address {router_mac(subnet.subnet_id)} type bridge"
        " stp_state 0 mcast_snooping 0",
        f"link set {subnet.bridge} alias {subnet.subnet_id}",
        f"address add {subnet.gateway}/{subnet.prefix_len} dev {subnet.bridge}",
        f"link set {subnet.bridge} up",
        *(fabric6.render_subnet6(subnet.bridge, subnet.ipv6_cidr) if subnet.ipv6_cidr else []),
    ]


def render_port(eni: EniWire) -> tuple[list[str], list[str]]:
    """(`ip -batch` lines, `bridge -batch` lines) in the VPC namespace that plug an ENI in."""
    ip_lines = [
        f"link add {eni.port} mtu {ENI_MTU} type veth peer name {eni.ifname} address {eni.mac}"
        f" mtu {ENI_MTU} netns {eni.node_netns}",
        f"link set {eni.port} alias {eni.eni_id}",
        f"link set {eni.port} master {eni.subnet.bridge}",
        f"link set {eni.port} type bridge_slave learning off flood off mcast_flood off bcast_flood off"
        " proxy_arp on",
        f"link set {eni.port} up",
    ]
    bridge_lines = [f"fdb replace {eni.mac} dev {eni.port} master static"]
    return ip_lines, bridge_lines


def render_neighbours(eni: EniWire, hosts: Iterable[str], *, remove: bool = False) -> list[str]:
    if remove:
        return [f"neigh del {h} dev {eni.subnet.bridge}" for h in hosts]
    return [f"neigh replace {h} lladdr {eni.mac} dev {eni.subnet.bridge} nud permanent" for h in hosts]


def render_primary_config(eni: EniWire) -> list[str]:
    """The node's eth0, as an EC2 instance boots it: primary address, up, default route via the router.
    Secondary ENIs are left as hot-plugged (down, no address): the node agent configures them, as on EC2."""
    return [
        "link set lo up",
        f"address add {eni.primary_ip}/{eni.subnet.prefix_len} dev {eni.ifname}",
        f"link set {eni.ifname} up",
        f"route replace default via {eni.subnet.gateway} dev {eni.ifname}",
        *(fabric6.render_primary_config6(eni.ifname, eni.ipv6_addresses[0]) if eni.ipv6_addresses else []),
    ]


def set_name(port: str) -> str:
    return f"a_{port}"


def render_nft(table: str, enis: Iterable[EniWire]) -> str:
    """The whole bridge-family table, replaced in one transaction (so a partial ruleset never exists)."""
    enis = sorted(enis, key=lambda e: e.port)
    lines = [
        f"table bridge {table} {{}}",
        f"delete table bridge {table}",
        f"table bridge {table} {{",
    ]
    for eni in enis:
        elements = ", ".join([*eni.addresses, *eni.prefixes])
        lines.append(f"  set {set_name(eni.port)} {{")
        lines.append("    type ipv4_addr; flags interval; auto-merge;")
        if elements:
            lines.append(f"    elements = {{ {elements} }}")
        lines.append("  }")
        lines += fabric6.render_sets6(eni.port, [*eni.ipv6_addresses, *eni.ipv6_prefixes])
    # Source/dest check on the way in: covers bridged and routed traffic (prerouting sees both).
    lines.append("  chain ingress {")
    lines.append("    type filter hook prerouting priority filter; policy accept;")
    lines.append("    ether type != { ip, arp, ip6 } drop")
    for eni in enis:
        if eni.source_dest_check:
            lines.append(f'    iifname "{eni.port}" ip saddr != @{set_name(eni.port)} drop')
            lines.append(fabric6.ingress_rule6(eni.port))
    lines.append("  }")
    # Delivery: only to the ENI that owns the destination, whether bridged (forward) or routed (output);
    # with SourceDestCheck off an ENI also takes traffic for other addresses (as on EC2: Calico, NAT).
    for chain, hook in (("deliver_bridged", "forward"), ("deliver_routed", "output")):
        lines.append(f"  chain {chain} {{")
        lines.append(f"    type filter hook {hook} priority filter; policy accept;")
        if hook == "output":
            lines.append(fabric6.REDIRECT_DROP)
        for eni in enis:
            if eni.source_dest_check:
                lines.append(f'    oifname "{eni.port}" ip daddr != @{set_name(eni.port)} drop')
                lines.append(fabric6.delivery_rule6(eni.port))
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _eni6_lines(eni: EniWire, *, remove: bool = False) -> list[str]:
    """The VPC's IPv6 entries for an ENI (proxy ND, neighbours, /80 routes); none for an IPv4-only ENI."""
    if not (eni.ipv6_addresses or eni.ipv6_prefixes):
        return []
    bridge = eni.subnet.bridge
    lines = fabric6.render_eni6(bridge, eni.mac, eni.ipv6_addresses, eni.ipv6_prefixes, remove=remove)
    if remove and eni.ipv6_prefixes:
        lines += fabric6.render_hop_removal(bridge, eni.mac)
    return lines


def _eni6_change_lines(old: EniWire, new: EniWire) -> list[str]:
    gone_addresses = sorted(set(old.ipv6_addresses) - set(new.ipv6_addresses))
    gone_prefixes = sorted(set(old.ipv6_prefixes) - set(new.ipv6_prefixes))
    bridge = new.subnet.bridge
    lines = fabric6.render_eni6(bridge, old.mac, gone_addresses, gone_prefixes, remove=True)
    return lines + _eni6_lines(new)


# ------------------------------------------------------------------ applying


@dataclass
class _State:
    subnets: dict[str, SubnetWire] = field(default_factory=dict)  # subnet id -> wire (bridge exists)
    enis: dict[str, EniWire] = field(default_factory=dict)  # eni id -> plugged ENI


class FabricError(RuntimeError):
    pass


class Fabric:
    """Keeps the kernel in step with the cloud's ENIs. Thread-safe; the Cloud calls it under its own lock."""

    def __init__(self, layout: LabLayout, subnet_cidr: Callable[[str], str] | None = None) -> None:
        self.layout = layout
        self._subnet_cidr = subnet_cidr
        self._subnet_ipv6_cidr: Callable[[str], str] = lambda _sid: ""
        self._state = _State()
        self._lock = threading.RLock()
        self._nft: netns.Nft | None = None  # opened on first use, inside the VPC namespace
        self._groups: dict[str, SecurityGroup] = {}  # enforced by `sgfabric` with the ENIs' ports

    @property
    def nft_table(self) -> str:
        return self.layout.prefix

    def set_subnet_lookup(self, subnet_cidr: Callable[[str], str]) -> None:
        self._subnet_cidr = subnet_cidr

    def set_subnet6_lookup(self, subnet_ipv6_cidr: Callable[[str], str]) -> None:
        """The subnet's IPv6 /64 ("" for none), for a VPC with IPv6."""
        self._subnet_ipv6_cidr = subnet_ipv6_cidr

    # ---- the base: namespaces, router, internet

    def create_base(self, vpc_cidr: str, node_names: Iterable[str], vpc_ipv6_cidr: str | None = None) -> None:
        """Make the namespaces and the router (idempotent: an existing namespace is kept as it is);
        `vpc_ipv6_cidr` adds IPv6 routing, proxy ND and the egress-only internet gateway (see fabric6)."""
        layout = self.layout
        wanted = [layout.vpc_netns, layout.internet_netns] + [layout.node_netns(n) for n in node_names]
        missing = [n for n in wanted if not netns.netns_exists(n)]
        netns.ip_batch([f"netns add {n}" for n in missing])
        if layout.vpc_netns in missing:
            netns.ip_batch(render_vpc_base(layout), layout.vpc_netns)
            netns.write_sysctl(layout.vpc_netns, "net.ipv4.ip_forward", "1")
            netns.write_sysctl(layout.vpc_netns, "net.ipv4.conf.all.send_redirects", "0")
            netns.write_sysctl(layout.vpc_netns, BRIDGE_CALLS_IPTABLES, "1")
        if layout.internet_netns in missing or layout.vpc_netns in missing:
            netns.ip_batch(render_internet(vpc_cidr), layout.internet_netns)
        if vpc_ipv6_cidr and layout.vpc_netns in missing:
            self._create_base6(vpc_ipv6_cidr)
        for n in node_names:
            if layout.node_netns(n) in missing:
                netns.ip_batch(["link set lo up"], layout.node_netns(n))
        self._apply_nft()

    def _create_base6(self, vpc_ipv6_cidr: str) -> None:
        layout = self.layout
        for key, value in fabric6.vpc_sysctls():
            netns.write_sysctl(layout.vpc_netns, key, value)
        netns.ip_batch(fabric6.render_vpc_base6(VPC_INET_LINK), layout.vpc_netns)
        netns.ip_batch(fabric6.render_internet6(vpc_ipv6_cidr), layout.internet_netns)
        if self._nft is None:
            self._nft = netns.Nft(layout.vpc_netns)
        self._nft.apply(fabric6.render_egress_only_gateway(self.nft_table, VPC_INET_LINK))

    # ---- subnets and ENIs

    def _subnet(self, subnet_id: str) -> tuple[SubnetWire, list[str]]:
        """The subnet's wire, and the batch lines that make its bridge if it does not exist yet."""
        known = self._state.subnets.get(subnet_id)
        if known is not None:
            return known, []
        if self._subnet_cidr is None:
            raise FabricError(f"the fabric does not know subnet {subnet_id}")
        wire = SubnetWire(subnet_id, self._subnet_cidr(subnet_id), self._subnet_ipv6_cidr(subnet_id))
        return wire, render_subnet(wire)

    def plug(self, eni: EniWire, bridge_lines_first: list[str] | None = None) -> None:
        """Plug an attached ENI in: port, fdb, neighbours, eth<N> in the node (eth0 configured), nft."""
        with self._lock:
            if eni.eni_id in self._state.enis:
                self.update(eni)
                return
            subnet_lines = bridge_lines_first or []
            ip_lines, bridge_lines = render_port(eni)
            vpc = self.layout.vpc_netns
            try:
                netns.ip_batch(
                    subnet_lines + ip_lines + render_neighbours(eni, eni.owned_hosts()) + _eni6_lines(eni),
                    vpc,
                )
                netns.bridge_batch(bridge_lines, vpc)
                if subnet_lines and eni.subnet.ipv6_cidr:
                    for key, value in fabric6.bridge_sysctls(eni.subnet.bridge):
                        netns.write_sysctl(vpc, key, value)
                if eni.device_index == 0:
                    netns.ip_batch(render_primary_config(eni), eni.node_netns)
                self._state.subnets[eni.subnet.subnet_id] = eni.subnet
                self._state.enis[eni.eni_id] = eni
                self._apply_nft()
            except Exception:
                self._state.enis.pop(eni.eni_id, None)
                netns.ip_batch([f"link del {eni.port}"], vpc, force=True)
                raise

    def update(self, eni: EniWire) -> None:
        """Addresses, prefixes or SourceDestCheck of a plugged ENI changed."""
        with self._lock:
            old = self._state.enis.get(eni.eni_id)
            if old is None:
                return
            before, after = set(old.owned_hosts()), set(eni.owned_hosts())
            lines = render_neighbours(old, sorted(before - after), remove=True)
            lines += render_neighbours(eni, sorted(after - before))
            lines += _eni6_change_lines(old, eni)
            self._state.enis[eni.eni_id] = eni
            try:
                netns.ip_batch(lines, self.layout.vpc_netns)
                self._apply_nft()
            except Exception:
                self._state.enis[eni.eni_id] = old
                raise

    def unplug(self, eni_id: str) -> None:
        with self._lock:
            eni = self._state.enis.pop(eni_id, None)
            if eni is None:
                return
            # Deleting one end of a veth deletes both: eth<N> disappears from the node (EC2's hot-unplug).
            lines = [
                *render_neighbours(eni, eni.owned_hosts(), remove=True),
                *_eni6_lines(eni, remove=True),
                f"link del {eni.port}",
            ]
            netns.ip_batch(lines, self.layout.vpc_netns, force=True)
            self._apply_nft()

    def plugged(self) -> dict[str, EniWire]:
        with self._lock:
            return dict(self._state.enis)

    def _apply_nft(self) -> None:
        if self._nft is None:
            self._nft = netns.Nft(self.layout.vpc_netns)
        enis = self._state.enis.values()
        groups = render_security_groups(self.nft_table, enis, self._groups)
        self._nft.apply(render_nft(self.nft_table, enis) + groups)

    def close(self) -> None:
        """Release the nft context (and its thread in the VPC namespace)."""
        with self._lock:
            if self._nft is not None:
                self._nft.close()
                self._nft = None

    # ---- FabricHooks (the EC2 emulator calls these before an action answers)

    def _wire(self, eni: Eni, node_netns: str, vlan_id: int = 0) -> tuple[EniWire, list[str]]:
        """The wire of an attached ENI, or with `vlan_id` of an associated branch ENI."""
        subnet, lines = self._subnet(eni.subnet_id)
        if eni.attachment is None and not vlan_id:
            raise FabricError(f"{eni.id} is not attached")
        wire = EniWire(
            eni_id=eni.id,
            mac=eni.mac,
            subnet=subnet,
            node_netns=node_netns,
            device_index=eni.attachment.device_index if eni.attachment is not None else -1,
            primary_ip=eni.primary_ip,
            addresses=tuple(eni.private_ips),
            prefixes=tuple(eni.prefixes),
            source_dest_check=eni.source_dest_check,
            ipv6_addresses=tuple(eni.ipv6_addresses),
            ipv6_prefixes=tuple(eni.ipv6_prefixes),
            security_groups=tuple(eni.security_group_ids),
            vlan_id=vlan_id,
        )
        return wire, lines

    def node_netns_of(self, instance: Instance) -> str:
        node = instance.tags.get(NODE_TAG)
        if not node:
            raise FabricError(f"instance {instance.id} has no {NODE_TAG} tag: it is not a lab node")
        name = self.layout.node_netns(node)
        if not netns.netns_exists(name):
            raise FabricError(f"instance {instance.id}: its node namespace {name} does not exist")
        return name

    def eni_attached(self, eni: Eni, instance: Instance) -> None:
        with self._lock:
            wire, lines = self._wire(eni, self.node_netns_of(instance))
            self.plug(wire, lines)

    def eni_detached(self, eni: Eni, instance_id: str) -> None:
        self.unplug(eni.id)

    def eni_changed(self, eni: Eni) -> None:
        with self._lock:
            old = self._state.enis.get(eni.id)
            if old is None or (eni.attachment is None and not old.vlan_id):
                return
            wire, _ = self._wire(eni, old.node_netns, old.vlan_id)
            self.update(wire)

    def branch_associated(self, branch: Eni, trunk: Eni, instance: Instance) -> None:
        """A branch ENI reaches the trunk's node as its own port and `vlan.eth.<VLAN id>` there."""
        assoc = branch.trunk_association
        if assoc is None:
            raise FabricError(f"{branch.id} has no trunk association")
        with self._lock:
            wire, lines = self._wire(branch, self.node_netns_of(instance), assoc.vlan_id)
            self.plug(wire, lines)

    def branch_disassociated(self, branch: Eni) -> None:
        self.unplug(branch.id)

    def eni_deleted(self, eni: Eni) -> None:
        self.unplug(eni.id)

    def security_groups_changed(self, groups: list[SecurityGroup]) -> None:
        with self._lock:
            old, self._groups = self._groups, {g.id: g for g in groups}
            try:
                self._apply_nft()
            except Exception:
                self._groups = old
                raise

    def reconcile_cloud(
        self, enis: Iterable[Eni], instances: Iterable[Instance], groups: Iterable[SecurityGroup] = ()
    ) -> None:
        """Reconcile from the cloud's state (lab daemon start)."""
        by_id = {i.id: i for i in instances}
        enis = list(enis)
        trunks = {e.id: e for e in enis if e.interface_type == "trunk"}
        wires = []
        with self._lock:
            self._groups = {g.id: g for g in groups}
            for eni in enis:
                # A branch is where its trunk is attached; any other ENI where it is attached itself.
                assoc = eni.trunk_association
                carrier = trunks.get(assoc.trunk_eni_id) if assoc is not None else eni
                att = carrier.attachment if carrier is not None else None
                if att is None or att.instance_id not in by_id:
                    continue
                inst = by_id[att.instance_id]
                if inst.state != "running":
                    continue
                wire, _ = self._wire(eni, self.node_netns_of(inst), assoc.vlan_id if assoc else 0)
                wires.append(wire)
            self.reconcile(wires)

    # ---- reconcile (daemon start): make the kernel match a list of attached ENIs

    def reconcile(self, enis: Iterable[EniWire]) -> None:
        """Plug what is missing, unplug ports nobody owns, rewrite neighbours and the nft table."""
        with self._lock:
            vpc = self.layout.vpc_netns
            links = json.loads(netns.ip_json(["link", "show"], vpc) or "[]")
            existing_ports = {lk["ifname"] for lk in links if lk["ifname"].startswith("e")}
            existing_bridges = {lk["ifname"] for lk in links if lk["ifname"].startswith("br")}
            wanted = {e.eni_id: e for e in enis}
            for port in existing_ports - {e.port for e in wanted.values()}:
                netns.ip_batch([f"link del {port}"], vpc, force=True)
            # Neighbour entries are rewritten from the state: drop the old ones first.
            netns.ip_batch([f"neigh flush dev {b} nud permanent" for b in sorted(existing_bridges)], vpc)
            self._state = _State()
            for eni in wanted.values():
                sub = eni.subnet
                if sub.bridge in existing_bridges:
                    self._state.subnets[sub.subnet_id] = sub
                if eni.port in existing_ports:
                    netns.ip_batch(render_neighbours(eni, eni.owned_hosts()) + _eni6_lines(eni), vpc)
                    self._state.enis[eni.eni_id] = eni
                else:
                    lines = [] if sub.subnet_id in self._state.subnets else render_subnet(sub)
                    self.plug(eni, lines)
            self._apply_nft()
