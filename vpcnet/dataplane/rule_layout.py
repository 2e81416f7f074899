"""The policy data plane's chains and rules as data, written once (pure: DesiredState -> Layout).

iptables_render and nft_render print this structure in their dialect; neither decides what a chain holds.
The layout is Calico felix's, with our own "vpcn-" prefix:

  FORWARD  -> vpcn-FORWARD (inserted first)        ... mark ACCEPT -> ACCEPT (appended last)
  INPUT    -> vpcn-INPUT (inserted first)
  vpcn-FORWARD: clear our mark bits; in <prefix>* -> vpcn-from-wl-dispatch;
                out <prefix>* -> vpcn-to-wl-dispatch
  vpcn-INPUT:   clear our mark bits; [IPv6: ICMPv6 neighbour discovery, router solicitations and
                advertisements and MLD from <prefix>* accepted]; in <prefix>* -> vpcn-from-wl-dispatch
                (a pod talking to its node)
  dispatch:     by interface to the endpoint's chain (goto); anything else is dropped ("unknown interface":
                fail closed for veths we have not programmed)
  vpcn-fw-<veth> (egress) / vpcn-tw-<veth> (ingress): [fw: drop unless the source is the pod's own address],
                established/related accepted, invalid dropped, marks cleared, tiers in order
                (per policy: jump to its chain unless the pass bit is set, RETURN once the accept bit is set;
                at the end of a tier drop unless a policy passed), finally allowed (no policy decided).
  vpcn-pi-<policy> / vpcn-po-<policy>: Allow = set accept bit + RETURN, Pass = set pass bit + RETURN,
                Deny = DROP, Log = LOG and go on.

With flow logs on (DesiredState.flow_logs), the verdict points also send the packet to the agent over
NFLOG before their verdict, with a short id naming the point (vpcnet.dataplane.flow_points): a policy's
Deny, the end-of-tier drop and the anti-spoofing drop always; a policy's Allow and "no policy decided"
when allowed flows are logged too (sampled at a rate).

The vocabulary is small, after felix's generic match builder: a Rule is match terms (all must hold) and then
its actions, in order. A dialect prints one rule as several where it cannot say it in one (iptables: one
target per rule, no anonymous address sets, 15 ports per multiport match), and picks its own mechanism for
a Dispatch (iptables: goto chains binned by name; nftables: a verdict map). Nothing here depends on the
dialect; the address family only decides which addresses are valid (the printers spell it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from vpcnet.dataplane import flow_points, names
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_state import (
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    Action,
    DesiredState,
    Direction,
    EndpointSpec,
    FlowLogSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierPolicies,
)
from vpcnet.dataplane.render_cache import IdentityCache

Side = Literal["src", "dst"]
IfaceDirection = Literal["in", "out"]
LOG_PREFIX = "vpcn-packet: "

# ------------------------------------------------------------------------------------------------ matches


@dataclass(frozen=True)
class Iface:
    """The packet came in on (or goes out of) name; wildcard: any interface whose name starts with it."""

    direction: IfaceDirection
    name: str
    wildcard: bool = False


@dataclass(frozen=True)
class AddrSet:
    """The source (destination) address is (not) in the named address set."""

    side: Side
    set_name: str
    negated: bool = False


@dataclass(frozen=True)
class SrcNotIn:
    """The source address is none of these CIDRs (a short literal list, not a named set)."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Protocol:
    name: str  # lower case: "tcp", ..., "icmp" (this family's ICMP), or a number as text
    negated: bool = False


@dataclass(frozen=True)
class Ports:
    """The source (destination) port is (not) in one of the ranges (sorted)."""

    side: Side
    ranges: tuple[PortRange, ...]
    negated: bool = False


@dataclass(frozen=True)
class NamedPorts:
    """(address, protocol, port) of that side is (not) in the named set (a Kubernetes named port)."""

    side: Side
    set_name: str
    negated: bool = False


@dataclass(frozen=True)
class Icmp:
    type: int
    code: int | None = None
    negated: bool = False


@dataclass(frozen=True)
class MarkIs:
    """(mark & mask) == value."""

    value: int
    mask: int


@dataclass(frozen=True)
class CtState:
    states: frozenset[str]  # of "invalid", "new", "established", "related", "untracked"


Match = Iface | AddrSet | SrcNotIn | Protocol | Ports | NamedPorts | Icmp | MarkIs | CtState

# ------------------------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Jump:
    chain: str


@dataclass(frozen=True)
class Goto:
    chain: str


@dataclass(frozen=True)
class Accept:
    pass


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Return:
    pass


@dataclass(frozen=True)
class MarkSet:
    """Set these mark bits (the others stay)."""

    bits: int


