"""Calculation graph pieces (pure functions of the state) that a data plane renders from.

* `policies_for_endpoint(state, pod, direction)`: the tiers, each with its ordered policies, that
  apply to `pod` in `direction` (only tiers with at least one such policy), in evaluation order.
* `selector_members(state, selector)`: the addresses a selector stands for: /32 (/128) of every
  matching pod with an IP, and the CIDRs of every matching network set. One ipset per selector
  (`hash:net`), named from `selector.uid`.
* `named_port_members(state, selector, protocol, name)`: (ip, protocol, port) for every matching pod
  that has a container port called `name` with that protocol (`hash:ip,port` ipsets); selector
  None means every pod.
* `active_selectors` / `active_named_ports`: everything the given policies reference.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from vpcnet.api.core import Pod
from vpcnet.api.selector import Selector, parse_selector
from vpcnet.policy.model import (
    PORT_PROTOCOL_NAMES,
    Direction,
    IPAddress,
    IPNetwork,
    NamedPort,
    Policy,
    PolicyTier,
)
from vpcnet.policy.state import ClusterState

SelectorKey = Selector | str


def _selector(key: SelectorKey) -> Selector:
    return key if isinstance(key, Selector) else parse_selector(key)


def policies_for_endpoint(state: ClusterState, pod: Pod, direction: Direction) -> list[PolicyTier]:
    labels = state.endpoint_labels(pod)
    selected = [
        p for p in state.policies if p.applies_to_pods and direction in p.types and p.selector.matches(labels)
    ]
    return group_by_tier(state, selected)


def group_by_tier(state: ClusterState, policies: Iterable[Policy]) -> list[PolicyTier]:
    by_tier: dict[str, list[Policy]] = {}
    for p in policies:
        by_tier.setdefault(p.tier, []).append(p)
    tiers = sorted((state.tiers[name] for name in by_tier), key=lambda t: t.sort_key)
    return [PolicyTier(t, tuple(sorted(by_tier[t.name], key=lambda p: p.sort_key))) for t in tiers]


def selector_members(state: ClusterState, selector: SelectorKey) -> set[IPNetwork]:
    sel = _selector(selector)
    out: set[IPNetwork] = set()
    for pod in state.pods:
        if pod.pod_ips and sel.matches(state.endpoint_labels(pod)):
            out.update(ipaddress.ip_network(ip) for ip in pod.pod_ips)
    for ns in state.network_sets:
        if sel.matches(ns.labels):
            out.update(ns.nets)
    return out


def named_port_members(
    state: ClusterState, selector: SelectorKey | None, protocol: int, name: str
) -> set[tuple[IPAddress, int, int]]:
    proto_name = PORT_PROTOCOL_NAMES.get(protocol)
    if proto_name is None:
        return set()
    sel = _selector(selector) if selector is not None else None
    out: set[tuple[IPAddress, int, int]] = set()
    for pod in state.pods:
        if not pod.pod_ips:
            continue
        if sel is not None and not sel.matches(state.endpoint_labels(pod)):
            continue
        number = pod.named_port(name, proto_name)
        if number is not None:
            out.update((ipaddress.ip_address(ip), protocol, number) for ip in pod.pod_ips)
    return out


def active_selectors(policies: Iterable[Policy]) -> dict[str, Selector]:
    """uid -> selector for every rule selector/notSelector the policies use."""
    out: dict[str, Selector] = {}
    for p in policies:
        for rule in (*p.ingress, *p.egress):
            for side in (rule.source, rule.destination):
                for sel in (side.selector, side.not_selector):
                    if sel is not None:
                        out[sel.uid] = sel
    return out


def active_named_ports(policies: Iterable[Policy]) -> set[tuple[Selector | None, int, str]]:
    """(selector of that side or None, protocol, port name) for every named port the rules use."""
    out: set[tuple[Selector | None, int, str]] = set()
    for p in policies:
        for rule in (*p.ingress, *p.egress):
            if rule.protocol is None:
                continue
            for side in (rule.source, rule.destination):
                for port in (*side.ports, *side.not_ports):
                    if isinstance(port, NamedPort):
                        out.add((side.selector, rule.protocol, port.name))
    return out
