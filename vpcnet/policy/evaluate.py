"""Verdict for one flow, with the explanation: which tier, policy and rule decided each direction.

`evaluate(state, flow)` evaluates the source pod's egress, then the destination pod's ingress;
the flow is allowed when both allow. The evaluation order inside a direction is the model's
(see vpcnet.policy.model). Matching is by address as a data plane sees it: a selector matches an
address that belongs to a matching pod or lies in a matching network set.

A flow whose source port is unknown (`src_port` None, as in reachability questions) does not
match rules that list source ports, and does match rules that list only source notPorts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from vpcnet.api.core import Pod
from vpcnet.policy.calc import policies_for_endpoint
from vpcnet.policy.model import (
    PORT_PROTOCOL_NAMES,
    Action,
    Direction,
    EndpointMatch,
    IPAddress,
    NamedPort,
    PortMatch,
    Rule,
    protocol_label,
)
from vpcnet.policy.state import ClusterState


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow: a pod (with its address, if it has one) or a bare address."""

    pod: Pod | None
    ip: IPAddress | None

    def __str__(self) -> str:
        if self.pod is not None:
            return self.pod.ref
        return str(self.ip)


@dataclass(frozen=True)
class Flow:
    src: Endpoint
    dst: Endpoint
    protocol: int
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    def describe(self) -> str:
        port = f":{self.dst_port}" if self.dst_port is not None else ""
        return f"{self.src} -> {self.dst}{port} {protocol_label(self.protocol)}"


def endpoint(state: ClusterState, ref: str | Pod | IPAddress) -> Endpoint:
    """A pod (object, or "<ns>/<name>") or an address; an address that is a pod's becomes that pod."""
    if isinstance(ref, Pod):
        return Endpoint(ref, ipaddress.ip_address(ref.pod_ip) if ref.pod_ip else None)
    if isinstance(ref, str) and "/" in ref and not _looks_like_ip(ref):
        pod = state.pod(ref)
        return Endpoint(pod, state.pod_addresses.get(id(pod)))
    if isinstance(ref, str):
        try:
            ip: IPAddress = ipaddress.ip_address(ref)
        except ValueError:
            raise ValueError(f"{ref!r} is neither NAMESPACE/POD nor an IP address") from None
    else:
        ip = ref
    pods = state.pods_by_ip.get(ip, [])
    return Endpoint(pods[0] if pods else None, ip)


def endpoint_in_family(state: ClusterState, ref: str, version: int) -> Endpoint:
    """A pod ("<ns>/<name>") at its address of one family (a dual-stack pod has one of each); no address
    when it has none of that family."""
    pod = state.pod(ref)
    found = (ipaddress.ip_address(ip) for ip in pod.pod_ips)
    return Endpoint(pod, next((ip for ip in found if ip.version == version), None))


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Reason(StrEnum):
    NO_POLICY = "no-policy"  # no policy selects the pod in this direction: allowed
    NOT_A_POD = "not-a-pod"  # this end is not a pod: no policy of its own
    RULE = "rule"  # a rule's Allow or Deny decided
    END_OF_TIER = "end-of-tier"  # no rule decided in a tier whose default action is Deny
    PROFILE = "profile"  # passed every tier (Pass / tier default Pass): the namespace profile allows


@dataclass(frozen=True)
class Decision:
    """How one direction was decided."""

    direction: Direction
    subject: str  # the pod (or address) whose policy this is
    allowed: bool
    reason: Reason
    tier: str | None = None
    policy: str | None = None  # policy id, e.g. knp/x/deny-all
    rule_index: int | None = None  # index in the policy's own spec.ingress / spec.egress
    rule: str | None = None  # the (compiled) rule, described
    considered: tuple[str, ...] = ()  # ids of the policies in the deciding tier (for end-of-tier)
    logged: tuple[str, ...] = field(default=())  # "<policy id> rule <i>" for every Log rule hit

    def describe(self) -> str:
        verb = "allowed" if self.allowed else "denied"
        d = "egress from" if self.direction is Direction.EGRESS else "ingress to"
        head = f"{d} {self.subject}: {verb}"
        if self.reason is Reason.NO_POLICY:
            text = f"{head}: no policy selects the pod (default allow)"
        elif self.reason is Reason.NOT_A_POD:
            text = f"{head}: not a pod, no policy applies"
        elif self.reason is Reason.RULE:
            text = f"{head} by tier {self.tier!r}, policy {self.policy}, rule {self.rule_index} ({self.rule})"
        elif self.reason is Reason.END_OF_TIER:
            text = (
                f"{head} by the end of tier {self.tier!r} (default action Deny): no rule matched in "
                + ", ".join(self.considered)
            )
        else:
            text = f"{head}: passed every tier, the namespace profile allows"
        if self.logged:
            text += "; logged by " + ", ".join(self.logged)
        return text


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    egress: Decision
    ingress: Decision
    flow: Flow

    @property
    def explanation(self) -> str:
        verb = "ALLOWED" if self.allowed else "DENIED"
        return f"{self.flow.describe()}: {verb}\n  {self.egress.describe()}\n  {self.ingress.describe()}"


