"""Render the policy data plane as filter-table chains (pure: DesiredState -> rule text).

Layout (Calico felix's, with our own "vpcn-" prefix):

  FORWARD  -j vpcn-FORWARD (inserted first)        ... -m mark --mark ACCEPT -j ACCEPT (appended last)
  INPUT    -j vpcn-INPUT (inserted first)
  vpcn-FORWARD: clear our mark bits; -i <prefix>+ -> vpcn-from-wl-dispatch;
                -o <prefix>+ -> vpcn-to-wl-dispatch
  vpcn-INPUT:   clear our mark bits; -i <prefix>+ -> vpcn-from-wl-dispatch (a pod talking to its node)
  dispatch:     one goto per known veth (binned by the character after the prefix into child chains);
                anything else is dropped ("unknown interface": fail closed for veths we have not programmed)
  vpcn-fw-<veth> (egress) / vpcn-tw-<veth> (ingress): [fw: drop unless the source is the pod's own address],
                established/related accepted, invalid dropped, marks cleared, tiers in order
                (per policy: jump to its chain unless the pass bit is set, RETURN once the accept bit is set;
                at the end of a tier drop unless a policy passed), finally allowed (no policy decided).
  vpcn-pi-<policy> / vpcn-po-<policy>: Allow = set accept bit + RETURN, Pass = set pass bit + RETURN,
                Deny = DROP, Log = LOG and go on.

Every rule carries a comment "vpcn:<16 chars>" hashed from its chain and text, so the applier compares what
the kernel holds by these ids instead of the kernel's normalised rendering.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vpcnet.dataplane import names
from vpcnet.dataplane.policy_state import (
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    MARK_SCRATCH,
    DesiredState,
    EndpointSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierPolicies,
)
from vpcnet.dataplane.render_cache import IdentityCache

MULTIPORT_SLOTS = 15  # a range takes two


@dataclass(frozen=True)
class Hook:
    """A rule of ours in a kernel chain: inserted at the top, or appended at the end."""

    chain: str
    position: str  # "insert" | "append"
    rule: str


@dataclass(frozen=True)
class FilterRender:
    chains: dict[str, tuple[str, ...]]  # our chain -> rule bodies (what follows "-A <chain> ")
    hooks: tuple[Hook, ...]


def _mark(value: int, mask: int) -> str:
    return f"{value:#x}/{mask:#x}"


def with_id(chain: str, rule: str, note: str = "") -> str:
    """The rule with its id comment in front (and an optional human note inside the same comment)."""
    comment = names.rule_comment(chain, rule)
    if note:
        comment = f"{comment} {note}"
    return f'-m comment --comment "{comment}" {rule}'.rstrip()


def _finish(chain: str, rules: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(with_id(chain, rule, note) for rule, note in rules)


def render(state: DesiredState) -> FilterRender:
    chains: dict[str, tuple[str, ...]] = {}
    chains[names.FORWARD_CHAIN] = _forward_chain(state.interface_prefixes)
    chains[names.INPUT_CHAIN] = _input_chain(state.interface_prefixes)
    ifaces = tuple(sorted(state.endpoints))
    chains.update(
        dispatch_chains(
            names.FROM_WL_DISPATCH, "-i", names.from_workload_chain, ifaces, state.interface_prefixes
        )
    )
    chains.update(
        dispatch_chains(names.TO_WL_DISPATCH, "-o", names.to_workload_chain, ifaces, state.interface_prefixes)
    )
    for iface in ifaces:
        endpoint = state.endpoints[iface]
        chains[names.from_workload_chain(iface)] = _egress_chains(endpoint)
        chains[names.to_workload_chain(iface)] = _ingress_chains(endpoint)
    for key in sorted(state.policies):
        policy = state.policies[key]
        chains[policy.chain] = _policy_chains(policy)
    for cache in (_egress_chains, _ingress_chains, _policy_chains):
        cache.sweep()
    return FilterRender(chains=chains, hooks=hooks())


@functools.cache
def hooks() -> tuple[Hook, ...]:
    accept = f"-m mark --mark {_mark(MARK_ACCEPT, MARK_ACCEPT)} -j ACCEPT"
    return (
        Hook("FORWARD", "insert", with_id("FORWARD", f"-j {names.FORWARD_CHAIN}")),
        Hook("FORWARD", "append", with_id("FORWARD", accept, "policy accepted")),
        Hook("INPUT", "insert", with_id("INPUT", f"-j {names.INPUT_CHAIN}")),
    )


@functools.cache
def _forward_chain(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    chain = names.FORWARD_CHAIN
    rules = [(f"-j MARK --set-xmark {_mark(0, MARK_ALL)}", "")]
    rules += [(f"-i {p}+ -j {names.FROM_WL_DISPATCH}", "") for p in prefixes]
    rules += [(f"-o {p}+ -j {names.TO_WL_DISPATCH}", "") for p in prefixes]
    return _finish(chain, rules)


@functools.cache
def _input_chain(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    chain = names.INPUT_CHAIN
    rules = [(f"-j MARK --set-xmark {_mark(0, MARK_ALL)}", "")]
    rules += [(f"-i {p}+ -j {names.FROM_WL_DISPATCH}", "") for p in prefixes]
    return _finish(chain, rules)


def dispatch_bins(ifaces: Sequence[str], prefixes: Sequence[str]) -> dict[str, list[str]]:
    """Group interface names by their prefix plus the next character (the stem of a child chain)."""
    bins: dict[str, list[str]] = {}
    for iface in ifaces:
        prefix = max((p for p in prefixes if iface.startswith(p)), key=len, default=None)
        if prefix is None:
            raise ValueError(f"interface {iface!r} matches none of the interface prefixes {list(prefixes)}")
        stem = iface[: len(prefix) + 1]
        bins.setdefault(stem, []).append(iface)
    return bins


@functools.lru_cache(maxsize=16)
def dispatch_chains(
    root: str, flag: str, target: Callable[[str], str], ifaces: tuple[str, ...], prefixes: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """The dispatch chain and its children; every one ends in a drop for interfaces we do not know."""
    unknown = ("-j DROP", "unknown interface")
    chains: dict[str, tuple[str, ...]] = {}
    root_rules: list[tuple[str, str]] = []
    for stem, members in sorted(dispatch_bins(ifaces, prefixes).items()):
        if len(members) == 1:
            root_rules.append((f"{flag} {members[0]} -g {target(members[0])}", ""))
            continue
        child = names.dispatch_child_chain(root, stem)
        root_rules.append((f"{flag} {stem}+ -g {child}", ""))
        chains[child] = _child_dispatch(child, flag, target, tuple(members))
    chains[root] = _finish(root, [*root_rules, unknown])
    return chains


@functools.lru_cache(maxsize=4096)
def _child_dispatch(
    child: str, flag: str, target: Callable[[str], str], members: tuple[str, ...]
) -> tuple[str, ...]:
    rules = [(f"{flag} {iface} -g {target(iface)}", "") for iface in members]
    return _finish(child, [*rules, ("-j DROP", "unknown interface")])


def endpoint_chain(endpoint: EndpointSpec, direction: str) -> tuple[str, ...]:
    if direction == "egress":
        chain = names.from_workload_chain(endpoint.iface)
        tiers = endpoint.egress
        policy_kind = "egress"
    else:
        chain = names.to_workload_chain(endpoint.iface)
        tiers = endpoint.ingress
        policy_kind = "ingress"
    rules: list[tuple[str, str]] = []
    if direction == "egress":
        # Before conntrack: a spoofed source must not ride on someone else's established flow.
        rules += _anti_spoofing(endpoint.addresses)
    rules.append(("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", ""))
    rules.append(("-m conntrack --ctstate INVALID -j DROP", ""))
    rules.append((f"-j MARK --set-xmark {_mark(0, MARK_ALL)}", ""))
    for tier in tiers:
        rules += _tier_rules(tier, policy_kind)
    # No tier, or every tier passed: the namespace profile allows (Kubernetes: not selected = allowed).
    rules.append((f"-j MARK --set-xmark {_mark(MARK_ACCEPT, MARK_ACCEPT)}", "no policy decided: allow"))
    return _finish(chain, rules)


def _anti_spoofing(addresses: tuple[str, ...]) -> list[tuple[str, str]]:
    if not addresses:
        return [("-j DROP", "pod has no address yet")]
    if len(addresses) == 1:
        return [(f"! -s {addresses[0]} -j DROP", "anti-spoofing")]
    rules = [(f"-j MARK --set-xmark {_mark(0, MARK_SCRATCH)}", "")]
    rules += [(f"-s {a} -j MARK --set-xmark {_mark(MARK_SCRATCH, MARK_SCRATCH)}", "") for a in addresses]
    rules.append((f"-m mark --mark {_mark(0, MARK_SCRATCH)} -j DROP", "anti-spoofing"))
    return rules


def _egress(endpoint: EndpointSpec) -> tuple[str, ...]:
    return endpoint_chain(endpoint, "egress")


def _ingress(endpoint: EndpointSpec) -> tuple[str, ...]:
    return endpoint_chain(endpoint, "ingress")


_egress_chains = IdentityCache(_egress)
_ingress_chains = IdentityCache(_ingress)


def _tier_rules(tier: TierPolicies, direction: str) -> list[tuple[str, str]]:
    pass_clear = _mark(0, MARK_PASS)
    rules = [(f"-j MARK --set-xmark {pass_clear}", f"start of tier {tier.tier}")]
    for policy_id in tier.policy_ids:
        rules.append((f"-m mark --mark {pass_clear} -j {names.policy_chain(policy_id, direction)}", ""))
        rules.append((f"-m mark --mark {_mark(MARK_ACCEPT, MARK_ACCEPT)} -j RETURN", ""))
    if tier.default_action == "deny":
        rules.append((f"-m mark --mark {pass_clear} -j DROP", f"end of tier {tier.tier}: drop"))
    return rules


def policy_chain(policy: PolicyChainSpec) -> tuple[str, ...]:
    rules: list[tuple[str, str]] = []
    for rule in policy.rules:
        for match in rule_matches(rule):
            rules += _action_rules(match, rule.action)
    return _finish(policy.chain, rules)


def _action_rules(match: str, action: str) -> list[tuple[str, str]]:
    prefix = f"{match} " if match else ""
    if action == "allow":
        return [
            (f"{prefix}-j MARK --set-xmark {_mark(MARK_ACCEPT, MARK_ACCEPT)}", ""),
            (f"-m mark --mark {_mark(MARK_ACCEPT, MARK_ACCEPT)} -j RETURN", ""),
        ]
    if action == "pass":
        return [
            (f"{prefix}-j MARK --set-xmark {_mark(MARK_PASS, MARK_PASS)}", ""),
            (f"-m mark --mark {_mark(MARK_PASS, MARK_PASS)} -j RETURN", ""),
        ]
    if action == "deny":
        return [(f"{prefix}-j DROP", "")]
    if action == "log":
        return [(f'{prefix}-j LOG --log-prefix "vpcn-packet: " --log-level 5', "")]
    raise ValueError(f"rule action {action!r} must be allow, deny, pass or log")


_policy_chains = IdentityCache(policy_chain)


def rule_matches(rule: PolicyRule) -> list[str]:
    """The match text of a rule; more than one when its ports OR numbers and named ports."""
    common: list[str] = []
    if rule.protocol is not None:
        common.append(f"-p {rule.protocol.lower()}")
    if rule.not_protocol is not None:
        common.append(f"! -p {rule.not_protocol.lower()}")
    common += [f"-m set --match-set {s} src" for s in rule.src_sets]
    common += [f"-m set ! --match-set {s} src" for s in rule.not_src_sets]
    common += [f"-m set --match-set {s} dst" for s in rule.dst_sets]
    common += [f"-m set ! --match-set {s} dst" for s in rule.not_dst_sets]
    common += _negated_ports(rule.not_src_ports, "src")
    common += _negated_ports(rule.not_dst_ports, "dst")
    if rule.icmp_type is not None:
        code = f"/{rule.icmp_code}" if rule.icmp_code is not None else ""
        common.append(f"-m icmp --icmp-type {rule.icmp_type}{code}")
    if rule.not_icmp_type is not None:
        code = f"/{rule.not_icmp_code}" if rule.not_icmp_code is not None else ""
        common.append(f"-m icmp ! --icmp-type {rule.not_icmp_type}{code}")
    matches = []
    for src in _port_alternatives(rule.src_ports, "src"):
        for dst in _port_alternatives(rule.dst_ports, "dst"):
            matches.append(" ".join(part for part in (*common, src, dst) if part))
    return matches


def _port_text(ranges: Sequence[PortRange]) -> str:
    return ",".join(str(r.first) if r.first == r.last else f"{r.first}:{r.last}" for r in ranges)


def _port_chunks(ranges: Sequence[PortRange]) -> list[list[PortRange]]:
    chunks: list[list[PortRange]] = []
    slots = MULTIPORT_SLOTS
    for port_range in sorted(ranges):
        cost = 1 if port_range.first == port_range.last else 2
        if slots + cost > MULTIPORT_SLOTS:
            chunks.append([])
            slots = 0
        chunks[-1].append(port_range)
        slots += cost
    return chunks


def _port_alternatives(ports: PortMatch, side: str) -> list[str]:
    """OR-ed alternatives: each multiport chunk of numbers, and each named-port set."""
    if not ports:
        return [""]
    option = "--sports" if side == "src" else "--dports"
    alternatives = [f"-m multiport {option} {_port_text(chunk)}" for chunk in _port_chunks(ports.ranges)]
    alternatives += [f"-m set --match-set {s} {side},{side}" for s in ports.named_sets]
    return alternatives


def _negated_ports(ports: PortMatch, side: str) -> list[str]:
    """AND-ed negations: not in any chunk, not in any named-port set."""
    option = "--sports" if side == "src" else "--dports"
    parts = [f"-m multiport ! {option} {_port_text(chunk)}" for chunk in _port_chunks(ports.ranges)]
    parts += [f"-m set ! --match-set {s} {side},{side}" for s in ports.named_sets]
    return parts
