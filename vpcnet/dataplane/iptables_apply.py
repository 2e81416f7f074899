"""Apply the filter-table render with ONE `iptables-restore --noflush` carrying only what changed.

What is compared is the rule ids ("vpcn:<hash>" comments) per chain: against what we last applied, or,
on a resync (and after any failure), against what `iptables-save` shows. A chain whose ids differ is
rewritten whole (declaring it under --noflush flushes it); chains of ours that are no longer wanted are
flushed and deleted; our hooks in FORWARD/INPUT are inserted or appended if missing and de-duplicated.
Nothing else in the table is touched: others' chains and rules (the CNI's, kube-proxy's) are never flushed.
The family picks the tools: iptables-save/-restore for IPv4, ip6tables-save/-restore for IPv6.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from vpcnet.dataplane import names
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.iptables_render import FilterRender, Hook
from vpcnet.dataplane.kernel_cmd import CommandRunner

_ID_RE = re.compile(r'--comment "?(' + re.escape(names.RULE_COMMENT_PREFIX) + r"[0-9a-f]{16})")
_ID_START = len('-m comment --comment "')
_ID_END = _ID_START + len(names.RULE_COMMENT_PREFIX) + 16
RESTORE_OPTIONS = ["--noflush", "--wait", "10", "--wait-interval", "50000"]


def restore_argv(family: IpFamily = IpFamily.V4) -> list[str]:
    return [family.iptables_restore, *RESTORE_OPTIONS]


@dataclass
class TableView:
    """Rule ids per chain of ours, and per kernel chain our hook ids by position (None: not ours)."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    builtin: dict[str, list[str | None]] = field(default_factory=dict)


def rule_id(rule: str) -> str:
    return rule[_ID_START:_ID_END]


@functools.lru_cache(maxsize=65536)
def ids_of(rules: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(rule[_ID_START:_ID_END] for rule in rules)


def parse_save(text: str, chain_prefix: str = names.CHAIN_PREFIX) -> TableView:
    view = TableView()
    ours: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            if name.startswith(chain_prefix):
                ours[name] = []
            else:
                view.builtin.setdefault(name, [])
        elif line.startswith("-A "):
            name = line[3:].split(" ", 1)[0]
            found = _ID_RE.search(line)
            if name in ours:
                ours[name].append(found.group(1) if found else "")
            else:
                view.builtin.setdefault(name, []).append(found.group(1) if found else None)
    view.chains = {name: tuple(ids) for name, ids in ours.items()}
    return view


def plan(desired: FilterRender, current: TableView, known: Mapping[str, tuple[str, ...]] | None) -> list[str]:
    """The restore lines (without *filter/COMMIT); empty when the kernel already matches.

    known: the rule tuples we last applied (compared by identity first, which makes an idle apply cheap);
    None when the comparison must be against current (the kernel's ids).
    """
    changed: list[str] = []
    for chain, rules in desired.chains.items():
        if known is not None:
            previous = known.get(chain)
            if previous is rules or previous == rules:
                continue
        if current.chains.get(chain) != ids_of(rules):
            changed.append(chain)
    removed = sorted(c for c in current.chains if c not in desired.chains)
    lines = [f":{chain} - [0:0]" for chain in changed + removed]
    for chain in changed:
        lines += [f"-A {chain} {rule}" for rule in desired.chains[chain]]
    lines += _hook_lines(desired.hooks, current)
    lines += [f"-X {chain}" for chain in removed]
    return lines


def _hook_lines(hooks: tuple[Hook, ...], current: TableView) -> list[str]:
    """Our hooks where they belong: an "insert" hook at the very top of its chain (the k-th insert hook of
    a chain at position k), as felix keeps its own: a rule someone puts above it (kube-proxy prepends
    its jumps, and its KUBE-FORWARD accepts marked packets) would decide before policy. The hook moves
    back to the top (deleted and inserted again); the other rule stays where it is."""
    deletes: list[tuple[str, int]] = []
    adds: list[str] = []
    inserted: dict[str, int] = {}
    for hook in hooks:
        wanted = rule_id(hook.rule)
        positions = [i + 1 for i, rid in enumerate(current.builtin.get(hook.chain, [])) if rid == wanted]
        if hook.position == "insert":
            top = inserted[hook.chain] = inserted.get(hook.chain, 0) + 1
            if positions and positions[0] != top:
                deletes += [(hook.chain, p) for p in positions]
                positions = []
            if not positions:
                adds.append(f"-I {hook.chain} {top} {hook.rule}")
            else:
                deletes += [(hook.chain, p) for p in positions[1:]]
        elif not positions:
            adds.append(f"-A {hook.chain} {hook.rule}")
        else:
            deletes += [(hook.chain, p) for p in positions[:-1]]
    # Our own ids that are no longer wanted in kernel chains (e.g. a hook from an older layout).
    wanted_ids = {rule_id(h.rule) for h in hooks}
    for chain, ids in current.builtin.items():
        deletes += [(chain, i + 1) for i, rid in enumerate(ids) if rid is not None and rid not in wanted_ids]
    # Delete from the bottom up so earlier positions stay valid.
    lines = [f"-D {chain} {pos}" for chain, pos in sorted(set(deletes), key=lambda d: (d[0], -d[1]))]
    return lines + adds


def assumed_view(desired: FilterRender) -> TableView:
    """What the kernel holds right after desired was applied."""
    view = TableView(chains={c: ids_of(r) for c, r in desired.chains.items()})
    for hook in desired.hooks:
        view.builtin.setdefault(hook.chain, []).append(rule_id(hook.rule))
    return view


class IptablesApplier:
    def __init__(self, runner: CommandRunner, table: str = "filter", family: IpFamily = IpFamily.V4) -> None:
        self._runner = runner
        self._table = table
        self.family = family
        self._restore_argv = restore_argv(family)
        self._known: dict[str, tuple[str, ...]] | None = None
        self._view: TableView | None = None
        self.bytes_sent = 0
        self.restores = 0
        self.last_input = b""

    def forget(self) -> None:
        self._known = None
        self._view = None

    async def read_kernel(self) -> TableView:
        result = (await self._runner.run([self.family.iptables_save, "-t", self._table])).check()
        return parse_save(result.stdout.decode())

    async def apply(self, desired: FilterRender) -> int:
        """Make the kernel match desired; returns bytes sent (0 when nothing had to change)."""
        if desired.family is not self.family:
            raise ValueError(
                f"an IPv{desired.family.value} render given to the IPv{self.family.value} applier"
            )
        if self._view is None:
            self._view = await self.read_kernel()
            self._known = None
        lines = plan(desired, self._view, self._known)
        if lines:
            data = ("\n".join([f"*{self._table}", *lines, "COMMIT"]) + "\n").encode()
            try:
                (await self._runner.run(self._restore_argv, data)).check(data)
            except Exception:
                self.forget()
                raise
            self.bytes_sent += len(data)
            self.restores += 1
            self.last_input = data
        else:
            data = b""
        self._known = dict(desired.chains)
        self._view = assumed_view(desired)
        return len(data)

    async def remove_all(self) -> None:
        """Take our hooks and chains out of the table (switching backend, or uninstall)."""
        view = await self.read_kernel()
        lines = _hook_lines((), view)
        lines += [f":{chain} - [0:0]" for chain in sorted(view.chains)]
        lines += [f"-X {chain}" for chain in sorted(view.chains)]
        if lines:
            data = ("\n".join([f"*{self._table}", *lines, "COMMIT"]) + "\n").encode()
            (await self._runner.run(self._restore_argv, data)).check(data)
        self.forget()