def evaluate(state: ClusterState, flow: Flow) -> Verdict:
    egress = decide(state, flow, Direction.EGRESS)
    ingress = decide(state, flow, Direction.INGRESS)
    return Verdict(egress.allowed and ingress.allowed, egress, ingress, flow)


def decide(state: ClusterState, flow: Flow, direction: Direction) -> Decision:
    subject = flow.src if direction is Direction.EGRESS else flow.dst
    if subject.pod is None:
        return Decision(direction, str(subject), True, Reason.NOT_A_POD)
    tiers = policies_for_endpoint(state, subject.pod, direction)
    if not tiers:
        return Decision(direction, str(subject), True, Reason.NO_POLICY)
    logged: list[str] = []
    for tier in tiers:
        passed = False
        for policy in tier.policies:
            for index, rule in enumerate(policy.rules(direction)):
                if not rule_matches(state, rule, flow):
                    continue
                if rule.action is Action.LOG:
                    logged.append(f"{policy.id} rule {policy.spec_rule_index(direction, index)}")
                    continue
                if rule.action is Action.PASS:
                    passed = True
                    break
                return Decision(
                    direction,
                    str(subject),
                    rule.action is Action.ALLOW,
                    Reason.RULE,
                    tier.tier.name,
                    policy.id,
                    policy.spec_rule_index(direction, index),
                    rule.describe(),
                    logged=tuple(logged),
                )
            if passed:
                break
        if passed or tier.tier.default_action is Action.PASS:
            continue
        return Decision(
            direction,
            str(subject),
            False,
            Reason.END_OF_TIER,
            tier.tier.name,
            considered=tuple(p.id for p in tier.policies),
            logged=tuple(logged),
        )
    return Decision(direction, str(subject), True, Reason.PROFILE, logged=tuple(logged))


# --------------------------------------------------------------------------------------------------
# Matching one rule against one flow


def rule_matches(state: ClusterState, rule: Rule, flow: Flow) -> bool:
    if rule.protocol is not None and rule.protocol != flow.protocol:
        return False
    if rule.not_protocol is not None and rule.not_protocol == flow.protocol:
        return False
    if rule.ip_version is not None:
        for end in (flow.src, flow.dst):
            if end.ip is not None and end.ip.version != rule.ip_version:
                return False
    if rule.icmp is not None and not _icmp_matches(rule.icmp.type, rule.icmp.code, flow):
        return False
    if rule.not_icmp is not None and _icmp_matches(rule.not_icmp.type, rule.not_icmp.code, flow):
        return False
    if not side_matches(state, rule.source, flow.src, flow.src_port, flow.protocol):
        return False
    return side_matches(state, rule.destination, flow.dst, flow.dst_port, flow.protocol)


def _icmp_matches(typ: int | None, code: int | None, flow: Flow) -> bool:
    if typ is not None and flow.icmp_type != typ:
        return False
    return code is None or flow.icmp_code == code


def side_matches(
    state: ClusterState, match: EndpointMatch, end: Endpoint, port: int | None, protocol: int
) -> bool:
    if match.selector is not None and not _selector_has(state, match.selector.matcher, end):
        return False
    if match.not_selector is not None and _selector_has(state, match.not_selector.matcher, end):
        return False
    if match.nets and (end.ip is None or not any(_in(end.ip, n) for n in match.nets)):
        return False
    if match.not_nets and end.ip is not None and any(_in(end.ip, n) for n in match.not_nets):
        return False
    if match.ports and (port is None or not any(_port_matches(p, port, end, protocol) for p in match.ports)):
        return False
    return not (
        match.not_ports
        and port is not None
        and any(_port_matches(p, port, end, protocol) for p in match.not_ports)
    )


def _in(ip: IPAddress, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return ip.version == net.version and ip in net


def _selector_has(state: ClusterState, matcher: object, end: Endpoint) -> bool:
    fn = matcher  # a compiled selector closure
    assert callable(fn)
    if end.pod is not None and fn(state.endpoint_labels(end.pod)):
        return True
    if end.ip is None:
        return False
    return any(fn(ns.labels) and any(_in(end.ip, n) for n in ns.nets) for ns in state.network_sets)


def _port_matches(p: PortMatch, port: int, end: Endpoint, protocol: int) -> bool:
    if isinstance(p, NamedPort):
        proto_name = PORT_PROTOCOL_NAMES.get(protocol)
        if end.pod is None or proto_name is None:
            return False
        return end.pod.named_port(p.name, proto_name) == port
    return p.first <= port <= p.last
