"""The desired state of a node's policy data plane, independent of backend (iptables+ipset or nftables).

The calculation (vpcnet.dataplane.policy_calc) produces it from the datastore; the renderers turn it into
rule text. Everything is frozen and hashable so renders can be cached per object and unchanged parts
can be recognised by identity. Set members are canonical strings: "10.0.0.1/32", "10.0.0.0/8" for
hash:net and "10.0.0.1,tcp:80" for hash:ip,port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from vpcnet.dataplane import names
from vpcnet.dataplane.family import IpFamily

Action = Literal["allow", "deny", "pass", "log"]
Direction = Literal["ingress", "egress"]
SetKind = Literal["hash:net", "hash:ip,port"]
TierDefault = Literal["deny", "pass"]

# Mark bits, lowest first from Calico's default mask 0xffff0000: they coexist with the VPC CNI's
# connmark 0x80 and kube-proxy's 0xc000.
MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_SCRATCH = 0x40000
MARK_ALL = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH

PROTOCOL_NAMES = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "udplite": 136}
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite")


@dataclass(frozen=True, order=True)
class PortRange:
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= 65535:
            raise ValueError(f"port range {self.first}:{self.last} must satisfy 0 <= first <= last <= 65535")

    @staticmethod
    def single(port: int) -> PortRange:
        return PortRange(port, port)


@dataclass(frozen=True)
class IpSetSpec:
    name: str
    kind: SetKind
    members: frozenset[str]


@dataclass(frozen=True)
class PortMatch:
    """Numeric ports and named-port sets, OR-ed together (one EntityRule's ports list)."""

    ranges: tuple[PortRange, ...] = ()
    named_sets: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ranges or self.named_sets)


@dataclass(frozen=True)
class PolicyRule:
    """One rule: every part present must match (positive parts AND negated parts)."""

    action: Action
    protocol: str | None = None  # "tcp", "udp", "sctp", "icmp", "udplite" or a number as text
    not_protocol: str | None = None
    src_sets: tuple[str, ...] = ()  # hash:net sets the source must be in (each one; AND)
    not_src_sets: tuple[str, ...] = ()  # hash:net sets the source must not be in
    dst_sets: tuple[str, ...] = ()
    not_dst_sets: tuple[str, ...] = ()
    src_ports: PortMatch = field(default_factory=PortMatch)
    not_src_ports: PortMatch = field(default_factory=PortMatch)
    dst_ports: PortMatch = field(default_factory=PortMatch)
    not_dst_ports: PortMatch = field(default_factory=PortMatch)
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    # Where the rule came from: its index in the policy's spec.ingress / spec.egress (what `policy explain`
    # names); flow logs carry it. None: unknown (a rule made by hand).
    spec_index: int | None = None

    def __post_init__(self) -> None:
        for proto in (self.protocol, self.not_protocol):
            if proto is not None:
                protocol_number(proto)
        has_ports = any((self.src_ports, self.not_src_ports, self.dst_ports, self.not_dst_ports))
        if has_ports and (self.protocol or "").lower() not in PORT_PROTOCOLS:
            raise ValueError(f"ports need protocol tcp, udp, sctp or udplite, not {self.protocol!r}")
        has_icmp = self.icmp_type is not None or self.not_icmp_type is not None
        if has_icmp and (self.protocol or "").lower() != "icmp":
            raise ValueError(f"icmp type/code needs protocol icmp, not {self.protocol!r}")
        if (self.icmp_code is not None and self.icmp_type is None) or (
            self.not_icmp_code is not None and self.not_icmp_type is None
        ):
            raise ValueError("an icmp code needs an icmp type")


@dataclass(frozen=True)
class PolicyChainSpec:
    """The rules of one policy in one direction; rendered once, jumped to from every endpoint it selects."""

    policy_id: str  # e.g. "knp/default/allow-web", "np/default/x", "gnp/x"
    direction: Direction
    rules: tuple[PolicyRule, ...]

    @property
    def chain(self) -> str:
        return names.policy_chain(self.policy_id, self.direction)


@dataclass(frozen=True)
class TierPolicies:
    """The policies of one tier that select an endpoint in one direction, in evaluation order."""

    tier: str
    policy_ids: tuple[str, ...]
    default_action: TierDefault = "deny"


