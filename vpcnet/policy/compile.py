"""Kubernetes and Calico policy resources -> the rule model (vpcnet.policy.model).

Kubernetes NetworkPolicy, as Calico converts it: tier "default", order 1000, every rule Allow,
one model rule per (peer x protocol) with that protocol's ports merged; the policy selector is
``projectcalico.org/namespace == "<ns>" && projectcalico.org/orchestrator == "k8s" && <podSelector>``;
a podSelector peer is scoped to the policy's namespace, a namespaceSelector peer becomes a selector
over ``pcns.`` labels, an ipBlock becomes nets/notNets. Ingress peers go to the source, egress peers
to the destination; ports always to the destination.

Calico policies, as Calico's rule conversion does: a rule side's selector is scoped to the policy's
namespace (namespaced policy) or to the side's namespaceSelector (rewritten onto ``pcns.`` labels;
all() = any namespace, global() = no namespace, i.e. global network sets) as soon as any of
selector, notSelector or namespaceSelector is given; notSelector itself stays unscoped, so
notSelector alone in a namespaced policy means "endpoints of this namespace except ...".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from vpcnet.api.calico import (
    CalicoNetworkPolicy,
    CalicoRule,
    EntityRule,
    GlobalNetworkPolicy,
    PortSpec,
    Tier,
)
from vpcnet.api.networking import K8sNetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule
from vpcnet.api.selector import All, Compare, Global, Has, Node, Not, Selector, and_all, parse_selector
from vpcnet.policy.model import (
    DEFAULT_TIER,
    DEFAULT_TIER_SPEC,
    K8S_POLICY_ORDER,
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    ORCHESTRATOR_LABEL,
    Action,
    Direction,
    EndpointMatch,
    IPNetwork,
    NamedPort,
    Policy,
    PolicyKind,
    PortMatch,
    PortRange,
    Rule,
    TierSpec,
)

_K8S_PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
_IS_K8S_POD = Compare(ORCHESTRATOR_LABEL, "==", "k8s")

PolicyResource = K8sNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy


def compile_tier(tier: Tier) -> TierSpec:
    """A Tier resource in the model. The one home of the rule that tier "default" without an order keeps
    its built-in order (1,000,000), as Calico's default tier does; any other tier without one runs last."""
    order = tier.order
    if tier.metadata.name == DEFAULT_TIER and order is None:
        order = DEFAULT_TIER_SPEC.order
    return TierSpec(tier.metadata.name, order, Action(tier.default_action))


def compile_policy(resource: PolicyResource) -> Policy:
    if isinstance(resource, K8sNetworkPolicy):
        return compile_k8s(resource)
    return compile_calico(resource)


def _in_namespace(namespace: str) -> Node:
    return Compare(NAMESPACE_LABEL, "==", namespace)


def namespace_selector_node(root: Node) -> Node:
    """A namespace selector rewritten onto endpoint labels: label -> pcns.label, all() -> in some
    namespace, global() -> in no namespace."""
    if isinstance(root, All):
        return Has(NAMESPACE_LABEL)
    if isinstance(root, Global):
        return Not(Has(NAMESPACE_LABEL))
    rewritten = root.map_labels(lambda label: NAMESPACE_LABEL_PREFIX + label)
    return _replace_all_global(rewritten)


def _replace_all_global(node: Node) -> Node:
    # all()/global() nested inside a larger namespace selector keep the same meaning as alone.
    if isinstance(node, All):
        return Has(NAMESPACE_LABEL)
    if isinstance(node, Global):
        return Not(Has(NAMESPACE_LABEL))
    operand = getattr(node, "operand", None)
    if isinstance(operand, Node) and isinstance(node, Not):
        return Not(_replace_all_global(operand))
    operands = getattr(node, "operands", None)
    if isinstance(operands, tuple):
        return type(node)(tuple(_replace_all_global(op) for op in operands))  # type: ignore[call-arg]
    return node


# --------------------------------------------------------------------------------------------------
# Kubernetes


def compile_k8s(policy: K8sNetworkPolicy) -> Policy:
    ns = policy.metadata.namespace or "default"
    selector = Selector(and_all(_in_namespace(ns), _IS_K8S_POD, policy.pod_selector.to_node()))
    types = frozenset(Direction(t) for t in policy.policy_types)
    ingress, ingress_origins = _k8s_rules(policy.ingress, ns, Direction.INGRESS)
    egress, egress_origins = _k8s_rules(policy.egress, ns, Direction.EGRESS)
    return Policy(
        kind=PolicyKind.KUBERNETES,
        namespace=ns,
        name=policy.metadata.name,
        tier=DEFAULT_TIER,
        order=K8S_POLICY_ORDER,
        selector=selector,
        ingress=ingress if Direction.INGRESS in types else (),
        egress=egress if Direction.EGRESS in types else (),
        types=types,
        ingress_origins=ingress_origins if Direction.INGRESS in types else (),
        egress_origins=egress_origins if Direction.EGRESS in types else (),
    )


def _k8s_rules(
    rules: tuple[NetworkPolicyRule, ...], ns: str, direction: Direction
) -> tuple[tuple[Rule, ...], tuple[int, ...]]:
    """The model rules of a direction, and for each the index of the Kubernetes rule it came from."""
    compiled: list[Rule] = []
    origins: list[int] = []
    for index, rule in enumerate(rules):
        expanded = _k8s_rule(rule, ns, direction)
        compiled += expanded
        origins += [index] * len(expanded)
    return tuple(compiled), tuple(origins)


