"""The one rule model that Kubernetes and Calico policies compile into, and that data planes render.

Shape (Calico's, so it maps 1:1 onto per-endpoint chains, policy chains and ipsets):

* A `TierSpec` (name, order, default_action Deny|Pass) groups policies. Tiers run in order (lower
  first, None last, ties by name). Kubernetes policies live in tier "default" (order 1,000,000).
* A `Policy` (kind, namespace, name, tier, order, selector, ingress rules, egress rules, types)
  applies to every pod whose *endpoint labels* match `selector` (already namespace-scoped) in each
  direction listed in `types`. Within a tier, policies run by (order, None last; then name).
  Kubernetes policies have order 1000.
* A `Rule` = action (Allow, Deny, Pass, Log) + protocol / not_protocol (IANA numbers) + ip_version
  + icmp / not_icmp + `source` and `destination` `EndpointMatch`es. Every given field must match.
* An `EndpointMatch` = selector / not_selector (Calico selectors over endpoint labels; members are
  the IPs of matching pods and the CIDRs of matching network sets), nets / not_nets (CIDRs), and
  ports / not_ports (`PortRange`, or `NamedPort` which resolves per endpoint to a number).

Endpoint labels (see `endpoint_labels`): a pod's own labels plus
``projectcalico.org/namespace=<ns>``, ``projectcalico.org/orchestrator=k8s`` and ``pcns.<key>=<value>``
for every label of its namespace (including kubernetes.io/metadata.name). Network sets carry
their labels, plus the namespace labels when namespaced. Namespace selectors are therefore plain
selectors over ``pcns.`` labels, and one canonical selector string (`Selector.canonical`, id
`Selector.uid`) names one ipset.

Evaluation of one direction at one endpoint (vpcnet.policy.evaluate implements it; a kernel data
plane must do the same): for each tier that has at least one policy applying to the endpoint in that
direction: walk its policies' rules in order; the first matching Allow allows, Deny denies, Pass
skips to the next tier, Log records and continues. If nothing decided in the tier: the tier's
default action (Deny drops; Pass goes on to the next tier). After the last tier (or when no policy
applies at all) the namespace profile allows. A flow is allowed when the source's egress and the
destination's ingress both allow; addresses that are not pods have no policy of their own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from vpcnet.api.calico import IcmpMatch
from vpcnet.api.selector import Selector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAMESPACE_LABEL_PREFIX = "pcns."
DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
K8S_POLICY_ORDER = 1000.0

PROTOCOL_TCP = 6
PROTOCOL_UDP = 17
PROTOCOL_SCTP = 132
PROTOCOL_ICMP = 1
PROTOCOL_ICMPV6 = 58
PROTOCOL_UDPLITE = 136
# Protocol numbers whose container ports can be named (Kubernetes protocols).
PORT_PROTOCOL_NAMES = {PROTOCOL_TCP: "TCP", PROTOCOL_UDP: "UDP", PROTOCOL_SCTP: "SCTP"}


class Action(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"
    PASS = "Pass"
    LOG = "Log"


class Direction(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class PolicyKind(StrEnum):
    KUBERNETES = "KubernetesNetworkPolicy"
    CALICO = "NetworkPolicy"
    GLOBAL = "GlobalNetworkPolicy"


_KIND_SHORT = {PolicyKind.KUBERNETES: "knp", PolicyKind.CALICO: "np", PolicyKind.GLOBAL: "gnp"}


def policy_id(kind: PolicyKind, namespace: str | None, name: str) -> str:
    """Felix-style policy id: knp/<ns>/<name>, np/<ns>/<name> or gnp/<name>."""
    short = _KIND_SHORT[kind]
    return f"{short}/{namespace}/{name}" if namespace else f"{short}/{name}"


@dataclass(frozen=True, order=True)
class PortRange:
    """Inclusive port range; a single port has first == last."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@dataclass(frozen=True, order=True)
class NamedPort:
    """A container port name; resolves per endpoint (and protocol) to a number."""

    name: str

    def __str__(self) -> str:
        return self.name


PortMatch = PortRange | NamedPort