@dataclass(frozen=True)
class EndpointSpec:
    """A local pod's veth (host side), its addresses, and the ordered tiers for each direction.

    No tier in a direction means no policy selects the pod that way: allowed (the namespace profile).
    """

    iface: str
    addresses: tuple[str, ...]  # the pod's own addresses as /32 (/128) CIDRs; it may send from nothing else
    ingress: tuple[TierPolicies, ...] = ()
    egress: tuple[TierPolicies, ...] = ()

    def __post_init__(self) -> None:
        names.check_ifname(self.iface)
        for address in self.addresses:
            ipaddress.ip_network(address)  # of the state's family: checked where the layout uses them


FlowLogMode = Literal["off", "denied", "all"]
FLOW_LOG_MODES: tuple[FlowLogMode, ...] = ("off", "denied", "all")


@dataclass(frozen=True)
class FlowLogSpec:
    """Which verdict points send packets to the agent over NFLOG (vpcnet.dataplane.flow_points).

    denied: every policy Deny, end-of-tier drop and anti-spoofing drop, per packet (a denied attempt is
    always seen). all: those, and the first packet of every allowed connection (the policy chains only
    see a connection's first packet; conntrack accepts the rest), at most allow_rate per second per rule.
    """

    mode: FlowLogMode = "denied"
    group: int = 20  # the NFLOG group the agent listens on
    allow_rate: int = 100  # allowed-connection samples per second per verdict point (0: no limit)
    snaplen: int = 128  # bytes of each packet copied to the agent: the headers are enough

    def __post_init__(self) -> None:
        if self.mode not in FLOW_LOG_MODES:
            raise ValueError(f"flow log mode {self.mode!r} must be one of {list(FLOW_LOG_MODES)}")
        if not 0 <= self.group <= 65535:
            raise ValueError(f"flow log NFLOG group {self.group} must be within 0..65535")
        if self.allow_rate < 0:
            raise ValueError(f"flow log allow rate {self.allow_rate} must be 0 or more")
        if not 40 <= self.snaplen <= 65535:
            raise ValueError(f"flow log snaplen {self.snaplen} must be within 40..65535")

    @property
    def logs_denied(self) -> bool:
        return self.mode != "off"

    @property
    def logs_allowed(self) -> bool:
        return self.mode == "all"


@dataclass(frozen=True)
class DesiredState:
    interface_prefixes: tuple[str, ...]
    endpoints: Mapping[str, EndpointSpec]  # by iface
    policies: Mapping[tuple[str, Direction], PolicyChainSpec]  # by (policy id, direction)
    ipsets: Mapping[str, IpSetSpec]  # by kernel name
    family: IpFamily = IpFamily.V4  # addresses, sets and rules are all of this family
    flow_logs: FlowLogSpec | None = None  # None: no log actions at the verdict points

    def __post_init__(self) -> None:
        if not self.interface_prefixes:
            raise ValueError("at least one interface prefix is needed")
        for prefix in self.interface_prefixes:
            names.check_interface_prefix(prefix)


def protocol_number(protocol: str) -> int:
    lowered = protocol.lower()
    if lowered in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[lowered]
    if lowered.isdigit() and 1 <= int(lowered) <= 255:
        return int(lowered)
    raise ValueError(f"protocol {protocol!r} must be one of {sorted(PROTOCOL_NAMES)} or a number 1-255")


def canonical_nets(cidrs: Iterable[str]) -> frozenset[str]:
    """CIDRs (of either family) collapsed so no two overlap (nft interval sets refuse overlaps; ipset does not
    care), with a /0 given as its two /1 halves: an ipset hash:net refuses prefix length 0 ("the value of the
    CIDR parameter is invalid"), and an ipBlock of 0.0.0.0/0 or ::/0 is common."""
    by_version: dict[int, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {4: [], 6: []}
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        by_version[network.version].append(network)
    out: set[str] = set()
    for networks in by_version.values():
        for network in ipaddress.collapse_addresses(networks):  # type: ignore[type-var]
            halves = network.subnets(1) if network.prefixlen == 0 else (network,)
            out.update(str(half) for half in halves)
    return frozenset(out)