def _k8s_peer(peer: NetworkPolicyPeer, ns: str) -> EndpointMatch:
    if peer.ip_block is not None:
        return EndpointMatch(nets=(peer.ip_block.network,), not_nets=peer.ip_block.except_networks)
    terms: list[Node] = [_IS_K8S_POD]
    if peer.namespace_selector is None:
        terms.append(_in_namespace(ns))
    elif peer.namespace_selector.is_empty:
        terms.append(Has(NAMESPACE_LABEL))
    else:
        terms.append(namespace_selector_node(peer.namespace_selector.to_node()))
    if peer.pod_selector is not None:
        terms.append(peer.pod_selector.to_node())
    return EndpointMatch(selector=Selector(and_all(*terms)))


def _k8s_port_groups(ports: Iterable[NetworkPolicyPort]) -> list[tuple[int | None, tuple[PortMatch, ...]]]:
    """[(protocol, ports)]: one entry per protocol, ports () = every port; [(None, ())] if no ports."""
    by_protocol: dict[int, list[PortMatch] | None] = {}
    for port in ports:
        proto = _K8S_PROTOCOLS[port.protocol]
        current = by_protocol.setdefault(proto, [])
        if port.port is None:
            by_protocol[proto] = None  # this protocol on every port
            continue
        if current is None:
            continue
        if isinstance(port.port, str):
            match: PortMatch = NamedPort(port.port)
        else:
            match = PortRange(port.port, port.end_port if port.end_port is not None else port.port)
        if match not in current:
            current.append(match)
    if not by_protocol:
        return [(None, ())]
    return [(proto, tuple(matches) if matches is not None else ()) for proto, matches in by_protocol.items()]


def _k8s_rule(rule: NetworkPolicyRule, ns: str, direction: Direction) -> list[Rule]:
    peers = [_k8s_peer(p, ns) for p in rule.peers] or [EndpointMatch()]
    out: list[Rule] = []
    for peer in peers:
        for proto, ports in _k8s_port_groups(rule.ports):
            if direction is Direction.INGRESS:
                src, dst = peer, EndpointMatch(ports=ports)
            else:
                src, dst = (
                    EndpointMatch(),
                    EndpointMatch(
                        selector=peer.selector, nets=peer.nets, not_nets=peer.not_nets, ports=ports
                    ),
                )
            out.append(Rule(Action.ALLOW, protocol=proto, source=src, destination=dst))
    return out


# --------------------------------------------------------------------------------------------------
# Calico


def compile_calico(policy: CalicoNetworkPolicy | GlobalNetworkPolicy) -> Policy:
    namespaced = isinstance(policy, CalicoNetworkPolicy)
    ns = policy.metadata.namespace if namespaced else None
    own = parse_selector(policy.selector).root
    if ns is not None:
        root = and_all(_in_namespace(ns), own)
    else:
        assert isinstance(policy, GlobalNetworkPolicy)
        ns_sel = (
            namespace_selector_node(parse_selector(policy.namespace_selector).root)
            if policy.namespace_selector.strip()
            else All()
        )
        root = and_all(ns_sel, own)
    types = frozenset(Direction(t) for t in policy.types)
    host_only = isinstance(policy, GlobalNetworkPolicy) and (policy.do_not_track or policy.pre_dnat)
    return Policy(
        kind=PolicyKind.CALICO if namespaced else PolicyKind.GLOBAL,
        namespace=ns,
        name=policy.metadata.name,
        tier=policy.tier,
        order=policy.order,
        selector=Selector(root),
        ingress=tuple(_calico_rule(r, ns) for r in policy.ingress) if Direction.INGRESS in types else (),
        egress=tuple(_calico_rule(r, ns) for r in policy.egress) if Direction.EGRESS in types else (),
        types=types,
        applies_to_pods=not host_only,
    )


def _calico_rule(rule: CalicoRule, ns: str | None) -> Rule:
    return Rule(
        action=Action(rule.action),
        protocol=rule.protocol,
        not_protocol=rule.not_protocol,
        ip_version=rule.ip_version,
        icmp=rule.icmp,
        not_icmp=rule.not_icmp,
        source=_calico_entity(rule.source, ns),
        destination=_calico_entity(rule.destination, ns),
    )


def _calico_entity(entity: EntityRule, ns: str | None) -> EndpointMatch:
    # Empty strings mean "not given", as in Calico's API.
    sel_text = entity.selector or None
    not_text = entity.not_selector or None
    ns_text = entity.namespace_selector or None
    scope: Node | None = None
    if ns_text is not None:
        scope = namespace_selector_node(parse_selector(ns_text).root)
    elif ns is not None:
        scope = _in_namespace(ns)
    # As soon as any selector field is used, the side is limited to the policy's namespace (or the
    # selected namespaces) -- also when only notSelector is given.
    selector: Selector | None = None
    own = parse_selector(sel_text).root if sel_text is not None else All()
    if scope is not None and (sel_text is not None or not_text is not None or ns_text is not None):
        selector = Selector(and_all(scope, own))
    elif sel_text is not None:
        selector = Selector(own)
    not_selector = Selector(parse_selector(not_text).root) if not_text is not None else None
    return EndpointMatch(
        selector=selector,
        not_selector=not_selector,
        nets=tuple(_net(n) for n in entity.nets),
        not_nets=tuple(_net(n) for n in entity.not_nets),
        ports=tuple(_calico_port(p) for p in entity.ports),
        not_ports=tuple(_calico_port(p) for p in entity.not_ports),
    )


def _net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=False)


def _calico_port(port: PortSpec) -> PortMatch:
    if isinstance(port, str):
        return NamedPort(port)
    if isinstance(port, tuple):
        return PortRange(port[0], port[1])
    return PortRange(port, port)
