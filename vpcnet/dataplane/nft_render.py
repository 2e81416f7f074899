"""Print the rule layout (rule_layout) as one nftables table of our own per family (pure: -> nft text).

The same layout as the iptables back end, in nftables' terms: the hooks become base chains filter-FORWARD /
filter-INPUT (priority filter) of our table ("ip vpcnet", or "ip6 vpcnet" for IPv6); a Dispatch is a
verdict map keyed by interface name (anything not in the map is dropped); selector, CIDR and named-port
members are native sets (hash sets of ipv4_addr / ipv6_addr, interval sets where a member is a network, and
addr . inet_proto . inet_service).
Each layout rule is one nft rule: nft has anonymous sets and several statements per rule.
Rules carry the same "vpcn:<hash>" ids as comments.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vpcnet.dataplane import names, rule_layout
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_state import DesiredState, IpSetSpec, PortRange
from vpcnet.dataplane.render_cache import IdentityCache
from vpcnet.dataplane.rule_layout import (
    Accept,
    AddrSet,
    Chain,
    CtState,
    Dispatch,
    Drop,
    Goto,
    Icmp,
    Iface,
    Jump,
    Layout,
    Log,
    MarkClear,
    MarkIs,
    MarkSet,
    Match,
    NamedPorts,
    Nflog,
    Ports,
    Protocol,
    Return,
    Rule,
    RuleAction,
    SrcNotIn,
)

TABLE = names.NFT_TABLE
FROM_WL_MAP = names.CHAIN_PREFIX + "from-wl-map"
TO_WL_MAP = names.CHAIN_PREFIX + "to-wl-map"
DISPATCH_MAPS = {names.FROM_WL_DISPATCH: FROM_WL_MAP, names.TO_WL_DISPATCH: TO_WL_MAP}
BASE_CHAINS = {
    "filter-FORWARD": "type filter hook forward priority filter; policy accept;",
    "filter-INPUT": "type filter hook input priority filter; policy accept;",
}
_FULL = 0xFFFFFFFF
# The order nft prints conntrack states in (by their bit values).
_CT_ORDER = ("invalid", "established", "related", "new", "untracked")
_LOG_LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")


@dataclass(frozen=True)
class NftSet:
    name: str
    kind: str  # "hash:net" | "hash:ip,port" (members in the same text as ipset's, converted when rendered)
    members: frozenset[str]
    family: IpFamily = IpFamily.V4

    @functools.cached_property
    def interval(self) -> bool:
        """Whether the set needs nft's interval flag: only when it holds a network wider than one address.
        A set of host addresses is a plain hash set: adding or deleting an element of an interval set makes
        libnftables read back and merge the set's intervals, which costs milliseconds at thousands."""
        host = f"/{self.family.host_prefixlen}"
        return self.kind == "hash:net" and not all(m.endswith(host) for m in self.members)

    @property
    def declaration(self) -> str:
        if self.kind == "hash:net":
            return f"type {self.family.nft_address_type};{' flags interval;' if self.interval else ''}"
        return f"type {self.family.nft_address_type} . inet_proto . inet_service;"

    def element(self, member: str) -> str:
        """A member as this set's element text (a host address without its /32 in a hash set)."""
        if self.kind == "hash:net" and not self.interval:
            return member.rsplit("/", 1)[0]
        return element(self.kind, member)


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
    family: IpFamily = IpFamily.V4

    @property
    def table(self) -> str:
        """The table as nft commands name it: "ip vpcnet" / "ip6 vpcnet"."""
        return f"{self.family.nft_table_family} {TABLE}"


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


def render(state: DesiredState) -> NftRender:
    return print_layout(rule_layout.layout(state), state.ipsets)


def print_layout(layout: Layout, ipsets: Mapping[str, IpSetSpec]) -> NftRender:
    family = layout.family
    printer = _CHAIN_PRINTERS[family]
    chains: dict[str, tuple[str, ...]] = dict(_base_chains(layout.hooks, family))
    maps: dict[str, NftMap] = {}
    for item in layout.items:
        if isinstance(item, Dispatch):
            vmap = DISPATCH_MAPS[item.chain]
            chains[item.chain] = _dispatch_chain(item.chain, item.direction, vmap)
            maps[vmap] = NftMap(vmap, tuple((iface, f"goto {chain}") for iface, chain in item.targets))
        else:
            chains[item.name] = printer(item)
    printer.sweep()
    sets = {name: _nft_set(spec, family) for name, spec in ipsets.items()}
    return NftRender(chains=chains, sets=sets, maps=maps, family=family)


def with_sets(
    render: NftRender, ipsets: Mapping[str, IpSetSpec], before: Mapping[str, IpSetSpec] | None = None
) -> NftRender:
    """render with its sets replaced by ipsets (chains and maps kept): for a state of unchanged rules.
    before: the specs render was made from; a spec that is still the very same object keeps its NftSet."""
    old = render.sets if before is not None else {}
    sets = {
        name: old[name]
        if name in old and before and before.get(name) is spec
        else _nft_set(spec, render.family)
        for name, spec in ipsets.items()
    }
    return NftRender(chains=render.chains, sets=sets, maps=render.maps, family=render.family)


def _nft_set(spec: IpSetSpec, family: IpFamily) -> NftSet:
    # Not cached: a cache by content would keep every past member list of every set (a copy per change);
    # with_sets keeps the unchanged ones by identity instead.
    return NftSet(spec.name, spec.kind, spec.members, family)