@dataclass(frozen=True)
class MarkClear:
    """Clear these mark bits (the others stay)."""

    bits: int


@dataclass(frozen=True)
class Log:
    prefix: str
    level: int = 5  # syslog: notice


@dataclass(frozen=True)
class Nflog:
    """Send the packet (its first snaplen bytes) to NFLOG group with prefix, and go on; rate: at most
    that many packets per second (0: every one)."""

    group: int
    prefix: str
    snaplen: int
    rate: int = 0


RuleAction = Jump | Goto | Accept | Drop | Return | MarkSet | MarkClear | Log | Nflog
ACCEPT, DROP, RETURN = Accept(), Drop(), Return()

# ------------------------------------------------------------------------------------------------ structure


@dataclass(frozen=True)
class Rule:
    matches: tuple[Match, ...]
    actions: tuple[RuleAction, ...]
    note: str = ""  # a human note kept beside the rule's id


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Dispatch:
    """A chain that sends a packet to the chain of its interface (goto) and drops it for any other one."""

    chain: str
    direction: IfaceDirection
    prefixes: tuple[str, ...]  # every interface starts with one of these
    targets: tuple[tuple[str, str], ...]  # (interface, chain), sorted by interface


@dataclass(frozen=True)
class Hook:
    """A rule of ours in a kernel chain (FORWARD / INPUT): inserted at its top, or appended at its end."""

    kernel_chain: Literal["FORWARD", "INPUT"]
    position: Literal["insert", "append"]
    rule: Rule


@dataclass(frozen=True)
class Layout:
    family: IpFamily
    hooks: tuple[Hook, ...]
    items: tuple[Chain | Dispatch, ...]  # in the order a printer declares them


HOOKS = (
    Hook("FORWARD", "insert", Rule((), (Jump(names.FORWARD_CHAIN),))),
    # Where our rules share the kernel's chain with others', a packet policy allowed is accepted there.
    Hook("FORWARD", "append", Rule((MarkIs(MARK_ACCEPT, MARK_ACCEPT),), (ACCEPT,), "policy accepted")),
    Hook("INPUT", "insert", Rule((), (Jump(names.INPUT_CHAIN),))),
)


def layout(state: DesiredState) -> Layout:
    """The whole layout of state; unchanged endpoints and policies give the very same Chain objects."""
    family = state.family
    prefixes = state.interface_prefixes
    ifaces = tuple(sorted(state.endpoints))
    items: list[Chain | Dispatch] = [
        forward_chain(prefixes),
        input_chain(prefixes, family),
        dispatch(names.FROM_WL_DISPATCH, "in", prefixes, ifaces),
        dispatch(names.TO_WL_DISPATCH, "out", prefixes, ifaces),
    ]
    egress, ingress, policies = _caches(family, state.flow_logs)
    for iface in ifaces:
        endpoint = state.endpoints[iface]
        items.append(egress(endpoint))
        items.append(ingress(endpoint))
    for key in sorted(state.policies):
        items.append(policies(state.policies[key]))
    for cache in (egress, ingress, policies):
        cache.sweep()
    return Layout(family, HOOKS, tuple(items))


@functools.cache
def forward_chain(prefixes: tuple[str, ...]) -> Chain:
    rules = [Rule((), (MarkClear(MARK_ALL),))]
    rules += [Rule((Iface("in", p, True),), (Jump(names.FROM_WL_DISPATCH),)) for p in prefixes]
    rules += [Rule((Iface("out", p, True),), (Jump(names.TO_WL_DISPATCH),)) for p in prefixes]
    return Chain(names.FORWARD_CHAIN, tuple(rules))


# ICMPv6 a pod sends its node whatever policy says (felix allows the same), before anti-spoofing: these come
# from the pod's link-local address (or ::), and without them the pod and the node lose each other as
# neighbours. MLD listener query/report/done (130-132) and MLDv2 report (143), router solicitation and
# advertisement (133, 134), neighbour solicitation and advertisement (135, 136). They are link-local
# (hop limit 255): never forwarded, so the INPUT path is the only one that sees them.
ICMPV6_LINK_TYPES = (130, 131, 132, 133, 134, 135, 136, 143)


@functools.cache
def input_chain(prefixes: tuple[str, ...], family: IpFamily = IpFamily.V4) -> Chain:
    rules = [Rule((), (MarkClear(MARK_ALL),))]
    if family is IpFamily.V6:
        rules += [
            Rule((Iface("in", p, True), Protocol("icmp"), Icmp(t)), (ACCEPT,), "ICMPv6 link protocol")
            for p in prefixes
            for t in ICMPV6_LINK_TYPES
        ]
    rules += [Rule((Iface("in", p, True),), (Jump(names.FROM_WL_DISPATCH),)) for p in prefixes]
    return Chain(names.INPUT_CHAIN, tuple(rules))


