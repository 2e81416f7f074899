"""Render the policy data plane as one nftables table of our own (pure: DesiredState -> nft text).

Same layout and behaviour as the iptables back end (see iptables_render), in nftables' terms:
base chains filter-FORWARD / filter-INPUT (priority filter) jump to vpcn-FORWARD / vpcn-INPUT; dispatch
to the per-veth chains is a verdict map keyed by interface name (anything not in the map is dropped);
selector, CIDR and named-port members are native sets (interval sets of ipv4_addr, and
ipv4_addr . inet_proto . inet_service). Rules carry the same "vpcn:<hash>" ids as comments.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vpcnet.dataplane import names
from vpcnet.dataplane.policy_state import (
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    DesiredState,
    EndpointSpec,
    IpSetSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierPolicies,
)
from vpcnet.dataplane.render_cache import IdentityCache

FAMILY = "ip"
TABLE = names.NFT_TABLE
FROM_WL_MAP = names.CHAIN_PREFIX + "from-wl-map"
TO_WL_MAP = names.CHAIN_PREFIX + "to-wl-map"
BASE_CHAINS = {
    "filter-FORWARD": "type filter hook forward priority filter; policy accept;",
    "filter-INPUT": "type filter hook input priority filter; policy accept;",
}
_FULL = 0xFFFFFFFF


@dataclass(frozen=True)
class NftSet:
    name: str
    kind: str  # "hash:net" | "hash:ip,port" (members in the same text as ipset's, converted when rendered)
    members: frozenset[str]

    @property
    def declaration(self) -> str:
        if self.kind == "hash:net":
            return "type ipv4_addr; flags interval;"
        return "type ipv4_addr . inet_proto . inet_service;"


@dataclass(frozen=True)
class NftMap:
    name: str
    elements: tuple[tuple[str, str], ...]  # (interface, "goto <chain>"), sorted

    declaration = "type ifname : verdict;"


@dataclass(frozen=True)
class NftRender:
    chains: dict[str, tuple[str, ...]]  # every chain (base ones too) -> rule texts, each ending in its id
    sets: dict[str, NftSet]
    maps: dict[str, NftMap]


def element(kind: str, member: str) -> str:
    """ipset member text -> nft element text ("10.0.0.1,tcp:80" -> "10.0.0.1 . tcp . 80")."""
    if kind == "hash:net":
        return member
    address, rest = member.split(",", 1)
    proto, port = rest.split(":", 1)
    return f"{address} . {proto} . {port}"


def with_id(chain: str, rule: str, note: str = "") -> str:
    comment = names.rule_comment(chain, rule)
    if note:
        comment = f"{comment} {note}"
    return f'{rule} comment "{comment}"'


def rule_id(rule: str) -> str:
    start = rule.rindex('comment "') + len('comment "')
    return rule[start : start + len(names.RULE_COMMENT_PREFIX) + 16]


def _finish(chain: str, rules: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(with_id(chain, rule, note) for rule, note in rules)


def _clear(bits: int) -> str:
    return f"meta mark set meta mark & {_FULL & ~bits:#010x}"


def _set_bits(bits: int) -> str:
    return f"meta mark set meta mark | {bits:#010x}"


def _is_clear(bits: int) -> str:
    return f"meta mark & {bits:#010x} == 0x00000000"


def _is_set(bits: int) -> str:
    return f"meta mark & {bits:#010x} == {bits:#010x}"


def render(state: DesiredState) -> NftRender:
    chains: dict[str, tuple[str, ...]] = {}
    chains["filter-FORWARD"] = _finish("filter-FORWARD", [(f"jump {names.FORWARD_CHAIN}", "")])
    chains["filter-INPUT"] = _finish("filter-INPUT", [(f"jump {names.INPUT_CHAIN}", "")])
    chains[names.FORWARD_CHAIN] = _forward_chain(state.interface_prefixes)
    chains[names.INPUT_CHAIN] = _input_chain(state.interface_prefixes)
    chains[names.FROM_WL_DISPATCH] = _dispatch_chain(names.FROM_WL_DISPATCH, "iifname", FROM_WL_MAP)
    chains[names.TO_WL_DISPATCH] = _dispatch_chain(names.TO_WL_DISPATCH, "oifname", TO_WL_MAP)
    ifaces = sorted(state.endpoints)
    for iface in ifaces:
        endpoint = state.endpoints[iface]
        chains[names.from_workload_chain(iface)] = _egress_chains(endpoint)
        chains[names.to_workload_chain(iface)] = _ingress_chains(endpoint)
    for key in sorted(state.policies):
        policy = state.policies[key]
        chains[policy.chain] = _policy_chains(policy)
    for cache in (_egress_chains, _ingress_chains, _policy_chains):
        cache.sweep()
    maps = {
        FROM_WL_MAP: NftMap(FROM_WL_MAP, tuple((i, f"goto {names.from_workload_chain(i)}") for i in ifaces)),
        TO_WL_MAP: NftMap(TO_WL_MAP, tuple((i, f"goto {names.to_workload_chain(i)}") for i in ifaces)),
    }
    sets = {name: _nft_set(spec) for name, spec in state.ipsets.items()}
    return NftRender(chains=chains, sets=sets, maps=maps)


@functools.lru_cache(maxsize=65536)
def _nft_set(spec: IpSetSpec) -> NftSet:
    return NftSet(spec.name, spec.kind, spec.members)


@functools.cache
def _forward_chain(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    rules = [(_clear(MARK_ALL), "")]
    rules += [(f'iifname "{p}*" jump {names.FROM_WL_DISPATCH}', "") for p in prefixes]
    rules += [(f'oifname "{p}*" jump {names.TO_WL_DISPATCH}', "") for p in prefixes]
    return _finish(names.FORWARD_CHAIN, rules)


@functools.cache
def _input_chain(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    rules = [(_clear(MARK_ALL), "")]
    rules += [(f'iifname "{p}*" jump {names.FROM_WL_DISPATCH}', "") for p in prefixes]
    return _finish(names.INPUT_CHAIN, rules)


@functools.cache
def _dispatch_chain(chain: str, key: str, vmap: str) -> tuple[str, ...]:
    return _finish(chain, [(f"{key} vmap @{vmap}", ""), ("drop", "unknown interface")])


def endpoint_chain(endpoint: EndpointSpec, direction: str) -> tuple[str, ...]:
    if direction == "egress":
        chain = names.from_workload_chain(endpoint.iface)
        tiers = endpoint.egress
    else:
        chain = names.to_workload_chain(endpoint.iface)
        tiers = endpoint.ingress
    rules: list[tuple[str, str]] = []
    if direction == "egress":
        if not endpoint.addresses:
            rules.append(("drop", "pod has no address yet"))
        else:
            addresses = ", ".join(endpoint.addresses)
            rules.append((f"ip saddr != {{ {addresses} }} drop", "anti-spoofing"))
    rules.append(("ct state established,related accept", ""))
    rules.append(("ct state invalid drop", ""))
    rules.append((_clear(MARK_ALL), ""))
    for tier in tiers:
        rules += _tier_rules(tier, direction)
    rules.append((_set_bits(MARK_ACCEPT), "no policy decided: allow"))
    return _finish(chain, rules)


def _egress(endpoint: EndpointSpec) -> tuple[str, ...]:
    return endpoint_chain(endpoint, "egress")


def _ingress(endpoint: EndpointSpec) -> tuple[str, ...]:
    return endpoint_chain(endpoint, "ingress")


_egress_chains = IdentityCache(_egress)
_ingress_chains = IdentityCache(_ingress)


def _tier_rules(tier: TierPolicies, direction: str) -> list[tuple[str, str]]:
    rules = [(_clear(MARK_PASS), f"start of tier {tier.tier}")]
    for policy_id in tier.policy_ids:
        rules.append((f"{_is_clear(MARK_PASS)} jump {names.policy_chain(policy_id, direction)}", ""))
        rules.append((f"{_is_set(MARK_ACCEPT)} return", ""))
    if tier.default_action == "deny":
        rules.append((f"{_is_clear(MARK_PASS)} drop", f"end of tier {tier.tier}: drop"))
    return rules


def policy_chain(policy: PolicyChainSpec) -> tuple[str, ...]:
    rules: list[tuple[str, str]] = []
    for rule in policy.rules:
        verdict = _verdict(rule.action)
        rules += [(f"{match} {verdict}".strip(), "") for match in rule_matches(rule)]
    return _finish(policy.chain, rules)


def _verdict(action: str) -> str:
    if action == "allow":
        return f"{_set_bits(MARK_ACCEPT)} return"
    if action == "pass":
        return f"{_set_bits(MARK_PASS)} return"
    if action == "deny":
        return "drop"
    if action == "log":
        return 'log prefix "vpcn-packet: " level notice'
    raise ValueError(f"rule action {action!r} must be allow, deny, pass or log")


_policy_chains = IdentityCache(policy_chain)


def rule_matches(rule: PolicyRule) -> list[str]:
    common: list[str] = []
    if rule.protocol is not None:
        common.append(f"meta l4proto {rule.protocol.lower()}")
    if rule.not_protocol is not None:
        common.append(f"meta l4proto != {rule.not_protocol.lower()}")
    common += [f"ip saddr @{s}" for s in rule.src_sets]
    common += [f"ip saddr != @{s}" for s in rule.not_src_sets]
    common += [f"ip daddr @{s}" for s in rule.dst_sets]
    common += [f"ip daddr != @{s}" for s in rule.not_dst_sets]
    common += _negated_ports(rule.not_src_ports, "src")
    common += _negated_ports(rule.not_dst_ports, "dst")
    if rule.icmp_type is not None:
        common.append(f"icmp type {rule.icmp_type}")
        if rule.icmp_code is not None:
            common.append(f"icmp code {rule.icmp_code}")
    if rule.not_icmp_type is not None:
        if rule.not_icmp_code is None:
            common.append(f"icmp type != {rule.not_icmp_type}")
        else:
            common.append(f"icmp type . icmp code != {{ {rule.not_icmp_type} . {rule.not_icmp_code} }}")
    matches = []
    for src in _port_alternatives(rule.src_ports, "src"):
        for dst in _port_alternatives(rule.dst_ports, "dst"):
            matches.append(" ".join(part for part in (*common, src, dst) if part))
    return matches


def _ports_text(ranges: Sequence[PortRange]) -> str:
    return ", ".join(str(r.first) if r.first == r.last else f"{r.first}-{r.last}" for r in sorted(ranges))


def _port_alternatives(ports: PortMatch, side: str) -> list[str]:
    if not ports:
        return [""]
    address = "saddr" if side == "src" else "daddr"
    alternatives = []
    if ports.ranges:
        alternatives.append(f"th {side[0]}port {{ {_ports_text(ports.ranges)} }}")
    alternatives += [f"ip {address} . meta l4proto . th {side[0]}port @{s}" for s in ports.named_sets]
    return alternatives


def _negated_ports(ports: PortMatch, side: str) -> list[str]:
    address = "saddr" if side == "src" else "daddr"
    parts = []
    if ports.ranges:
        parts.append(f"th {side[0]}port != {{ {_ports_text(ports.ranges)} }}")
    parts += [f"ip {address} . meta l4proto . th {side[0]}port != @{s}" for s in ports.named_sets]
    return parts
