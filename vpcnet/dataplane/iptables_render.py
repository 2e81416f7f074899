"""Print the rule layout (rule_layout) as filter-table chains for iptables-restore / ip6tables-restore (pure).

The hooks go into the kernel's FORWARD and INPUT chains; a Dispatch becomes one goto per known interface,
binned by the character after the prefix into child chains (vpcn-fd-* / vpcn-td-*) so a packet walks a
few short chains instead of one long one. Where iptables cannot say a rule in one line it prints several:
a mark set followed by RETURN is two rules (the second tests the bits just set); a source that must be
none of several addresses uses the scratch mark bit; more ports than one multiport match holds are split.

Every rule carries a comment "vpcn:<16 chars>" hashed from its chain and text, so the applier compares what
the kernel holds by these ids instead of the kernel's normalised rendering.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vpcnet.dataplane import names, rule_layout
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_state import MARK_SCRATCH, DesiredState, PortRange
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
    NamedPorts,
    Nflog,
    Ports,
    Protocol,
    Return,
    Rule,
    RuleAction,
    SrcNotIn,
)

MULTIPORT_SLOTS = 15  # a range takes two
# The order iptables-save prints conntrack states in.
_CT_ORDER = ("invalid", "new", "related", "established", "untracked")


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
    family: IpFamily = IpFamily.V4


def with_id(chain: str, rule: str, note: str = "") -> str:
    """The rule with its id comment in front (and an optional human note inside the same comment)."""
    comment = names.rule_comment(chain, rule)
    if note:
        comment = f"{comment} {note}"
    return f'-m comment --comment "{comment}" {rule}'.rstrip()


def _finish(chain: str, rules: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(with_id(chain, rule, note) for rule, note in rules)


def render(state: DesiredState) -> FilterRender:
    return print_layout(rule_layout.layout(state))


def print_layout(layout: Layout) -> FilterRender:
    printer = _CHAIN_PRINTERS[layout.family]
    chains: dict[str, tuple[str, ...]] = {}
    for item in layout.items:
        if isinstance(item, Dispatch):
            chains.update(dispatch_chains(item))
        else:
            chains[item.name] = printer(item)
    printer.sweep()
    return FilterRender(chains=chains, hooks=hooks(layout.hooks, layout.family), family=layout.family)


@functools.lru_cache(maxsize=8)
def hooks(layout_hooks: tuple[rule_layout.Hook, ...], family: IpFamily) -> tuple[Hook, ...]:
    printed = []
    for hook in layout_hooks:
        ((text, note),) = rule_lines(hook.rule, family)
        printed.append(Hook(hook.kernel_chain, hook.position, with_id(hook.kernel_chain, text, note)))
    return tuple(printed)


def print_chain(chain: Chain, family: IpFamily = IpFamily.V4) -> tuple[str, ...]:
    return _finish(chain.name, [line for rule in chain.rules for line in rule_lines(rule, family)])


_CHAIN_PRINTERS = {f: IdentityCache(functools.partial(print_chain, family=f)) for f in IpFamily}


# ------------------------------------------------------------------------------------------------ dispatch


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
def dispatch_chains(item: Dispatch) -> dict[str, tuple[str, ...]]:
    """The dispatch chain and its children; every one ends in a drop for interfaces we do not know."""
    flag = "-i" if item.direction == "in" else "-o"
    target = dict(item.targets)
    unknown = ("-j DROP", "unknown interface")
    chains: dict[str, tuple[str, ...]] = {}
    root_rules: list[tuple[str, str]] = []
    for stem, members in sorted(dispatch_bins([i for i, _ in item.targets], item.prefixes).items()):
        if len(members) == 1:
            root_rules.append((f"{flag} {members[0]} -g {target[members[0]]}", ""))
            continue
        child = names.dispatch_child_chain(item.chain, stem)
        root_rules.append((f"{flag} {stem}+ -g {child}", ""))
        chains[child] = _child_dispatch(child, flag, tuple((m, target[m]) for m in members))
    chains[item.chain] = _finish(item.chain, [*root_rules, unknown])
    return chains


@functools.lru_cache(maxsize=4096)
def _child_dispatch(child: str, flag: str, members: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    rules = [(f"{flag} {iface} -g {chain}", "") for iface, chain in members]
    return _finish(child, [*rules, ("-j DROP", "unknown interface")])


# ------------------------------------------------------------------------------------------------ rules


@functools.lru_cache(maxsize=65536)
def rule_lines(rule: Rule, family: IpFamily) -> tuple[tuple[str, str], ...]:
    """(text, note) of the iptables rules that together do what rule does (rules repeat across chains:
    every endpoint has the same conntrack and mark rules, so they are printed once)."""
    split = _split(rule, family)
    if split is not None:
        return split
    matches = [_MATCHES[type(m)](m, family) for m in rule.matches]
    if isinstance(rule.actions[0], Nflog) and len(rule.actions) > 1:
        # NFLOG goes on to the next rule: the same matches again for what follows it.
        rest = Rule(rule.matches, rule.actions[1:], rule.note)
        return ((" ".join([*matches, _action(rule.actions[0])]), ""), *rule_lines(rest, family))
    last = len(rule.actions) - 1
    lines = [(" ".join([*matches, _action(rule.actions[0])]), rule.note if last == 0 else "")]
    for index in range(1, last + 1):
        # One target per rule: what follows a mark set runs when the bits it set are there.
        previous, action = rule.actions[index - 1], rule.actions[index]
        if not isinstance(previous, MarkSet):
            raise ValueError(f"iptables cannot follow {previous} with {action} in one rule")
        guard = _mark_is(MarkIs(previous.bits, previous.bits), family)
        lines.append((f"{guard} {_action(action)}", rule.note if index == last else ""))
    return tuple(lines)


def _split(rule: Rule, family: IpFamily) -> tuple[tuple[str, str], ...] | None:
    """The rules for a rule iptables cannot say in one; None when it can."""
    for index, match in enumerate(rule.matches):
        before, after = rule.matches[:index], rule.matches[index + 1 :]
        if type(match) is SrcNotIn and len(match.addresses) > 1:
            # No anonymous sets: mark the packet when its source is one of them, then test the mark.
            lines = [(_action(MarkClear(MARK_SCRATCH)), "")]
            lines += [(f"-s {a} {_action(MarkSet(MARK_SCRATCH))}", "") for a in match.addresses]
            guarded = Rule((*before, *after, MarkIs(0, MARK_SCRATCH)), rule.actions, rule.note)
            return (*lines, *rule_lines(guarded, family))
        if type(match) is Ports and not match.negated and len(chunks := _port_chunks(match.ranges)) > 1:
            # Alternatives: one rule per multiport chunk.
            parts = [
                Rule((*before, Ports(match.side, tuple(c)), *after), rule.actions, rule.note) for c in chunks
            ]
            return tuple(line for part in parts for line in rule_lines(part, family))
    return None


def _not(negated: bool) -> str:
    return "! " if negated else ""


def _iface(match: Iface, family: IpFamily) -> str:
    return f"{'-i' if match.direction == 'in' else '-o'} {match.name}{'+' if match.wildcard else ''}"


def _addr_set(match: AddrSet, family: IpFamily) -> str:
    return f"-m set {_not(match.negated)}--match-set {match.set_name} {match.side}"


def _src_not_in(match: SrcNotIn, family: IpFamily) -> str:
    (address,) = match.addresses  # several are split into rules by _split
    return f"! -s {address}"


def _protocol(match: Protocol, family: IpFamily) -> str:
    name = family.icmp_protocol if match.name == "icmp" else match.name
    return f"{_not(match.negated)}-p {name}"


def _ports(match: Ports, family: IpFamily) -> str:
    option = "--sports" if match.side == "src" else "--dports"
    chunks = _port_chunks(match.ranges)  # several AND-ed when negated (positive ones are split by _split)
    return " ".join(f"-m multiport {_not(match.negated)}{option} {_port_text(c)}" for c in chunks)


def _named_ports(match: NamedPorts, family: IpFamily) -> str:
    return f"-m set {_not(match.negated)}--match-set {match.set_name} {match.side},{match.side}"


def _icmp(match: Icmp, family: IpFamily) -> str:
    code = f"/{match.code}" if match.code is not None else ""
    if family is IpFamily.V4:
        return f"-m icmp {_not(match.negated)}--icmp-type {match.type}{code}"
    return f"-m icmp6 {_not(match.negated)}--icmpv6-type {match.type}{code}"


def _mark_is(match: MarkIs, family: IpFamily) -> str:
    return f"-m mark --mark {match.value:#x}/{match.mask:#x}"


def _ct_state(match: CtState, family: IpFamily) -> str:
    return f"-m conntrack --ctstate {','.join(s.upper() for s in _CT_ORDER if s in match.states)}"


_MATCHES: dict[type, Callable[[Any, IpFamily], str]] = {
    Iface: _iface,
    AddrSet: _addr_set,
    SrcNotIn: _src_not_in,
    Protocol: _protocol,
    Ports: _ports,
    NamedPorts: _named_ports,
    Icmp: _icmp,
    MarkIs: _mark_is,
    CtState: _ct_state,
}


def _action(action: RuleAction) -> str:
    if isinstance(action, Jump):
        return f"-j {action.chain}"
    if isinstance(action, Goto):
        return f"-g {action.chain}"
    if isinstance(action, Accept):
        return "-j ACCEPT"
    if isinstance(action, Drop):
        return "-j DROP"
    if isinstance(action, Return):
        return "-j RETURN"
    if isinstance(action, MarkSet):
        return f"-j MARK --set-xmark {action.bits:#x}/{action.bits:#x}"
    if isinstance(action, MarkClear):
        return f"-j MARK --set-xmark {0:#x}/{action.bits:#x}"
    if isinstance(action, Log):
        return f'-j LOG --log-prefix "{action.prefix}" --log-level {action.level}'
    if isinstance(action, Nflog):
        limit = f"-m limit --limit {action.rate}/second --limit-burst {action.rate} " if action.rate else ""
        return (
            f'{limit}-j NFLOG --nflog-group {action.group} --nflog-prefix "{action.prefix}"'
            f" --nflog-size {action.snaplen}"
        )
    raise TypeError(f"no iptables form for action {action!r}")


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
