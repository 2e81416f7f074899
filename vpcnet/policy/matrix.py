"""Reachability between every pair of pods for one protocol and port, computed with bitsets.

Every pod gets an index; a set of pods is a Python int. Selectors are evaluated over a label index
(label -> value -> pods) instead of pod by pod, nets over pods sorted by address, named ports from a
per-pod table; each rule side becomes one bitset per matrix. Then, per pod and direction, the
tiers are walked once with bitset arithmetic (the same algorithm as vpcnet.policy.evaluate.decide,
applied to all peers at once): ingress gives, per destination, the set of sources allowed; egress,
per source, the set of destinations allowed; the matrix is egress AND transposed ingress.

The per-flow evaluator is the reference; tests check that both agree on every cell.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from vpcnet.api.core import Pod
from vpcnet.api.selector import All, And, Compare, Global, Has, InSet, Node, Not, Or, Selector
from vpcnet.policy.calc import group_by_tier
from vpcnet.policy.model import (
    PORT_PROTOCOL_NAMES,
    Action,
    Direction,
    EndpointMatch,
    IPNetwork,
    NamedPort,
    Policy,
    PortMatch,
    Rule,
)
from vpcnet.policy.state import ClusterState


@dataclass(frozen=True)
class ReachabilityMatrix:
    refs: tuple[str, ...]  # "<ns>/<pod>", sorted
    rows: tuple[int, ...]  # rows[s] has bit d set when refs[s] can reach refs[d]
    port: int
    protocol: int

    def allowed(self, src: str, dst: str) -> bool:
        s, d = self.refs.index(src), self.refs.index(dst)
        return bool(self.rows[s] >> d & 1)

    def to_dict(self) -> dict[str, dict[str, bool]]:
        n = len(self.refs)
        out: dict[str, dict[str, bool]] = {}
        for ref, row in zip(self.refs, self.rows, strict=True):
            bits = format(row, f"0{n}b")[::-1] if n else ""
            out[ref] = {dst: bit == "1" for dst, bit in zip(self.refs, bits, strict=True)}
        return out

    def count_allowed(self) -> int:
        return sum(row.bit_count() for row in self.rows)


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class PodIndex:
    """Bitset views of the pods of a state: by label, by address, by named port."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.pods: list[Pod] = list(state.pods)
        self.n = len(self.pods)
        self.all = (1 << self.n) - 1
        self.by_label: dict[str, dict[str, int]] = {}
        self.has_label: dict[str, int] = {}
        for i, pod in enumerate(self.pods):
            bit = 1 << i
            for k, v in state.endpoint_labels(pod).items():
                values = self.by_label.setdefault(k, {})
                values[v] = values.get(v, 0) | bit
        for k, values in self.by_label.items():
            acc = 0
            for b in values.values():
                acc |= b
            self.has_label[k] = acc
        # Pods sorted by (version, address) so that a CIDR is a contiguous slice. A flow uses a pod's
        # primary address (status.podIP), as the per-flow evaluator does.
        addressed = []
        for i, pod in enumerate(self.pods):
            if pod.pod_ip:
                addr = ipaddress.ip_address(pod.pod_ip)
                addressed.append(((addr.version, int(addr)), i))
        addressed.sort()
        self._addr_keys = [k for k, _ in addressed]
        self._addr_pods = [i for _, i in addressed]
        self.version_bits = {
            4: self._range_bits((4, 0), (4, 2**32 - 1)),
            6: self._range_bits((6, 0), (6, 2**128 - 1)),
        }
        self.named: list[dict[tuple[str, str], int]] = []
        for pod in self.pods:
            table: dict[tuple[str, str], int] = {}
            for c in pod.containers:
                for p in c.ports:
                    if p.name is not None:
                        table.setdefault((p.name, p.protocol), p.container_port)
            self.named.append(table)
        self._sel_cache: dict[str, int] = {}
        self._net_cache: dict[IPNetwork, int] = {}
        self._named_cache: dict[tuple[str, str, int], int] = {}

    def _range_bits(self, lo: tuple[int, int], hi: tuple[int, int]) -> int:
        start = bisect.bisect_left(self._addr_keys, lo)
        end = bisect.bisect_right(self._addr_keys, hi)
        acc = 0
        for j in range(start, end):
            acc |= 1 << self._addr_pods[j]
        return acc

    def net_bits(self, net: IPNetwork) -> int:
        cached = self._net_cache.get(net)
        if cached is None:
            first = (net.version, int(net.network_address))
            last = (net.version, int(net.broadcast_address))
            cached = self._net_cache[net] = self._range_bits(first, last)
        return cached

    def nets_bits(self, nets: tuple[IPNetwork, ...]) -> int:
        acc = 0
        for net in nets:
            acc |= self.net_bits(net)
        return acc

    def selector_bits(self, sel: Selector) -> int:
        """Pods matching by labels, plus pods whose address lies in a matching network set."""
        key = sel.canonical
        cached = self._sel_cache.get(key)
        if cached is None:
            cached = self._node_bits(sel.root)
            for ns in self.state.network_sets:
                if sel.matches(ns.labels):
                    cached |= self.nets_bits(ns.nets)
            self._sel_cache[key] = cached
        return cached

    def label_bits(self, sel: Selector) -> int:
        """Pods matching by labels only (which pods a policy applies to)."""
        return self._node_bits(sel.root)

    def _node_bits(self, node: Node) -> int:
        if isinstance(node, All | Global):
            return self.all
        if isinstance(node, Has):
            return self.has_label.get(node.label, 0)
        if isinstance(node, Compare):
            values = self.by_label.get(node.label, {})
            if node.op == "==":
                return values.get(node.value, 0)
            if node.op == "!=":
                return self.all & ~values.get(node.value, 0)
            acc = 0
            for value, bits in values.items():
                if (
                    (node.op == "contains" and node.value in value)
                    or (node.op == "starts with" and value.startswith(node.value))
                    or (node.op == "ends with" and value.endswith(node.value))
                ):
                    acc |= bits
            return acc
        if isinstance(node, InSet):
            values = self.by_label.get(node.label, {})
            acc = 0
            for v in node.values:
                acc |= values.get(v, 0)
            return self.all & ~acc if node.negated else acc
        if isinstance(node, Not):
            return self.all & ~self._node_bits(node.operand)
        if isinstance(node, And):
            acc = self.all
            for op in node.operands:
                acc &= self._node_bits(op)
                if not acc:
                    break
            return acc
        if isinstance(node, Or):
            acc = 0
            for op in node.operands:
                acc |= self._node_bits(op)
            return acc
        raise TypeError(f"unknown selector node {node!r}")

    def named_port_bits(self, name: str, protocol: str, port: int) -> int:
        key = (name, protocol, port)
        cached = self._named_cache.get(key)
        if cached is None:
            acc = 0
            for i, table in enumerate(self.named):
                if table.get((name, protocol)) == port:
                    acc |= 1 << i
            cached = self._named_cache[key] = acc
        return cached