@functools.lru_cache(maxsize=8)
def _base_chains(hooks: tuple[rule_layout.Hook, ...], family: IpFamily) -> dict[str, tuple[str, ...]]:
    """Our base chains, holding the hooks inserted into the kernel's chain of the same name. Appended hooks
    are left out: they accept what policy allowed, and a base chain of our own table accepts by policy."""
    rules: dict[str, list[tuple[str, str]]] = {}
    for hook in hooks:
        if hook.position == "insert":
            rules.setdefault(f"filter-{hook.kernel_chain}", []).append(
                (rule_text(hook.rule, family), hook.rule.note)
            )
    return {chain: _finish(chain, chain_rules) for chain, chain_rules in rules.items()}


@functools.cache
def _dispatch_chain(chain: str, direction: str, vmap: str) -> tuple[str, ...]:
    key = "iifname" if direction == "in" else "oifname"
    return _finish(chain, [(f"{key} vmap @{vmap}", ""), ("drop", "unknown interface")])


def print_chain(chain: Chain, family: IpFamily = IpFamily.V4) -> tuple[str, ...]:
    return _finish(chain.name, [line for rule in chain.rules for line in rule_lines(rule, family)])


@functools.lru_cache(maxsize=65536)
def rule_lines(rule: Rule, family: IpFamily) -> tuple[tuple[str, str], ...]:
    """(text, note) of the nft rules for rule: one, except that a rate-limited log is a rule of its own
    (a limit statement ends the rule for the packets over the rate, which must still get the verdict)."""
    first = rule.actions[0]
    if isinstance(first, Nflog) and first.rate and len(rule.actions) > 1:
        rest = Rule(rule.matches, rule.actions[1:], rule.note)
        return ((rule_text(Rule(rule.matches, (first,)), family), ""), *rule_lines(rest, family))
    return ((rule_text(rule, family), rule.note),)


_CHAIN_PRINTERS = {f: IdentityCache(functools.partial(print_chain, family=f)) for f in IpFamily}


@functools.lru_cache(maxsize=65536)
def rule_text(rule: Rule, family: IpFamily) -> str:
    """One nft rule (remembered: every endpoint has the same conntrack and mark rules)."""
    return " ".join([*(_match(m, family) for m in rule.matches), *(_action(a) for a in rule.actions)])


def _not(negated: bool) -> str:
    return "!= " if negated else ""


def _match(match: Match, family: IpFamily) -> str:
    ip = family.nft_address_match
    if isinstance(match, Iface):
        key = "iifname" if match.direction == "in" else "oifname"
        return f'{key} "{match.name}{"*" if match.wildcard else ""}"'
    if isinstance(match, AddrSet):
        return f"{ip} {_address(match.side)} {_not(match.negated)}@{match.set_name}"
    if isinstance(match, SrcNotIn):
        return f"{ip} saddr != {{ {', '.join(match.addresses)} }}"
    if isinstance(match, Protocol):
        name = family.icmp_protocol if match.name == "icmp" else match.name
        return f"meta l4proto {_not(match.negated)}{name}"
    if isinstance(match, Ports):
        return f"th {match.side[0]}port {_not(match.negated)}{{ {_ports_text(match.ranges)} }}"
    if isinstance(match, NamedPorts):
        key = f"{ip} {_address(match.side)} . meta l4proto . th {match.side[0]}port"
        return f"{key} {_not(match.negated)}@{match.set_name}"
    if isinstance(match, Icmp):
        icmp = "icmp" if family is IpFamily.V4 else "icmpv6"
        if not match.negated:
            code = f" {icmp} code {match.code}" if match.code is not None else ""
            return f"{icmp} type {match.type}{code}"
        if match.code is None:
            return f"{icmp} type != {match.type}"
        return f"{icmp} type . {icmp} code != {{ {match.type} . {match.code} }}"
    if isinstance(match, MarkIs):
        return f"meta mark & {match.mask:#010x} == {match.value:#010x}"
    if isinstance(match, CtState):
        return f"ct state {','.join(s for s in _CT_ORDER if s in match.states)}"
    raise TypeError(f"no nft form for match {match!r}")


def _address(side: str) -> str:
    return "saddr" if side == "src" else "daddr"


def _action(action: RuleAction) -> str:
    if isinstance(action, Jump):
        return f"jump {action.chain}"
    if isinstance(action, Goto):
        return f"goto {action.chain}"
    if isinstance(action, Accept):
        return "accept"
    if isinstance(action, Drop):
        return "drop"
    if isinstance(action, Return):
        return "return"
    if isinstance(action, MarkSet):
        return f"meta mark set meta mark | {action.bits:#010x}"
    if isinstance(action, MarkClear):
        return f"meta mark set meta mark & {_FULL & ~action.bits:#010x}"
    if isinstance(action, Log):
        return f'log prefix "{action.prefix}" level {_LOG_LEVELS[action.level]}'
    if isinstance(action, Nflog):
        limit = f"limit rate {action.rate}/second burst {action.rate} packets " if action.rate else ""
        return f'{limit}log prefix "{action.prefix}" group {action.group} snaplen {action.snaplen}'
    raise TypeError(f"no nft form for action {action!r}")


def _ports_text(ranges: Sequence[PortRange]) -> str:
    return ", ".join(str(r.first) if r.first == r.last else f"{r.first}-{r.last}" for r in sorted(ranges))
