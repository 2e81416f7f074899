"""Apply the nftables render as ONE `nft -f -` transaction carrying only what changed.

Like the iptables applier it diffs by rule ids per chain (rewriting a changed chain whole: flush + add),
and set/map elements by content, against what it last applied or, on a resync or after a failure,
against `nft -j list table`. The transaction is atomic, so a set is refilled in place (flush + add) without
a temporary set. Only our table of the applier's family ("ip vpcnet" / "ip6 vpcnet") is ever touched.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from vpcnet.dataplane import names
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.ipset_render import INCREMENTAL_LIMIT, KernelSet
from vpcnet.dataplane.kernel_cmd import CommandRunner
from vpcnet.dataplane.nft_render import (
    BASE_CHAINS,
    TABLE,
    NftMap,
    NftRender,
    NftSet,
    rule_id,
)
from vpcnet.dataplane.policy_state import PROTOCOL_NAMES

_PROTO_BY_NUMBER = {number: name for name, number in PROTOCOL_NAMES.items()}


@dataclass
class NftView:
    exists: bool = False
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: dict[str, KernelSet] = field(default_factory=dict)
    maps: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    intervals: frozenset[str] = frozenset()  # the sets declared with the interval flag


def _member(kind: str, value: Any, family: IpFamily) -> str:
    if isinstance(value, dict) and "elem" in value:
        value = value["elem"].get("val")
    if isinstance(value, str):
        return value if "/" in value or kind != "hash:net" else f"{value}/{family.host_prefixlen}"
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if isinstance(value, dict) and "concat" in value and len(value["concat"]) == 3:
        address, proto, port = value["concat"]
        if isinstance(proto, int):
            proto = _PROTO_BY_NUMBER.get(proto, str(proto))
        return f"{address},{proto}:{port}"
    return json.dumps(value, sort_keys=True)  # something we never write: compares unequal, gets rewritten


def parse_json(text: str, family: IpFamily = IpFamily.V4) -> NftView:
    view = NftView(exists=True)
    rules: dict[str, list[str]] = {}
    intervals: set[str] = set()
    for item in json.loads(text).get("nftables", []):
        if "chain" in item:
            rules.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            comment = str(item["rule"].get("comment", ""))
            rules.setdefault(item["rule"]["chain"], []).append(comment[: len(names.RULE_COMMENT_PREFIX) + 16])
        elif "set" in item:
            data = item["set"]
            kind = "hash:net" if data.get("type") == family.nft_address_type else "hash:ip,port"
            members = frozenset(_member(kind, e, family) for e in data.get("elem", []))
            view.sets[data["name"]] = KernelSet(kind, members)
            if "interval" in data.get("flags", ()):
                intervals.add(data["name"])
        elif "map" in item:
            data = item["map"]
            entries = set()
            for key, verdict in data.get("elem", []):
                (word, target), *_ = verdict.items()
                entries.add((str(key), f"{word} {target.get('target', '')}"))
            view.maps[data["name"]] = frozenset(entries)
    view.chains = {name: tuple(ids) for name, ids in rules.items()}
    view.intervals = frozenset(intervals)
    return view


def _elements(nft_set: NftSet, members: object) -> str:
    assert isinstance(members, (set, frozenset))
    return ", ".join(nft_set.element(m) for m in sorted(members))


def _map_elements(entries: object) -> str:
    assert isinstance(entries, (set, frozenset, tuple, list))
    return ", ".join(f'"{key}" : {verdict}' for key, verdict in sorted(entries))


def plan(desired: NftRender, current: NftView, known: NftRender | None) -> list[str]:
    """The transaction that takes the kernel from current to desired. known: what the last apply sent (its
    unchanged sets and chains are the very same objects, skipped by identity without comparing them)."""
    table = desired.table
    head: list[str] = [] if current.exists else [f"add table {table}"]
    fill: list[str] = []
    tail: list[str] = []
    recreated: list[NftSet] = []  # sets whose declaration changes (hash <-> interval): delete and add again
    # Only the sets that are not the very objects of the last apply are looked at (sorted: a stable text).
    touched = [(n, s) for n, s in desired.sets.items() if known is None or known.sets.get(n) is not s]
    for name, spec in sorted(touched, key=lambda item: item[0]):
        have = current.sets.get(name)
        if have is None:
            head.append(f"add set {table} {name} {{ {spec.declaration} }}")
            if spec.members:
                head.append(f"add element {table} {name} {{ {_elements(spec, spec.members)} }}")
            continue
        if have.kind != spec.kind:
            raise ValueError(f"nft set {name} holds {have.kind} in the kernel, wanted {spec.kind}")
        if (name in current.intervals) != spec.interval:
            recreated.append(spec)
            continue
        adds = spec.members - have.members
        dels = have.members - spec.members
        if len(adds) + len(dels) > INCREMENTAL_LIMIT:
            head.append(f"flush set {table} {name}")
            adds, dels = spec.members, frozenset()
        if dels:
            head.append(f"delete element {table} {name} {{ {_elements(spec, dels)} }}")
        if adds:
            head.append(f"add element {table} {name} {{ {_elements(spec, adds)} }}")
    for name in sorted(desired.maps):
        if name not in current.maps:
            head.append(f"add map {table} {name} {{ {NftMap.declaration} }}")
    # A set in use cannot be deleted: the chains that refer to it are emptied first and refilled after.
    users = _chains_using(desired, {s.name for s in recreated})
    changed: list[str] = []
    for chain, rules in desired.chains.items():
        if known is not None and chain not in users:
            previous = known.chains.get(chain)
            if previous is rules or previous == rules:
                continue
        if chain not in current.chains:
            hook = f" {{ {BASE_CHAINS[chain]} }}" if chain in BASE_CHAINS else ""
            head.append(f"add chain {table} {chain}{hook}")
            changed.append(chain)
        elif chain in users or current.chains[chain] != ids_of(rules):
            changed.append(chain)
    removed_chains = sorted(c for c in current.chains if c not in desired.chains)
    # Map entries after the chains they go to exist, and removed before those chains go.
    for name, nft_map in sorted(desired.maps.items()):
        if known is not None and known.maps.get(name) is nft_map:
            continue
        want = frozenset(nft_map.elements)
        have_entries = current.maps.get(name, frozenset())
        gone = have_entries - want
        if gone:
            fill.append(
                f"delete element {table} {name} {{ {', '.join(sorted(repr_key(k) for k, _ in gone))} }}"
            )
        new = want - have_entries
        if new:
            fill.append(f"add element {table} {name} {{ {_map_elements(new)} }}")
    for chain in changed + removed_chains:
        if chain in current.chains:
            fill.append(f"flush chain {table} {chain}")
    for spec in recreated:
        fill += [f"delete set {table} {spec.name}", f"add set {table} {spec.name} {{ {spec.declaration} }}"]
        if spec.members:
            fill.append(f"add element {table} {spec.name} {{ {_elements(spec, spec.members)} }}")
    for chain in changed:
        fill += [f"add rule {table} {chain} {rule}" for rule in desired.chains[chain]]
    tail += [f"delete chain {table} {chain}" for chain in removed_chains]
    tail += [f"delete set {table} {name}" for name in sorted(current.sets) if name not in desired.sets]
    tail += [f"delete map {table} {name}" for name in sorted(current.maps) if name not in desired.maps]
    return head + fill + tail


def _chains_using(render: NftRender, sets: set[str]) -> set[str]:
    """The chains with a rule that names one of sets (none looked at when sets is empty: the common case)."""
    if not sets:
        return set()
    refs = tuple(f"@{name} " for name in sets)
    return {chain for chain, rules in render.chains.items() if any(r in rule for rule in rules for r in refs)}


def repr_key(key: str) -> str:
    return f'"{key}"'


@functools.lru_cache(maxsize=65536)
def ids_of(rules: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(rule_id(r) for r in rules)


def assumed_view(desired: NftRender) -> NftView:
    return NftView(
        exists=True,
        chains={c: ids_of(rules) for c, rules in desired.chains.items()},
        sets={n: KernelSet(s.kind, s.members) for n, s in desired.sets.items()},
        maps={n: frozenset(m.elements) for n, m in desired.maps.items()},
        intervals=frozenset(n for n, s in desired.sets.items() if s.interval),
    )


def advanced_view(view: NftView, known: NftRender | None, desired: NftRender) -> NftView:
    """The kernel's view once desired is applied over known: only the sets, chains and maps that are not the
    very objects known had are looked at again (a change costs what it touched, not the ruleset's size)."""
    if known is None:
        return assumed_view(desired)
    sets_changed = False
    for name, spec in desired.sets.items():
        if known.sets.get(name) is not spec:
            view.sets[name] = KernelSet(spec.kind, spec.members)
            sets_changed = True
    for chain, rules in desired.chains.items():
        if known.chains.get(chain) is not rules:
            view.chains[chain] = ids_of(rules)
    for name, nft_map in desired.maps.items():
        if known.maps.get(name) is not nft_map:
            view.maps[name] = frozenset(nft_map.elements)
    for part, wanted in ((view.sets, desired.sets), (view.chains, desired.chains), (view.maps, desired.maps)):
        if len(part) != len(wanted):
            for gone in [name for name in part if name not in wanted]:
                del part[gone]
    if sets_changed or len(known.sets) != len(desired.sets):
        view.intervals = frozenset(n for n, s in desired.sets.items() if s.interval)
    view.exists = True
    return view


class NftApplier:
    def __init__(self, runner: CommandRunner, family: IpFamily = IpFamily.V4) -> None:
        self._runner = runner
        self.family = family
        self._known: NftRender | None = None
        self._view: NftView | None = None
        self.bytes_sent = 0
        self.transactions = 0
        self.last_input = b""

    def forget(self) -> None:
        self._known = None
        self._view = None

    async def read_kernel(self) -> NftView:
        result = await self._runner.run(["nft", "-j", "list", "table", self.family.nft_table_family, TABLE])
        if result.returncode != 0:
            if b"No such file or directory" in result.stderr:
                return NftView(exists=False)
            result.check()
        return parse_json(result.stdout.decode(), self.family)

    async def apply(self, desired: NftRender) -> int:
        if desired.family is not self.family:
            raise ValueError(
                f"an IPv{desired.family.value} render given to the IPv{self.family.value} nft applier"
            )
        if self._view is None:
            self._view = await self.read_kernel()
            self._known = None
        lines = plan(desired, self._view, self._known)
        data = b""
        if lines:
            data = ("\n".join(lines) + "\n").encode()
            try:
                (await self._runner.run(["nft", "-f", "-"], data)).check(data)
            except Exception:
                self.forget()
                raise
            self.bytes_sent += len(data)
            self.transactions += 1
            self.last_input = data
        self._view = advanced_view(self._view, self._known, desired)
        self._known = desired  # renders are never changed once made: kept as it is, not copied
        return len(data)

    async def remove_all(self) -> None:
        view = await self.read_kernel()
        if view.exists:
            (await self._runner.run(["nft", "delete", "table", self.family.nft_table_family, TABLE])).check()
        self.forget()
