"""The calculation between the datastore and the kernel (the idea of Calico's calculation graph).

Fed one change at a time (a pod, a namespace, a policy, a tier), it keeps incrementally:

* the local endpoints (pods of this node with an address) and, per direction, the policies whose
  selector matches each one — a policy change re-evaluates that policy against the local endpoints
  only; a local pod's label change re-evaluates the policies against that pod only;
* the active policies (those selecting at least one local endpoint), rendered to policy chains, and
  the selectors, CIDR lists and named ports their rules use, each one an ipset;
* the members of each active selector and named port across the whole cluster: a pod change touches
  each active selector once (is the pod in or out), a newly active selector scans the pods once.

`desired()` returns the DesiredState; objects that did not change are the same objects as last time,
so renders are cached and the appliers skip them by identity.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vpcnet.api.base import ResourceKey
from vpcnet.api.calico import GlobalNetworkSet, NetworkSet
from vpcnet.api.core import Namespace, Pod
from vpcnet.api.selector import And, Compare, Selector
from vpcnet.dataplane import names
from vpcnet.dataplane.policy_state import (
    DesiredState,
    Direction,
    EndpointSpec,
    IpSetSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierDefault,
    TierPolicies,
    canonical_nets,
)
from vpcnet.policy import model
from vpcnet.policy.model import (
    DEFAULT_TIER_SPEC,
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    ORCHESTRATOR_LABEL,
    Action,
    EndpointMatch,
    NamedPort,
    Policy,
    Rule,
    TierSpec,
)

_DIRS: tuple[Direction, ...] = ("ingress", "egress")
_MODEL_DIR = {"ingress": model.Direction.INGRESS, "egress": model.Direction.EGRESS}
_PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 136: "udplite"}
_PORT_PROTO_TEXT = {6: "TCP", 17: "UDP", 132: "SCTP"}


@dataclass
class _PodEntry:
    pod: Pod
    labels: dict[str, str]
    ips: tuple[str, ...]  # IPv4 only: the data plane is IPv4


class PolicyCalculator:
    def __init__(self, node_name: str, interface_prefixes: Iterable[str]) -> None:
        self.node_name = node_name
        self.interface_prefixes = tuple(interface_prefixes)
        self.veth_prefix = self.interface_prefixes[0]
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._pods: dict[str, _PodEntry] = {}  # by "<ns>/<name>"
        self._policies: dict[str, Policy] = {}  # by policy id
        self._policies_by_pin: dict[str | None, set[str]] = {}  # by the namespace their selector pins
        self._tiers: dict[str, TierSpec] = {DEFAULT_TIER_SPEC.name: DEFAULT_TIER_SPEC}
        self._local: set[str] = set()  # refs of local endpoints
        # Per local endpoint and direction: ids of the policies selecting it.
        self._selected: dict[tuple[str, Direction], set[str]] = {}
        self._endpoints: dict[str, EndpointSpec] = {}  # by iface
        self._iface_of: dict[str, str] = {}  # ref -> iface
        # Active policies: id -> number of (endpoint, direction) selections.
        self._active_count: dict[str, int] = {}
        self._chains: dict[tuple[str, Direction], PolicyChainSpec] = {}
        # Sets: name -> spec; references from active policies (name -> count).
        self._set_refs: dict[str, int] = {}
        self._sets: dict[str, IpSetSpec] = {}
        self._selector_of_set: dict[str, Selector] = {}
        # Active selector sets by the namespace their selector pins (None: not pinned), so a pod change
        # only tests the selectors that can match a pod of its namespace.
        self._sets_by_pin: dict[str | None, set[str]] = {}
        self._pin_of_set: dict[str, str | None] = {}
        self._named_port_of_set: dict[str, tuple[Selector | None, int, str]] = {}
        self._policy_sets: dict[str, tuple[str, ...]] = {}  # active policy id -> set names it uses
        self._ip_owners: dict[str, set[str]] = {}  # address -> refs of the pods that have it
        self._by_namespace: dict[str, set[str]] = {}  # namespace -> refs of its pods
        self._netsets: dict[ResourceKey, tuple[dict[str, str], tuple[str, ...]]] = {}  # labels, CIDRs
        self._netset_resources: dict[ResourceKey, NetworkSet | GlobalNetworkSet] = {}
        self._pod_part: dict[str, frozenset[str]] = {}  # selector set -> its pods' /32s
        self._net_part: dict[str, frozenset[str]] = {}  # selector set -> matching network sets' CIDRs
        self._dirty = True
        self._state: DesiredState | None = None

    # ---------------------------------------------------------------- inputs

    def upsert_namespace(self, namespace: Namespace) -> None:
        name = namespace.metadata.name
        labels = {NAMESPACE_LABEL_PREFIX + k: v for k, v in namespace.metadata.labels.items()}
        labels.setdefault(NAMESPACE_LABEL_PREFIX + "kubernetes.io/metadata.name", name)
        if self._ns_labels.get(name) == labels:
            return
        self._ns_labels[name] = labels
        for key, resource in list(self._netset_resources.items()):
            if key.namespace == name:
                self.upsert_network_set(resource)
        for ref in [r for r, e in self._pods.items() if (e.pod.metadata.namespace or "default") == name]:
            self.upsert_pod(self._pods[ref].pod)

    def delete_namespace(self, name: str) -> None:
        if self._ns_labels.pop(name, None) is not None:
            for ref in [r for r, e in self._pods.items() if (e.pod.metadata.namespace or "default") == name]:
                self.upsert_pod(self._pods[ref].pod)

    def upsert_tier(self, tier: TierSpec) -> None:
        if self._tiers.get(tier.name) == tier:
            return
        self._tiers[tier.name] = tier
        self._rebuild_endpoints(self._local)

    def delete_tier(self, name: str) -> None:
        if name != DEFAULT_TIER_SPEC.name and self._tiers.pop(name, None) is not None:
            self._rebuild_endpoints(self._local)

    def upsert_pod(self, pod: Pod) -> None:
        ref = f"{pod.metadata.namespace or 'default'}/{pod.metadata.name}"
        if pod.host_network:
            self.delete_pod(ref)
            return
        entry = _PodEntry(pod, self._endpoint_labels(pod), _ipv4(pod.pod_ips))
        old = self._pods.get(ref)
        self._pods[ref] = entry
        if old is not None and old.labels == entry.labels and old.ips == entry.ips and old.pod == pod:
            return
        self._dirty = True
        self._own(ref, old, entry)
        self._update_memberships(ref, old, entry)
        is_local = pod.node_name == self.node_name and bool(entry.ips)
        if is_local:
            self._local.add(ref)
            self._reselect(ref)
        elif ref in self._local:
            self._drop_local(ref)

    def delete_pod(self, ref: str) -> None:
        old = self._pods.pop(ref, None)
        if old is None:
            return
        self._dirty = True
        self._own(ref, old, None)
        self._update_memberships(ref, old, None)
        if ref in self._local:
            self._drop_local(ref)

    def upsert_policy(self, policy: Policy) -> None:
        pid = policy.id
        if self._policies.get(pid) == policy:
            return
        self._dirty = True
        was_active = pid in self._active_count
        if was_active:
            self._deactivate(pid)
        old = self._policies.get(pid)
        if old is not None:
            self._policies_by_pin.get(_pinned_namespace(old.selector.root), set()).discard(pid)
        self._policies[pid] = policy
        self._policies_by_pin.setdefault(_pinned_namespace(policy.selector.root), set()).add(pid)
        touched = set()
        for ref in self._local:
            labels = self._pods[ref].labels
            for d in _DIRS:
                chosen = self._selected.setdefault((ref, d), set())
                wanted = _selects(policy, d, labels)
                if wanted != (pid in chosen) or (wanted and was_active):
                    (chosen.add if wanted else chosen.discard)(pid)
                    touched.add(ref)
        self._recount()
        self._rebuild_endpoints(touched)

    def delete_policy(self, policy_id: str) -> None:
        old = self._policies.pop(policy_id, None)
        if old is None:
            return
        self._policies_by_pin.get(_pinned_namespace(old.selector.root), set()).discard(policy_id)
        self._dirty = True
        touched = set()
        for (ref, _), chosen in self._selected.items():
            if policy_id in chosen:
                chosen.discard(policy_id)
                touched.add(ref)
        self._recount()
        self._rebuild_endpoints(touched)

    # ---------------------------------------------------------------- output

    def desired(self) -> DesiredState:
        if self._state is None or self._dirty:
            self._state = DesiredState(
                self.interface_prefixes, dict(self._endpoints), dict(self._chains), dict(self._sets)
            )
            self._dirty = False
        return self._state

    @property
    def local_endpoints(self) -> dict[str, str]:
        """ref -> iface of the local endpoints."""
        return dict(self._iface_of)

    # ---------------------------------------------------------------- endpoints

    def _endpoint_labels(self, pod: Pod) -> dict[str, str]:
        ns = pod.metadata.namespace or "default"
        labels = dict(pod.metadata.labels)
        ns_labels = self._ns_labels.get(ns, {NAMESPACE_LABEL_PREFIX + "kubernetes.io/metadata.name": ns})
        labels.update(ns_labels)
        labels[NAMESPACE_LABEL] = ns
        labels[ORCHESTRATOR_LABEL] = "k8s"
        if pod.service_account_name:
            labels["projectcalico.org/serviceaccount"] = pod.service_account_name
        return labels

    def _reselect(self, ref: str) -> None:
        labels = self._pods[ref].labels
        namespace = ref.split("/", 1)[0]
        candidates = self._policies_by_pin.get(namespace, set()) | self._policies_by_pin.get(None, set())
        for d in _DIRS:
            self._selected[(ref, d)] = {pid for pid in candidates if _selects(self._policies[pid], d, labels)}
        self._recount()
        self._rebuild_endpoints({ref})

    def _drop_local(self, ref: str) -> None:
        self._local.discard(ref)
        for d in _DIRS:
            self._selected.pop((ref, d), None)
        iface = self._iface_of.pop(ref, None)
        if iface is not None:
            self._endpoints.pop(iface, None)
        self._recount()

    def _rebuild_endpoints(self, refs: Iterable[str]) -> None:
        for ref in refs:
            if ref not in self._local:
                continue
            entry = self._pods[ref]
            pod = entry.pod
            iface = names.host_veth_name(
                self.veth_prefix, pod.metadata.namespace or "default", pod.metadata.name
            )
            spec = EndpointSpec(
                iface=iface,
                addresses=tuple(f"{ip}/32" for ip in entry.ips),
                ingress=self._tiers_for(ref, "ingress"),
                egress=self._tiers_for(ref, "egress"),
            )
            self._iface_of[ref] = iface
            if self._endpoints.get(iface) != spec:
                self._endpoints[iface] = spec
                self._dirty = True

    def _tiers_for(self, ref: str, direction: Direction) -> tuple[TierPolicies, ...]:
        chosen = [self._policies[pid] for pid in self._selected.get((ref, direction), ())]
        by_tier: dict[str, list[Policy]] = {}
        for p in chosen:
            by_tier.setdefault(p.tier, []).append(p)
        out = []
        # A policy naming a tier we do not know (yet) is not in force.
        tiers = sorted((self._tiers[t] for t in by_tier if t in self._tiers), key=lambda t: t.sort_key)
        for tier in tiers:
            ordered = sorted(by_tier[tier.name], key=lambda p: p.sort_key)
            default: TierDefault = "pass" if tier.default_action is Action.PASS else "deny"
            out.append(TierPolicies(tier.name, tuple(p.id for p in ordered), default))
        return tuple(out)

    # ---------------------------------------------------------------- active policies and sets

    def _recount(self) -> None:
        counts: dict[str, int] = {}
        for chosen in self._selected.values():
            for pid in chosen:
                counts[pid] = counts.get(pid, 0) + 1
        for pid in [p for p in self._active_count if p not in counts]:
            self._deactivate(pid)
        for pid in counts:
            if pid not in self._active_count:
                self._activate(pid)
        self._active_count = counts

    def _activate(self, pid: str) -> None:
        policy = self._policies[pid]
        used: list[str] = []
        for d in _DIRS:
            if _MODEL_DIR[d] not in policy.types:
                continue
            rules: list[PolicyRule] = []
            for rule in policy.rules(_MODEL_DIR[d]):
                translated = self._translate(rule, used)
                if translated is not None:
                    rules.append(translated)
            self._chains[(pid, d)] = PolicyChainSpec(pid, d, tuple(rules))
        self._policy_sets[pid] = tuple(used)
        for name in used:
            self._set_refs[name] = self._set_refs.get(name, 0) + 1
        self._active_count[pid] = 0
        self._dirty = True

    def _deactivate(self, pid: str) -> None:
        for d in _DIRS:
            self._chains.pop((pid, d), None)
        for name in self._policy_sets.pop(pid, ()):
            self._set_refs[name] -= 1
            if self._set_refs[name] == 0:
                del self._set_refs[name]
                self._sets.pop(name, None)
                self._selector_of_set.pop(name, None)
                pin = self._pin_of_set.pop(name, None)
                self._sets_by_pin.get(pin, set()).discard(name)
                self._pod_part.pop(name, None)
                self._net_part.pop(name, None)
                self._named_port_of_set.pop(name, None)
        self._active_count.pop(pid, None)
        self._dirty = True

    def _translate(self, rule: Rule, used: list[str]) -> PolicyRule | None:
        """The model's rule in data plane terms, registering the sets it uses; None if it can never
        match an IPv4 packet (IPv6-only, or a named port without a protocol)."""
        if rule.ip_version == 6:
            return None
        src = self._side(rule.source, rule.protocol, used)
        dst = self._side(rule.destination, rule.protocol, used)
        if src is None or dst is None:
            return None
        protocol = _proto_text(rule.protocol)
        if protocol in ("58",):  # ICMPv6 never matches IPv4
            return None
        icmp = rule.icmp if protocol == "icmp" else None
        not_icmp = rule.not_icmp if protocol == "icmp" else None
        return PolicyRule(
            action=rule.action.value.lower(),  # type: ignore[arg-type]
            protocol=protocol,
            not_protocol=_proto_text(rule.not_protocol),
            src_sets=src[0],
            not_src_sets=src[1],
            dst_sets=dst[0],
            not_dst_sets=dst[1],
            src_ports=src[2],
            not_src_ports=src[3],
            dst_ports=dst[2],
            not_dst_ports=dst[3],
            icmp_type=icmp.type if icmp else None,
            icmp_code=icmp.code if icmp and icmp.type is not None else None,
            not_icmp_type=not_icmp.type if not_icmp else None,
            not_icmp_code=not_icmp.code if not_icmp and not_icmp.type is not None else None,
        )

    def _side(
        self, match: EndpointMatch, protocol: int | None, used: list[str]
    ) -> tuple[tuple[str, ...], tuple[str, ...], PortMatch, PortMatch] | None:
        pos: list[str] = []
        neg: list[str] = []
        if match.selector is not None:
            pos.append(self._selector_set(match.selector, used))
        if match.not_selector is not None:
            neg.append(self._selector_set(match.not_selector, used))
        nets = [str(n) for n in match.nets if n.version == 4]
        if match.nets and not nets:
            return None
        if nets:
            pos.append(self._nets_set(nets, used))
        not_nets = [str(n) for n in match.not_nets if n.version == 4]
        if not_nets:
            neg.append(self._nets_set(not_nets, used))
        ports = self._ports(match.ports, match.selector, protocol, used)
        not_ports = self._ports(match.not_ports, match.selector, protocol, used)
        if ports is None or not_ports is None:
            return None
        return tuple(pos), tuple(neg), ports, not_ports

    def _ports(
        self,
        ports: Iterable[model.PortMatch],
        selector: Selector | None,
        protocol: int | None,
        used: list[str],
    ) -> PortMatch | None:
        ranges: list[PortRange] = []
        named: list[str] = []
        for port in ports:
            if isinstance(port, NamedPort):
                if protocol not in _PORT_PROTO_TEXT:
                    return None
                named.append(self._named_port_set(selector, protocol, port.name, used))
            else:
                ranges.append(PortRange(port.first, port.last))
        return PortMatch(tuple(sorted(set(ranges))), tuple(sorted(set(named))))

    def _register(self, name: str, used: list[str]) -> bool:
        """Count a use of set name; True when the set has to be built (first use)."""
        used.append(name)
        return name not in self._sets

    def _candidates(self, selector: Selector | None) -> Iterable[_PodEntry]:
        """The pods a selector can match: one namespace's when it pins the namespace (every namespaced
        policy's rule selectors do), else all of them."""
        pinned = _pinned_namespace(selector.root) if selector is not None else None
        if pinned is None:
            return self._pods.values()
        return [self._pods[ref] for ref in self._by_namespace.get(pinned, ())]

    def _selector_set(self, selector: Selector, used: list[str]) -> str:
        name = names.ipset_name("s", selector.canonical)
        if self._register(name, used):
            self._selector_of_set[name] = selector
            pin = _pinned_namespace(selector.root)
            self._pin_of_set[name] = pin
            self._sets_by_pin.setdefault(pin, set()).add(name)
            self._pod_part[name] = frozenset(
                f"{ip}/32" for e in self._candidates(selector) if selector.matches(e.labels) for ip in e.ips
            )
            self._net_part[name] = self._netset_members(selector)
            self._publish(name)
        return name

    def _nets_set(self, cidrs: list[str], used: list[str]) -> str:
        members = canonical_nets(cidrs)
        name = names.ipset_name("n", ",".join(sorted(members)))
        if self._register(name, used):
            self._sets[name] = IpSetSpec(name, "hash:net", members)
        return name

    def _named_port_set(self, selector: Selector | None, protocol: int, port: str, used: list[str]) -> str:
        key = f"{selector.canonical if selector else '*'},{protocol},{port}"
        name = names.ipset_name("p", key)
        if self._register(name, used):
            self._named_port_of_set[name] = (selector, protocol, port)
            members = frozenset(
                m for e in self._candidates(selector) for m in _named_members(e, selector, protocol, port)
            )
            self._sets[name] = IpSetSpec(name, "hash:ip,port", members)
        return name

    def _update_memberships(self, ref: str, old: _PodEntry | None, new: _PodEntry | None) -> None:
        """A pod changed: move its addresses in or out of every active selector and named-port set."""
        namespace = ref.split("/", 1)[0]
        candidates = self._sets_by_pin.get(namespace, set()) | self._sets_by_pin.get(None, set())
        for name in sorted(candidates):
            selector = self._selector_of_set[name]
            before = _addresses(old) if old and selector.matches(old.labels) else frozenset()
            after = _addresses(new) if new and selector.matches(new.labels) else frozenset()
            if before != after:
                self._change_members(name, ref, before, after)
        for name, (port_selector, protocol, port) in self._named_port_of_set.items():
            before = frozenset(_named_members(old, port_selector, protocol, port)) if old else frozenset()
            after = frozenset(_named_members(new, port_selector, protocol, port)) if new else frozenset()
            if before != after:
                self._change_members(name, ref, before, after)

    def _own(self, ref: str, old: _PodEntry | None, new: _PodEntry | None) -> None:
        namespace = ref.split("/", 1)[0]
        if new is None:
            self._by_namespace.get(namespace, set()).discard(ref)
        else:
            self._by_namespace.setdefault(namespace, set()).add(ref)
        for ip in old.ips if old else ():
            owners = self._ip_owners.get(ip)
            if owners is not None:
                owners.discard(ref)
                if not owners:
                    del self._ip_owners[ip]
        for ip in new.ips if new else ():
            self._ip_owners.setdefault(ip, set()).add(ref)

    def _change_members(self, name: str, ref: str, remove: frozenset[str], add: frozenset[str]) -> None:
        others = self._other_holders(name, ref, remove)
        if name in self._pod_part:  # a selector set: pods' addresses plus matching network sets' CIDRs
            part = self._pod_part[name]
            updated = (part - (remove - others)) | add
            if updated != part:
                self._pod_part[name] = updated
                self._publish(name)
            return
        spec = self._sets[name]
        members = (spec.members - (remove - others)) | add
        if members != spec.members:
            self._sets[name] = IpSetSpec(name, spec.kind, members)
            self._dirty = True

    def _publish(self, name: str) -> None:
        """A selector set's members: its pods' /32s and, when network sets match, all collapsed (an nft
        interval set refuses overlapping elements)."""
        pods = self._pod_part[name]
        nets = self._net_part.get(name, frozenset())
        members = canonical_nets(pods | nets) if nets else pods
        old = self._sets.get(name)
        if old is None or old.members != members:
            self._sets[name] = IpSetSpec(name, "hash:net", frozenset(members))
            self._dirty = True

    def _netset_members(self, selector: Selector) -> frozenset[str]:
        return frozenset(
            n for labels, nets in self._netsets.values() if selector.matches(labels) for n in nets
        )

    def _refresh_netset_parts(self) -> None:
        for name, selector in self._selector_of_set.items():
            part = self._netset_members(selector)
            if part != self._net_part.get(name, frozenset()):
                self._net_part[name] = part
                self._publish(name)

    def upsert_network_set(self, network_set: NetworkSet | GlobalNetworkSet) -> None:
        """A network set: its CIDRs belong to every selector that matches its labels."""
        labels = dict(network_set.metadata.labels)
        namespace = network_set.metadata.namespace if isinstance(network_set, NetworkSet) else None
        if namespace is not None:
            labels.update(self._ns_labels.get(namespace, {}))
            labels[NAMESPACE_LABEL] = namespace
        nets = tuple(
            str(ipaddress.ip_network(n if "/" in n else n + "/32", strict=False))
            for n in network_set.nets
            if ":" not in n
        )
        self._netsets[network_set.key] = (labels, nets)
        self._netset_resources[network_set.key] = network_set
        self._refresh_netset_parts()

    def delete_network_set(self, key: ResourceKey) -> None:
        if self._netsets.pop(key, None) is not None:
            self._netset_resources.pop(key, None)
            self._refresh_netset_parts()

    def _other_holders(self, name: str, ref: str, members: frozenset[str]) -> frozenset[str]:
        """Members that another pod still contributes (two pods briefly sharing an address)."""
        still: set[str] = set()
        for member in members:
            ip = member.split("/", 1)[0].split(",", 1)[0]
            for other in self._ip_owners.get(ip, set()) - {ref}:
                entry = self._pods[other]
                selector = self._selector_of_set.get(name)
                if selector is not None and selector.matches(entry.labels):
                    still.add(member)
                elif name in self._named_port_of_set:
                    port_sel, protocol, port = self._named_port_of_set[name]
                    if member in _named_members(entry, port_sel, protocol, port):
                        still.add(member)
        return frozenset(still)