class _MatrixCalc:
    def __init__(self, index: PodIndex, protocol: int, port: int) -> None:
        self.ix = index
        self.protocol = protocol
        self.port = port
        self.proto_name = PORT_PROTOCOL_NAMES.get(protocol)
        self._rule_cache: dict[int, tuple[int, int]] = {}

    def ports_bits(self, ports: tuple[PortMatch, ...], port: int | None) -> int:
        if port is None:
            return 0
        acc = 0
        for p in ports:
            if isinstance(p, NamedPort):
                if self.proto_name is not None:
                    acc |= self.ix.named_port_bits(p.name, self.proto_name, port)
            elif p.first <= port <= p.last:
                return self.ix.all
        return acc

    def side_bits(self, match: EndpointMatch, port: int | None) -> int:
        ix = self.ix
        bits = ix.all
        if match.selector is not None:
            bits &= ix.selector_bits(match.selector)
        if match.not_selector is not None:
            bits &= ~ix.selector_bits(match.not_selector)
        if match.nets:
            bits &= ix.nets_bits(match.nets)
        if match.not_nets:
            bits &= ~ix.nets_bits(match.not_nets)
        if match.ports:
            bits &= self.ports_bits(match.ports, port)
        if match.not_ports and port is not None:
            bits &= ~self.ports_bits(match.not_ports, port)
        return bits & ix.all

    def rule_bits(self, rule: Rule) -> tuple[int, int]:
        """(sources, destinations) the rule matches for this protocol/port; (0, 0) if it cannot match."""
        cached = self._rule_cache.get(id(rule))
        if cached is not None:
            return cached
        result = (0, 0)
        static_ok = (
            (rule.protocol is None or rule.protocol == self.protocol)
            and (rule.not_protocol is None or rule.not_protocol != self.protocol)
            and rule.icmp is None  # reachability flows carry no ICMP type
        )
        if static_ok:
            src = self.side_bits(rule.source, None)
            dst = self.side_bits(rule.destination, self.port)
            if rule.ip_version is not None:
                family = self.ix.version_bits[rule.ip_version]
                src &= family
                dst &= family
            result = (src, dst)
        self._rule_cache[id(rule)] = result
        return result

    def direction_row(
        self, target: int, tiers: list[tuple[str, Action, list[Policy]]], direction: Direction
    ) -> int:
        """Peers allowed in `direction` at pod `target` (sources for ingress, destinations for egress)."""
        if not tiers:
            return self.ix.all
        tbit = 1 << target
        undecided = self.ix.all
        allowed = 0
        ingress = direction is Direction.INGRESS
        for _name, default_action, policies in tiers:
            pending = undecided
            for policy in policies:
                if not pending:
                    break
                for rule in policy.rules(direction):
                    src, dst = self.rule_bits(rule)
                    target_bits, peer_bits = (dst, src) if ingress else (src, dst)
                    if not target_bits & tbit:
                        continue
                    m = peer_bits & pending
                    if not m:
                        continue
                    action = rule.action
                    if action is Action.LOG:
                        continue
                    pending &= ~m
                    if action is Action.ALLOW:
                        allowed |= m
                        undecided &= ~m
                    elif action is Action.DENY:
                        undecided &= ~m
                    # PASS: leaves the tier, stays undecided for the next one
            if default_action is Action.DENY:
                undecided &= ~pending
        return allowed | undecided


