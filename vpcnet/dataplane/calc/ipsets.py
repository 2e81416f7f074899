"""Members of the sets that active rules use (felix's ipset member calculation).

A set exists while at least one active policy uses it (`acquire` / `release`, counted). A selector set
holds the /32s of the pods its selector matches and the CIDRs of the network sets it matches; a named
port set holds "ip,proto:port" of the matching pods that name that port; a CIDR set is fixed. A pod
change moves its addresses in or out of each set once (`pod_changed`), testing only the selectors
that can match a pod of its namespace; a newly used selector scans the pods once.
"""

from __future__ import annotations

from vpcnet.api.selector import Selector
from vpcnet.dataplane.calc.labelindex import LabelIndex, PodEntry, pinned_namespace
from vpcnet.dataplane.calc.rulescan import (
    PORT_PROTOCOL_TEXT,
    PROTOCOL_NAMES,
    CidrSet,
    NamedPortSet,
    SelectorSet,
    SetRequest,
)
from vpcnet.dataplane.policy_state import IpSetSpec, canonical_nets


def named_port_members(entry: PodEntry | None, request: NamedPortSet) -> frozenset[str]:
    """ "ip,proto:port" of entry when the request's selector matches it and it names the port."""
    if entry is None or (request.selector is not None and not request.selector.matches(entry.labels)):
        return frozenset()
    number = entry.pod.named_port(request.port, PORT_PROTOCOL_TEXT[request.protocol])
    if number is None:
        return frozenset()
    return frozenset(f"{ip},{PROTOCOL_NAMES[request.protocol]}:{number}" for ip in entry.ips)


def selector_addresses(entry: PodEntry | None, selector: Selector) -> frozenset[str]:
    return entry.addresses if entry is not None and selector.matches(entry.labels) else frozenset()


class IpSetCalculator:
    def __init__(self, index: LabelIndex) -> None:
        self.index = index
        self.sets: dict[str, IpSetSpec] = {}  # by name: what the data plane gets
        self.changed = False  # set on every change of `sets`; the caller clears it
        self._uses: dict[str, int] = {}
        self._selectors: dict[str, SelectorSet] = {}
        self._named_ports: dict[str, NamedPortSet] = {}
        # Selector sets by the namespace their selector pins (None: not pinned).
        self._by_pin: dict[str | None, set[str]] = {}
        self._pod_part: dict[str, frozenset[str]] = {}  # selector set -> its pods' /32s
        self._net_part: dict[str, frozenset[str]] = {}  # selector set -> matching network sets' CIDRs

    # ------------------------------------------------------------------ use counting

    def acquire(self, request: SetRequest) -> None:
        name = request.name
        self._uses[name] = self._uses.get(name, 0) + 1
        if self._uses[name] > 1:
            return
        if isinstance(request, SelectorSet):
            selector = request.selector
            self._selectors[name] = request
            self._by_pin.setdefault(pinned_namespace(selector), set()).add(name)
            self._pod_part[name] = frozenset(
                a for e in self.index.candidates(selector) for a in selector_addresses(e, selector)
            )
            self._net_part[name] = self.index.network_set_members(selector)
            self._publish(name)
        elif isinstance(request, NamedPortSet):
            self._named_ports[name] = request
            members = frozenset(
                m for e in self.index.candidates(request.selector) for m in named_port_members(e, request)
            )
            self._put(IpSetSpec(name, "hash:ip,port", members))
        else:
            assert isinstance(request, CidrSet)
            self._put(IpSetSpec(name, "hash:net", request.members))

    def release(self, name: str) -> None:
        self._uses[name] -= 1
        if self._uses[name]:
            return
        del self._uses[name]
        del self.sets[name]
        self.changed = True
        request = self._selectors.pop(name, None)
        if request is not None:
            self._by_pin[pinned_namespace(request.selector)].discard(name)
        self._pod_part.pop(name, None)
        self._net_part.pop(name, None)
        self._named_ports.pop(name, None)

    # ------------------------------------------------------------------ membership

    def pod_changed(self, ref: str, old: PodEntry | None, new: PodEntry | None) -> None:
        """A pod changed (old or new None: it appeared or went): move its addresses in or out."""
        namespace = ref.split("/", 1)[0]
        for name in sorted(self._by_pin.get(namespace, set()) | self._by_pin.get(None, set())):
            selector = self._selectors[name].selector
            before = selector_addresses(old, selector)
            after = selector_addresses(new, selector)
            if before != after:
                self._change(name, ref, before, after)
        for name, request in self._named_ports.items():
            before = named_port_members(old, request)
            after = named_port_members(new, request)
            if before != after:
                self._change(name, ref, before, after)

    def network_sets_changed(self) -> None:
        for name, request in self._selectors.items():
            part = self.index.network_set_members(request.selector)
            if part != self._net_part.get(name, frozenset()):
                self._net_part[name] = part
                self._publish(name)

    def _change(self, name: str, ref: str, remove: frozenset[str], add: frozenset[str]) -> None:
        remove = remove - self._still_held(name, ref, remove)
        if name in self._pod_part:
            part = self._pod_part[name]
            updated = (part - remove) | add
            if updated != part:
                self._pod_part[name] = updated
                self._publish(name)
            return
        spec = self.sets[name]
        self._put(IpSetSpec(name, spec.kind, (spec.members - remove) | add))

    def _still_held(self, name: str, ref: str, members: frozenset[str]) -> frozenset[str]:
        """Members that another pod still contributes (two pods briefly sharing an address)."""
        still: set[str] = set()
        for member in members:
            ip = member.split("/", 1)[0].split(",", 1)[0]
            for other in self.index.other_owners(ip, ref):
                if name in self._selectors:
                    held = selector_addresses(other, self._selectors[name].selector)
                else:
                    held = named_port_members(other, self._named_ports[name])
                if member in held:
                    still.add(member)
        return frozenset(still)

    def _publish(self, name: str) -> None:
        """A selector set's members: its pods' /32s and, when network sets match, all collapsed (an nft
        interval set refuses overlapping elements)."""
        pods = self._pod_part[name]
        nets = self._net_part.get(name, frozenset())
        self._put(IpSetSpec(name, "hash:net", frozenset(canonical_nets(pods | nets)) if nets else pods))

    def _put(self, spec: IpSetSpec) -> None:
        old = self.sets.get(spec.name)
        if old is None or old.members != spec.members:
            self.sets[spec.name] = spec
            self.changed = True