def _pinned_namespace(node: object) -> str | None:
    """The namespace a selector requires (projectcalico.org/namespace == 'x', alone or AND-ed), if any."""
    if isinstance(node, Compare) and node.label == NAMESPACE_LABEL and node.op == "==":
        return node.value
    if isinstance(node, And):
        for operand in node.operands:
            found = _pinned_namespace(operand)
            if found is not None:
                return found
    return None


def _selects(policy: Policy, direction: Direction, labels: dict[str, str]) -> bool:
    return (
        policy.applies_to_pods and _MODEL_DIR[direction] in policy.types and policy.selector.matches(labels)
    )


def _named_members(entry: _PodEntry | None, selector: Selector | None, protocol: int, port: str) -> list[str]:
    if entry is None or (selector is not None and not selector.matches(entry.labels)):
        return []
    number = entry.pod.named_port(port, _PORT_PROTO_TEXT[protocol])
    if number is None:
        return []
    return [f"{ip},{_PROTO_NAMES[protocol]}:{number}" for ip in entry.ips]


def _addresses(entry: _PodEntry) -> frozenset[str]:
    return frozenset(f"{ip}/32" for ip in entry.ips)


def _ipv4(ips: Iterable[str]) -> tuple[str, ...]:
    out = []
    for ip in ips:
        address = ipaddress.ip_address(ip)
        if address.version == 4:
            out.append(str(address))
    return tuple(out)


def _proto_text(number: int | None) -> str | None:
    if number is None:
        return None
    return _PROTO_NAMES.get(number, str(number))
