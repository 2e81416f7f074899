"""The active rules calculator (felix's calc/active_rules_calculator.go).

It knows every policy and which local endpoints each one selects, per direction. A policy that selects
at least one local endpoint is active: its chains are rendered (by the rule scanner) and the sets its
rules use are acquired; when it stops selecting any, they are released. A policy change is matched
against the local endpoints only; a local endpoint's change against the policies that can select a
pod of its namespace only. Per-node work so scales with the node's active policy, not the cluster's.
"""

from __future__ import annotations

from collections.abc import Iterable

from vpcnet.dataplane.calc.ipsets import IpSetCalculator
from vpcnet.dataplane.calc.labelindex import pinned_namespace
from vpcnet.dataplane.calc.rulescan import DIRECTIONS, MODEL_DIRECTION, scan_policy
from vpcnet.dataplane.policy_state import Direction, PolicyChainSpec
from vpcnet.policy.model import Policy


def selects(policy: Policy, direction: Direction, labels: dict[str, str]) -> bool:
    """Whether policy applies to an endpoint with these labels in direction."""
    return (
        policy.applies_to_pods
        and MODEL_DIRECTION[direction] in policy.types
        and policy.selector.matches(labels)
    )


class ActiveRules:
    def __init__(self, ipsets: IpSetCalculator) -> None:
        self.ipsets = ipsets
        self.policies: dict[str, Policy] = {}  # by policy id
        self.chains: dict[tuple[str, Direction], PolicyChainSpec] = {}  # of the active policies
        self.changed = False  # set on every change of `chains`; the caller clears it
        self._by_pin: dict[str | None, set[str]] = {}  # by the namespace their selector pins
        self._selected: dict[tuple[str, Direction], set[str]] = {}  # (endpoint, direction) -> policy ids
        self._active: dict[str, tuple[str, ...]] = {}  # active policy id -> names of the sets it uses

    def selected(self, ref: str, direction: Direction) -> list[Policy]:
        """The policies that select local endpoint ref in direction (unordered)."""
        return [self.policies[pid] for pid in self._selected.get((ref, direction), ())]

    # ------------------------------------------------------------------ policies

    def put_policy(self, policy: Policy, local: dict[str, dict[str, str]]) -> set[str]:
        """A policy added or changed; local: the local endpoints' labels by ref. Returns the endpoints
        whose selected policies changed (or whose policy's content did)."""
        pid = policy.id
        if self.policies.get(pid) == policy:
            return set()
        was_active = pid in self._active
        if was_active:
            self._deactivate(pid)  # its rules may have changed: scanned again below
        self._forget(pid)
        self.policies[pid] = policy
        self._by_pin.setdefault(pinned_namespace(policy.selector), set()).add(pid)
        touched = set()
        for ref, labels in local.items():
            for d in DIRECTIONS:
                chosen = self._selected.setdefault((ref, d), set())
                wanted = selects(policy, d, labels)
                if wanted != (pid in chosen) or (wanted and was_active):
                    (chosen.add if wanted else chosen.discard)(pid)
                    touched.add(ref)
        self._recount()
        return touched

    def remove_policy(self, pid: str) -> set[str]:
        if pid not in self.policies:
            return set()
        self._forget(pid)
        del self.policies[pid]
        touched = set()
        for (ref, _), chosen in self._selected.items():
            if pid in chosen:
                chosen.discard(pid)
                touched.add(ref)
        self._recount()
        return touched

    def _forget(self, pid: str) -> None:
        old = self.policies.get(pid)
        if old is not None:
            self._by_pin.get(pinned_namespace(old.selector), set()).discard(pid)

    # ------------------------------------------------------------------ local endpoints

    def put_endpoint(self, ref: str, labels: dict[str, str]) -> None:
        """A local endpoint appeared or changed: choose its policies again."""
        namespace = ref.split("/", 1)[0]
        candidates = self._by_pin.get(namespace, set()) | self._by_pin.get(None, set())
        for d in DIRECTIONS:
            self._selected[(ref, d)] = {pid for pid in candidates if selects(self.policies[pid], d, labels)}
        self._recount()

    def remove_endpoint(self, ref: str) -> None:
        for d in DIRECTIONS:
            self._selected.pop((ref, d), None)
        self._recount()

    # ------------------------------------------------------------------ activity

    def _recount(self) -> None:
        wanted = {pid for chosen in self._selected.values() for pid in chosen}
        for pid in [p for p in self._active if p not in wanted]:
            self._deactivate(pid)
        for pid in sorted(wanted - self._active.keys()):
            self._activate(pid)

    def _activate(self, pid: str) -> None:
        scanned = scan_policy(self.policies[pid], self.ipsets.index.family)
        for d, chain in scanned.chains.items():
            self.chains[(pid, d)] = chain
        for request in scanned.sets:
            self.ipsets.acquire(request)
        self._active[pid] = tuple(r.name for r in scanned.sets)
        self.changed = True

    def _deactivate(self, pid: str) -> None:
        for d in DIRECTIONS:
            self.chains.pop((pid, d), None)
        for name in self._active.pop(pid):
            self.ipsets.release(name)
        self.changed = True

    @property
    def active(self) -> Iterable[str]:
        return self._active.keys()
