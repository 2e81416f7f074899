"""The calculation between the datastore and the kernel (the idea of Calico's calculation graph).

Fed one change at a time (a pod, a namespace, a policy, a tier, a network set; vpcnet.dataplane.calc.feed
turns a datastore resource into these calls), it keeps incrementally the local endpoints (pods of this
node with an address) with their ordered policies, the active policies' chains and the members of the
sets their rules use. The parts live in vpcnet.dataplane.calc (label index, rule scanner, ipsets, active
rules, resolver); this class wires them and decides which endpoints are local, and their veth names.

`desired()` returns the DesiredState; objects that did not change are the same objects as last time,
so renders are cached and the appliers skip them by identity.

A calculator is of one address family (its data plane's): pods' addresses, network sets' CIDRs and rules
of that family only. `local_addresses` gives a local pod's own addresses in that family where they are not
its pod IPs: an IPv6 pod's node-local IPv4 for egress (169.254.172.0/22) makes it an endpoint of the IPv4
plane, whose peers' selectors still match pod IPs only (that address is node-local, not the pod's name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vpcnet.api.base import ResourceKey
from vpcnet.api.calico import GlobalNetworkSet, NetworkSet
from vpcnet.api.core import Namespace, Pod
from vpcnet.dataplane import names
from vpcnet.dataplane.calc.activerules import ActiveRules
from vpcnet.dataplane.calc.ipsets import IpSetCalculator
from vpcnet.dataplane.calc.labelindex import LabelIndex, PodEntry, pod_ref
from vpcnet.dataplane.calc.resolver import EndpointResolver
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.policy_state import DesiredState, FlowLogSpec
from vpcnet.policy.model import Policy, TierSpec

LocalAddresses = Callable[[Pod], tuple[str, ...]]


class PolicyCalculator:
    def __init__(
        self,
        node_name: str,
        interface_prefixes: Iterable[str],
        flow_logs: FlowLogSpec | None = None,
        family: IpFamily = IpFamily.V4,
        local_addresses: LocalAddresses | None = None,
    ) -> None:
        self.node_name = node_name
        self.flow_logs = flow_logs  # the verdict points' log actions (vpcnet.dataplane.flow_points)
        self.interface_prefixes = tuple(interface_prefixes)
        self.veth_prefix = self.interface_prefixes[0]
        self.family = family
        # None: a local pod's endpoint addresses are its pod IPs of the family.
        self._local_addresses = local_addresses
        self.index = LabelIndex(family)
        self.ipsets = IpSetCalculator(self.index)
        self.rules = ActiveRules(self.ipsets)
        self.resolver = EndpointResolver()
        self._local: set[str] = set()  # refs of local endpoints
        self._state: DesiredState | None = None

    # ---------------------------------------------------------------- inputs

    def upsert_namespace(self, namespace: Namespace) -> None:
        self._namespace_changed(namespace.metadata.name, namespace.metadata.labels)

    def delete_namespace(self, name: str) -> None:
        self._namespace_changed(name, None)

    def _namespace_changed(self, name: str, labels: dict[str, str] | None) -> None:
        if not self.index.set_namespace(name, labels):
            return
        self.ipsets.network_sets_changed()
        for entry in self.index.pods_in(name):
            self.upsert_pod(entry.pod)

    def upsert_tier(self, tier: TierSpec) -> None:
        if self.resolver.put_tier(tier):
            self._resolve(self._local)

    def delete_tier(self, name: str) -> None:
        if self.resolver.remove_tier(name):
            self._resolve(self._local)

    def upsert_pod(self, pod: Pod) -> None:
        ref = pod_ref(pod)
        if pod.host_network:  # not an endpoint: it has its node's address
            self.delete_pod(ref)
            return
        entry = self.index.entry_for(pod)
        old = self.index.put_pod(entry)
        # Labels and addresses first: comparing whole pods is the expensive part.
        if old is not None and old.labels == entry.labels and old.ips == entry.ips and old.pod == pod:
            return
        self.ipsets.pod_changed(ref, old, entry)
        if pod.node_name == self.node_name and self._endpoint_addresses(entry):
            self._local.add(ref)
            self.rules.put_endpoint(ref, entry.labels)
            self._resolve({ref})
        elif ref in self._local:
            self._drop_local(ref)

    def delete_pod(self, ref: str) -> None:
        old = self.index.remove_pod(ref)
        if old is None:
            return
        self.ipsets.pod_changed(ref, old, None)
        if ref in self._local:
            self._drop_local(ref)

    def upsert_policy(self, policy: Policy) -> None:
        local = {ref: self.index.pods[ref].labels for ref in self._local}
        self._resolve(self.rules.put_policy(policy, local))

    def delete_policy(self, policy_id: str) -> None:
        self._resolve(self.rules.remove_policy(policy_id))

    def upsert_network_set(self, network_set: NetworkSet | GlobalNetworkSet) -> None:
        """A network set: its CIDRs belong to every selector that matches its labels."""
        self.index.put_network_set(network_set)
        self.ipsets.network_sets_changed()

    def delete_network_set(self, key: ResourceKey) -> None:
        if self.index.remove_network_set(key):
            self.ipsets.network_sets_changed()

    # ---------------------------------------------------------------- output

    def desired(self) -> DesiredState:
        parts = (self.ipsets, self.rules, self.resolver)
        if self._state is None or any(part.changed for part in parts):
            self._state = DesiredState(
                self.interface_prefixes,
                dict(self.resolver.endpoints),
                dict(self.rules.chains),
                dict(self.ipsets.sets),
                family=self.family,
                flow_logs=self.flow_logs,
            )
            for part in parts:
                part.changed = False
        return self._state

    @property
    def local_endpoints(self) -> dict[str, str]:
        """ref -> iface of the local endpoints."""
        return dict(self.resolver.iface_of)

    # ---------------------------------------------------------------- local endpoints

    def _endpoint_addresses(self, entry: PodEntry) -> tuple[str, ...]:
        """A local pod's own addresses as /32 (/128) CIDRs: the only sources its veth may send from."""
        ips = entry.ips if self._local_addresses is None else self._local_addresses(entry.pod)
        return tuple(f"{ip}/{self.family.host_prefixlen}" for ip in ips)

    def _drop_local(self, ref: str) -> None:
        self._local.discard(ref)
        self.rules.remove_endpoint(ref)
        self.resolver.remove_endpoint(ref)

    def _resolve(self, refs: Iterable[str]) -> None:
        for ref in refs:
            if ref in self._local:
                self._resolve_one(self.index.pods[ref])

    def _resolve_one(self, entry: PodEntry) -> None:
        pod = entry.pod
        iface = names.host_veth_name(self.veth_prefix, pod.metadata.namespace or "default", pod.metadata.name)
        self.resolver.put_endpoint(
            entry.ref,
            iface,
            self._endpoint_addresses(entry),
            self.rules.selected(entry.ref, "ingress"),
            self.rules.selected(entry.ref, "egress"),
        )