@functools.lru_cache(maxsize=16)
def dispatch(
    chain: str, direction: IfaceDirection, prefixes: tuple[str, ...], ifaces: tuple[str, ...]
) -> Dispatch:
    target = names.from_workload_chain if direction == "in" else names.to_workload_chain
    return Dispatch(chain, direction, prefixes, tuple((iface, target(iface)) for iface in ifaces))


def endpoint_chain(
    endpoint: EndpointSpec,
    direction: str,
    family: IpFamily = IpFamily.V4,
    flow_logs: FlowLogSpec | None = None,
) -> Chain:
    if direction == "egress":
        chain = names.from_workload_chain(endpoint.iface)
        tiers = endpoint.egress
    elif direction == "ingress":
        chain = names.to_workload_chain(endpoint.iface)
        tiers = endpoint.ingress
    else:
        raise ValueError(f"endpoint direction {direction!r} must be 'ingress' or 'egress'")
    rules: list[Rule] = []
    if direction == "egress":
        # Before conntrack: a spoofed source must not ride on someone else's established flow.
        rules.append(_logged_denial(_anti_spoofing(endpoint, family), flow_points.ANTI_SPOOFING, flow_logs))
    rules += (_ESTABLISHED, _INVALID, _CLEAR_MARKS)
    for tier in tiers:
        rules += _tier_rules(tier, direction, flow_logs)
    rules.append(_no_policy_decided(direction, flow_logs))
    return Chain(chain, tuple(rules))


# The same in every endpoint chain (one object each: printers remember a rule's text).
_ESTABLISHED = Rule((CtState(frozenset({"related", "established"})),), (ACCEPT,))
_INVALID = Rule((CtState(frozenset({"invalid"})),), (DROP,))
_CLEAR_MARKS = Rule((), (MarkClear(MARK_ALL),))
# No tier, or every tier passed: the namespace profile allows (Kubernetes: not selected = allowed).
_NO_POLICY_DECIDED = Rule((), (MarkSet(MARK_ACCEPT),), "no policy decided: allow")
_ACCEPTED_RETURNS = Rule((MarkIs(MARK_ACCEPT, MARK_ACCEPT),), (RETURN,))


def _anti_spoofing(endpoint: EndpointSpec, family: IpFamily) -> Rule:
    if not endpoint.addresses:
        return Rule((), (DROP,), "pod has no address yet")
    for address in endpoint.addresses:
        try:
            family.network(address)
        except ValueError as exc:
            raise ValueError(f"endpoint {endpoint.iface}: {exc}") from None
    return Rule((SrcNotIn(endpoint.addresses),), (DROP,), "anti-spoofing")


def _tier_rules(tier: TierPolicies, direction: str, flow_logs: FlowLogSpec | None = None) -> list[Rule]:
    pass_clear = MarkIs(0, MARK_PASS)
    rules = [Rule((), (MarkClear(MARK_PASS),), f"start of tier {tier.tier}")]
    for policy_id in tier.policy_ids:
        rules.append(Rule((pass_clear,), (Jump(names.policy_chain(policy_id, direction)),)))
        rules.append(_ACCEPTED_RETURNS)
    if tier.default_action == "deny":
        drop = Rule((pass_clear,), (DROP,), f"end of tier {tier.tier}: drop")
        prefix = flow_points.end_of_tier_prefix(_direction(direction), tier.tier)
        rules.append(_logged_denial(drop, prefix, flow_logs))
    return rules


def _direction(direction: str) -> Direction:
    if direction not in ("ingress", "egress"):
        raise ValueError(f"direction {direction!r} must be 'ingress' or 'egress'")
    return "ingress" if direction == "ingress" else "egress"


def _nflog(prefix: str, flow_logs: FlowLogSpec, rate: int = 0) -> Nflog:
    return Nflog(flow_logs.group, prefix, flow_logs.snaplen, rate)


def _logged_denial(rule: Rule, prefix: str, flow_logs: FlowLogSpec | None) -> Rule:
    """rule (a drop) sending its packets to the flow log first, when flow logs are on."""
    if flow_logs is None or not flow_logs.logs_denied:
        return rule
    return Rule(rule.matches, (_nflog(prefix, flow_logs), *rule.actions), rule.note)


def _no_policy_decided(direction: str, flow_logs: FlowLogSpec | None) -> Rule:
    if flow_logs is None or not flow_logs.logs_allowed:
        return _NO_POLICY_DECIDED
    sample = _nflog(flow_points.no_policy_prefix(_direction(direction)), flow_logs, flow_logs.allow_rate)
    return Rule((), (sample, *_NO_POLICY_DECIDED.actions), _NO_POLICY_DECIDED.note)