def reachability(
    state: ClusterState, port: int, protocol: int, index: PodIndex | None = None
) -> ReachabilityMatrix:
    """The full matrix for one destination port and protocol (IANA number)."""
    ix = index if index is not None else PodIndex(state)
    calc = _MatrixCalc(ix, protocol, port)
    per_pod: dict[Direction, list[list[Policy]]] = {d: [[] for _ in range(ix.n)] for d in Direction}
    ordered = sorted(
        (p for p in state.policies if p.applies_to_pods),
        key=lambda p: (state.tiers[p.tier].sort_key, p.sort_key),
    )
    for policy in ordered:
        members = ix.label_bits(policy.selector)
        if not members:
            continue
        for direction in policy.types:
            lists = per_pod[direction]
            for i in _bits(members):
                lists[i].append(policy)
    rows: dict[Direction, list[int]] = {}
    for direction in Direction:
        out: list[int] = []
        for i in range(ix.n):
            policies = per_pod[direction][i]
            tiers = (
                [
                    (t.tier.name, t.tier.default_action, list(t.policies))
                    for t in group_by_tier(state, policies)
                ]
                if policies
                else []
            )
            out.append(calc.direction_row(i, tiers, direction))
        rows[direction] = out
    allowed_in = _transpose(rows[Direction.INGRESS], ix.n)
    final = tuple(e & i for e, i in zip(rows[Direction.EGRESS], allowed_in, strict=True))
    return ReachabilityMatrix(tuple(p.ref for p in ix.pods), final, port, protocol)


def _transpose(rows: list[int], n: int) -> list[int]:
    """rows[d] bit s -> out[s] bit d."""
    if n == 0:
        return []
    strings = [format(r, f"0{n}b")[::-1] for r in rows]  # char s of strings[d] = bit s
    return [int("".join(col)[::-1], 2) for col in zip(*strings, strict=True)]
