"""The rule scanner (felix's calc/rule_scanner.go): a policy's rules in data plane terms.

`scan_policy` turns a compiled policy into one PolicyChainSpec per direction it has and the sets its
rules use: a `SelectorSet` per selector/notSelector (members: the matching pods' /32s and network sets'
CIDRs), a `CidrSet` per nets/notNets list, a `NamedPortSet` per named port (members ip,proto:port).
Each set is named from its content and family, so two rules (or two policies) using the same one share it.
A scan is for one address family (the data plane's): a rule that can only match the other family's packets
(ipVersion, ICMP of the other family, nets of the other family only) is left out, and CIDRs of the other
family are dropped from a rule that has some of its own.
Pure: which endpoints are members is the business of vpcnet.dataplane.calc.ipsets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vpcnet.api.selector import Selector
from vpcnet.dataplane import names
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_state import (
    Direction,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    canonical_nets,
)
from vpcnet.policy import model
from vpcnet.policy.model import EndpointMatch, NamedPort, Policy, Rule

DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
MODEL_DIRECTION = {"ingress": model.Direction.INGRESS, "egress": model.Direction.EGRESS}
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 136: "udplite"}
ICMP_NUMBER = {IpFamily.V4: 1, IpFamily.V6: 58}  # the protocol a data plane's "icmp" means
PORT_PROTOCOL_TEXT = {6: "TCP", 17: "UDP", 132: "SCTP"}  # protocols whose container ports have names


@dataclass(frozen=True)
class SelectorSet:
    name: str
    selector: Selector


@dataclass(frozen=True)
class CidrSet:
    name: str
    members: frozenset[str]


@dataclass(frozen=True)
class NamedPortSet:
    name: str
    selector: Selector | None  # None: every pod
    protocol: int  # a key of PORT_PROTOCOL_TEXT
    port: str


SetRequest = SelectorSet | CidrSet | NamedPortSet


@dataclass(frozen=True)
class ScannedPolicy:
    chains: dict[Direction, PolicyChainSpec]
    sets: tuple[SetRequest, ...]  # each once, in first-use order


def selector_set(selector: Selector, family: IpFamily = IpFamily.V4) -> SelectorSet:
    return SelectorSet(names.ipset_name("s", selector.canonical, family), selector)


def cidr_set(cidrs: Iterable[str], family: IpFamily = IpFamily.V4) -> CidrSet:
    members = canonical_nets(cidrs)
    return CidrSet(names.ipset_name("n", ",".join(sorted(members)), family), frozenset(members))


def named_port_set(
    selector: Selector | None, protocol: int, port: str, family: IpFamily = IpFamily.V4
) -> NamedPortSet:
    key = f"{selector.canonical if selector else '*'},{protocol},{port}"
    return NamedPortSet(names.ipset_name("p", key, family), selector, protocol, port)


def scan_policy(policy: Policy, family: IpFamily = IpFamily.V4) -> ScannedPolicy:
    used: dict[str, SetRequest] = {}
    chains: dict[Direction, PolicyChainSpec] = {}
    for d in DIRECTIONS:
        if MODEL_DIRECTION[d] not in policy.types:
            continue
        direction = MODEL_DIRECTION[d]
        translated = (
            translate_rule(rule, used, policy.spec_rule_index(direction, index), family)
            for index, rule in enumerate(policy.rules(direction))
        )
        rules = [r for r in translated if r]
        chains[d] = PolicyChainSpec(policy.id, d, tuple(rules))
    return ScannedPolicy(chains, tuple(used.values()))


def translate_rule(
    rule: Rule, used: dict[str, SetRequest], spec_index: int | None = None, family: IpFamily = IpFamily.V4
) -> PolicyRule | None:
    """The model's rule in data plane terms for packets of family, adding the sets it uses to used; None if
    it can never match such a packet (the other ipVersion, the other family's ICMP, nets of the other family
    only, or a named port without a protocol)."""
    if rule.ip_version is not None and rule.ip_version != family.value:
        return None
    if rule.protocol in ICMP_NUMBER.values() and rule.protocol != ICMP_NUMBER[family]:
        return None  # ICMPv6 never matches IPv4, nor ICMP IPv6
    mine: dict[str, SetRequest] = {}
    src = _side(rule.source, rule.protocol, mine, family)
    dst = _side(rule.destination, rule.protocol, mine, family)
    if src is None or dst is None:
        return None
    protocol = family_protocol_text(rule.protocol, family)
    used.update((k, v) for k, v in mine.items() if k not in used)
    icmp = rule.icmp if protocol == "icmp" else None
    not_icmp = rule.not_icmp if protocol == "icmp" else None
    return PolicyRule(
        action=rule.action.value.lower(),  # type: ignore[arg-type]
        protocol=protocol,
        not_protocol=family_protocol_text(rule.not_protocol, family),
        src_sets=src[0],
        not_src_sets=src[1],
        dst_sets=dst[0],
        not_dst_sets=dst[1],
        src_ports=src[2],
        not_src_ports=src[3],
        dst_ports=dst[2],
        not_dst_ports=dst[3],
        icmp_type=icmp.type if icmp else None,
        icmp_code=icmp.code if icmp and icmp.type is not None else None,
        not_icmp_type=not_icmp.type if not_icmp else None,
        not_icmp_code=not_icmp.code if not_icmp and not_icmp.type is not None else None,
        spec_index=spec_index,
    )


def _use(request: SetRequest, used: dict[str, SetRequest]) -> str:
    used.setdefault(request.name, request)
    return request.name


def _side(
    match: EndpointMatch, protocol: int | None, used: dict[str, SetRequest], family: IpFamily
) -> tuple[tuple[str, ...], tuple[str, ...], PortMatch, PortMatch] | None:
    pos: list[str] = []
    neg: list[str] = []
    if match.selector is not None:
        pos.append(_use(selector_set(match.selector, family), used))
    if match.not_selector is not None:
        neg.append(_use(selector_set(match.not_selector, family), used))
    nets = [str(n) for n in match.nets if n.version == family.value]
    if match.nets and not nets:
        return None
    if nets:
        pos.append(_use(cidr_set(nets, family), used))
    not_nets = [str(n) for n in match.not_nets if n.version == family.value]
    if not_nets:
        neg.append(_use(cidr_set(not_nets, family), used))
    ports = _ports(match.ports, match.selector, protocol, used, family)
    not_ports = _ports(match.not_ports, match.selector, protocol, used, family)
    if ports is None or not_ports is None:
        return None
    return tuple(pos), tuple(neg), ports, not_ports


def _ports(
    ports: Iterable[model.PortMatch],
    selector: Selector | None,
    protocol: int | None,
    used: dict[str, SetRequest],
    family: IpFamily,
) -> PortMatch | None:
    ranges: list[PortRange] = []
    named: list[str] = []
    for port in ports:
        if isinstance(port, NamedPort):
            if protocol not in PORT_PROTOCOL_TEXT:
                return None
            named.append(_use(named_port_set(selector, protocol, port.name, family), used))
        else:
            ranges.append(PortRange(port.first, port.last))
    return PortMatch(tuple(sorted(set(ranges))), tuple(sorted(set(named))))


def family_protocol_text(number: int | None, family: IpFamily) -> str | None:
    """The protocol as a data plane of family names it: "icmp" is that family's ICMP; the other family's
    ICMP stays a number (a data plane's "icmp" would mean its own)."""
    if number in ICMP_NUMBER.values():
        return "icmp" if number == ICMP_NUMBER[family] else str(number)
    return protocol_text(number)


def protocol_text(number: int | None) -> str | None:
    if number is None:
        return None
    return PROTOCOL_NAMES.get(number, str(number))