def policy_chain(policy: PolicyChainSpec, flow_logs: FlowLogSpec | None = None) -> Chain:
    rules: list[Rule] = []
    for position, rule in enumerate(policy.rules):
        actions = rule_actions(rule.action)
        if flow_logs is not None and rule.action in ("allow", "deny"):
            index = flow_points.point_index(rule.spec_index, position)
            verdict: flow_points.Verdict = "allow" if rule.action == "allow" else "deny"
            prefix = flow_points.rule_prefix(verdict, policy.direction, index, policy.chain)
            if verdict == "deny" and flow_logs.logs_denied:
                actions = (_nflog(prefix, flow_logs), *actions)
            elif verdict == "allow" and flow_logs.logs_allowed:
                actions = (_nflog(prefix, flow_logs, flow_logs.allow_rate), *actions)
        rules += [Rule(matches, actions) for matches in rule_matches(rule)]
    return Chain(policy.chain, tuple(rules))


_EndpointCache = IdentityCache[EndpointSpec, Chain]
_Caches = tuple[_EndpointCache, _EndpointCache, IdentityCache[PolicyChainSpec, Chain]]
# One set per family and flow log setting: the same endpoint object is valid in one family only, and its
# chain differs with the flow log setting (which changes rarely: the caches of an old setting are dropped).
_CACHES: dict[tuple[IpFamily, FlowLogSpec | None], _Caches] = {}


def _caches(family: IpFamily, flow_logs: FlowLogSpec | None) -> _Caches:
    key = (family, flow_logs)
    found = _CACHES.get(key)
    if found is None:
        for old in [k for k in _CACHES if k[0] is family]:
            del _CACHES[old]
        found = _CACHES[key] = (
            IdentityCache(lambda endpoint: endpoint_chain(endpoint, "egress", family, flow_logs)),
            IdentityCache(lambda endpoint: endpoint_chain(endpoint, "ingress", family, flow_logs)),
            IdentityCache(lambda policy: policy_chain(policy, flow_logs)),
        )
    return found


def rule_actions(action: Action | str) -> tuple[RuleAction, ...]:
    if action == "allow":
        return (MarkSet(MARK_ACCEPT), RETURN)
    if action == "pass":
        return (MarkSet(MARK_PASS), RETURN)
    if action == "deny":
        return (DROP,)
    if action == "log":
        return (Log(LOG_PREFIX),)
    raise ValueError(f"rule action {action!r} must be allow, deny, pass or log")


def rule_matches(rule: PolicyRule) -> list[tuple[Match, ...]]:
    """The match terms of a rule; more than one alternative when its ports OR numbers and named ports."""
    common: list[Match] = []
    if rule.protocol is not None:
        common.append(Protocol(rule.protocol.lower()))
    if rule.not_protocol is not None:
        common.append(Protocol(rule.not_protocol.lower(), negated=True))
    common += [AddrSet("src", s) for s in rule.src_sets]
    common += [AddrSet("src", s, negated=True) for s in rule.not_src_sets]
    common += [AddrSet("dst", s) for s in rule.dst_sets]
    common += [AddrSet("dst", s, negated=True) for s in rule.not_dst_sets]
    common += _negated_ports(rule.not_src_ports, "src")
    common += _negated_ports(rule.not_dst_ports, "dst")
    if rule.icmp_type is not None:
        common.append(Icmp(rule.icmp_type, rule.icmp_code))
    if rule.not_icmp_type is not None:
        common.append(Icmp(rule.not_icmp_type, rule.not_icmp_code, negated=True))
    return [
        (*common, *src, *dst)
        for src in _port_alternatives(rule.src_ports, "src")
        for dst in _port_alternatives(rule.dst_ports, "dst")
    ]


def _port_alternatives(ports: PortMatch, side: Side) -> list[tuple[Match, ...]]:
    """OR-ed alternatives: the numeric ranges, and each named-port set."""
    if not ports:
        return [()]
    alternatives: list[tuple[Match, ...]] = []
    if ports.ranges:
        alternatives.append((Ports(side, tuple(sorted(ports.ranges))),))
    alternatives += [(NamedPorts(side, s),) for s in ports.named_sets]
    return alternatives


def _negated_ports(ports: PortMatch, side: Side) -> list[Match]:
    """AND-ed negations: in none of the ranges, in no named-port set."""
    parts: list[Match] = []
    if ports.ranges:
        parts.append(Ports(side, tuple(sorted(ports.ranges)), negated=True))
    parts += [NamedPorts(side, s, negated=True) for s in ports.named_sets]
    return parts