@dataclass(frozen=True)
class EndpointMatch:
    """Conditions on one side of a flow. Empty = matches anything (including non-pod addresses).

    `selector` matches an address that belongs to a matching pod or lies in a matching network set;
    an address matching nothing (an external IP) never matches `selector` but does match
    `not_selector`. `ports`/`not_ports` apply to this side's port (destination port for
    destination, source port for source).
    """

    selector: Selector | None = None
    not_selector: Selector | None = None
    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    ports: tuple[PortMatch, ...] = ()
    not_ports: tuple[PortMatch, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self == _EMPTY_MATCH

    def describe(self) -> str:
        parts: list[str] = []
        if self.selector is not None:
            parts.append(f"selector {self.selector.canonical}")
        if self.not_selector is not None:
            parts.append(f"notSelector {self.not_selector.canonical}")
        if self.nets:
            parts.append("nets " + ",".join(map(str, self.nets)))
        if self.not_nets:
            parts.append("notNets " + ",".join(map(str, self.not_nets)))
        if self.ports:
            parts.append("ports " + ",".join(map(str, self.ports)))
        if self.not_ports:
            parts.append("notPorts " + ",".join(map(str, self.not_ports)))
        return "; ".join(parts) if parts else "any"


_EMPTY_MATCH = EndpointMatch()


@dataclass(frozen=True)
class Rule:
    action: Action
    protocol: int | None = None
    not_protocol: int | None = None
    ip_version: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    source: EndpointMatch = _EMPTY_MATCH
    destination: EndpointMatch = _EMPTY_MATCH

    def describe(self) -> str:
        parts = [self.action.value]
        if self.protocol is not None:
            parts.append(f"protocol {protocol_label(self.protocol)}")
        if self.not_protocol is not None:
            parts.append(f"notProtocol {protocol_label(self.not_protocol)}")
        if self.ip_version is not None:
            parts.append(f"ipVersion {self.ip_version}")
        if self.icmp is not None:
            parts.append(f"icmp {self.icmp.to_dict()}")
        if self.not_icmp is not None:
            parts.append(f"notICMP {self.not_icmp.to_dict()}")
        if not self.source.is_empty:
            parts.append(f"from [{self.source.describe()}]")
        if not self.destination.is_empty:
            parts.append(f"to [{self.destination.describe()}]")
        return " ".join(parts)


@dataclass(frozen=True)
class TierSpec:
    name: str
    order: float | None
    default_action: Action = Action.DENY

    @property
    def sort_key(self) -> tuple[bool, float, str]:
        return (self.order is None, self.order or 0.0, self.name)


DEFAULT_TIER_SPEC = TierSpec(DEFAULT_TIER, DEFAULT_TIER_ORDER, Action.DENY)


@dataclass(frozen=True)
class Policy:
    """A compiled policy. `selector` picks the pods it applies to (namespace scope included);
    `applies_to_pods` is False for host-endpoint-only Calico policies (doNotTrack/preDNAT)."""

    kind: PolicyKind
    namespace: str | None
    name: str
    tier: str
    order: float | None
    selector: Selector
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    types: frozenset[Direction]
    applies_to_pods: bool = True
    # For each compiled rule, the index of the resource's own rule it came from (a Kubernetes rule
    # becomes one model rule per peer and protocol); empty = one to one (Calico policies).
    ingress_origins: tuple[int, ...] = ()
    egress_origins: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        """Felix-style policy id: knp/<ns>/<name>, np/<ns>/<name> or gnp/<name>."""
        return policy_id(self.kind, self.namespace, self.name)

    @property
    def sort_key(self) -> tuple[bool, float, str, str, str]:
        return (self.order is None, self.order or 0.0, self.name, self.kind.value, self.namespace or "")

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def spec_rule_index(self, direction: Direction, index: int) -> int:
        """The index in the policy resource's spec.ingress / spec.egress of compiled rule `index`."""
        origins = self.ingress_origins if direction is Direction.INGRESS else self.egress_origins
        return origins[index] if origins else index


@dataclass(frozen=True)
class PolicyTier:
    """The policies of one tier that apply to one endpoint in one direction, in evaluation order."""

    tier: TierSpec
    policies: tuple[Policy, ...]


def protocol_label(number: int) -> str:
    names = {
        PROTOCOL_TCP: "TCP",
        PROTOCOL_UDP: "UDP",
        PROTOCOL_SCTP: "SCTP",
        PROTOCOL_ICMP: "ICMP",
        PROTOCOL_ICMPV6: "ICMPv6",
        PROTOCOL_UDPLITE: "UDPLite",
    }
    return names.get(number, str(number))


def protocol_from_text(text: str) -> int:
    """A protocol given as TCP/UDP/SCTP/ICMP/ICMPv6/UDPLite (any case) or a number 1-255."""
    if text.isdigit() and 1 <= int(text) <= 255:
        return int(text)
    for number in (
        PROTOCOL_TCP,
        PROTOCOL_UDP,
        PROTOCOL_SCTP,
        PROTOCOL_ICMP,
        PROTOCOL_ICMPV6,
        PROTOCOL_UDPLITE,
    ):
        if protocol_label(number).lower() == text.lower():
            return number
    raise ValueError(
        f"unknown protocol {text!r}: use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 1-255"
    )
