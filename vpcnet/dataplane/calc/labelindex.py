"""The label index: every labelled thing selectors can match (felix's label index / inherit index).

It keeps the cluster's namespaces (as the ``pcns.`` labels they give), pods (endpoint labels and their
addresses of the index's family, computed once per change by vpcnet.policy.labels) and network sets
(labels and CIDRs of that family: a data plane is of one family, and a peer matches in its own),
indexed by namespace and by address so that a selector pinned to one namespace (every namespaced
policy's selectors are) only looks at that namespace's pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vpcnet.api.base import ResourceKey
from vpcnet.api.calico import GlobalNetworkSet, NetworkSet
from vpcnet.api.core import Pod
from vpcnet.api.selector import And, Compare, Selector
from vpcnet.dataplane.family import IpFamily
from vpcnet.policy.labels import endpoint_labels, namespace_labels, network_set_labels, pod_namespace
from vpcnet.policy.model import NAMESPACE_LABEL


@dataclass(frozen=True)
class PodEntry:
    pod: Pod
    labels: dict[str, str]
    ips: tuple[str, ...]  # of the index's family only: a data plane is of one family

    @property
    def ref(self) -> str:
        return pod_ref(self.pod)

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(f"{ip}/{128 if ':' in ip else 32}" for ip in self.ips)


@dataclass(frozen=True)
class NetworkSetEntry:
    resource: NetworkSet | GlobalNetworkSet
    labels: dict[str, str]
    nets: tuple[str, ...]  # CIDRs of the index's family


def pod_ref(pod: Pod) -> str:
    """A pod's key in the calculation: "<namespace>/<name>"."""
    return f"{pod_namespace(pod)}/{pod.metadata.name}"


def pinned_namespace(selector: Selector | None) -> str | None:
    """The namespace a selector requires (projectcalico.org/namespace == 'x', alone or AND-ed), if any."""
    return _pinned(selector.root) if selector is not None else None


def _pinned(node: object) -> str | None:
    if isinstance(node, Compare) and node.label == NAMESPACE_LABEL and node.op == "==":
        return node.value
    if isinstance(node, And):
        for operand in node.operands:
            found = _pinned(operand)
            if found is not None:
                return found
    return None


def family_addresses(ips: Iterable[str], family: IpFamily) -> tuple[str, ...]:
    """The addresses among ips of family (a dual-stack pod lists one of each)."""
    return tuple(str(a) for a in map(ipaddress.ip_address, ips) if a.version == family.value)


def family_nets(nets: Iterable[str], family: IpFamily) -> tuple[str, ...]:
    """The CIDRs among nets of family (a bare address is its /32 or /128)."""
    parsed = (ipaddress.ip_network(n, strict=False) for n in nets)
    return tuple(str(n) for n in parsed if n.version == family.value)


class LabelIndex:
    def __init__(self, family: IpFamily = IpFamily.V4) -> None:
        self.family = family
        self._ns_labels: dict[str, dict[str, str]] = {}  # namespace -> its pcns. labels
        self.pods: dict[str, PodEntry] = {}  # by ref
        self._by_namespace: dict[str, set[str]] = {}  # namespace -> refs of its pods
        self._ip_owners: dict[str, set[str]] = {}  # address -> refs of the pods that have it
        self.network_sets: dict[ResourceKey, NetworkSetEntry] = {}

    # ------------------------------------------------------------------ namespaces

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        known = self._ns_labels.get(namespace)
        return known if known is not None else namespace_labels(namespace)

    def set_namespace(self, name: str, labels: dict[str, str] | None) -> bool:
        """A namespace put (its own labels) or deleted (None). True when the labels it gives changed;
        its network sets are relabelled here, its pods by the caller (through `entry_for`)."""
        before = self.namespace_labels(name)
        if labels is None:
            self._ns_labels.pop(name, None)
        else:
            self._ns_labels[name] = namespace_labels(name, labels)
        if self.namespace_labels(name) == before:
            return False
        for key, entry in list(self.network_sets.items()):
            if key.namespace == name:
                self.put_network_set(entry.resource)
        return True

    def pods_in(self, namespace: str) -> list[PodEntry]:
        return [self.pods[ref] for ref in sorted(self._by_namespace.get(namespace, ()))]

    # ------------------------------------------------------------------ pods

    def entry_for(self, pod: Pod) -> PodEntry:
        labels = endpoint_labels(pod, self.namespace_labels(pod_namespace(pod)))
        return PodEntry(pod, labels, family_addresses(pod.pod_ips, self.family))

    def put_pod(self, entry: PodEntry) -> PodEntry | None:
        """Store entry; returns the one it replaces."""
        ref = entry.ref
        old = self.pods.get(ref)
        self.pods[ref] = entry
        self._index(ref, old, entry)
        return old

    def remove_pod(self, ref: str) -> PodEntry | None:
        old = self.pods.pop(ref, None)
        if old is not None:
            self._index(ref, old, None)
        return old

    def _index(self, ref: str, old: PodEntry | None, new: PodEntry | None) -> None:
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

    def pods_with_ip(self, ip: str) -> list[PodEntry]:
        """The pods that have address ip (usually one; two briefly while an address moves)."""
        return [self.pods[ref] for ref in sorted(self._ip_owners.get(ip, ()))]

    def other_owners(self, ip: str, ref: str) -> list[PodEntry]:
        """The pods other than ref that have address ip (two pods briefly sharing one)."""
        return [self.pods[other] for other in self._ip_owners.get(ip, set()) - {ref}]

    def candidates(self, selector: Selector | None) -> Iterable[PodEntry]:
        """The pods a selector can match: one namespace's when it pins the namespace, else all."""
        pinned = pinned_namespace(selector)
        if pinned is None:
            return self.pods.values()
        return [self.pods[ref] for ref in self._by_namespace.get(pinned, ())]

    # ------------------------------------------------------------------ network sets

    def put_network_set(self, network_set: NetworkSet | GlobalNetworkSet) -> None:
        namespace = network_set.metadata.namespace if isinstance(network_set, NetworkSet) else None
        ns_labels = self.namespace_labels(namespace) if namespace is not None else None
        labels = network_set_labels(network_set.metadata.labels, namespace, ns_labels)
        entry = NetworkSetEntry(network_set, labels, family_nets(network_set.nets, self.family))
        self.network_sets[network_set.key] = entry

    def remove_network_set(self, key: ResourceKey) -> bool:
        return self.network_sets.pop(key, None) is not None

    def network_set_members(self, selector: Selector) -> frozenset[str]:
        """The CIDRs of every network set selector matches."""
        return frozenset(
            n for entry in self.network_sets.values() if selector.matches(entry.labels) for n in entry.nets
        )
