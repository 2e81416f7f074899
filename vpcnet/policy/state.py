"""The cluster state the policy engine reasons about: namespaces, pods, network sets, tiers, policies.

Built from validated resources (`ClusterState.from_resources`). Cross-object checks happen here:
a resource defined twice, a Calico policy naming a tier that does not exist. A namespace that pods
or policies use but that no document defines is implied (no labels except
kubernetes.io/metadata.name), as if it had been created empty. hostNetwork pods are not endpoints:
they share their node's address and policy never applies to them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from vpcnet.api.base import Resource, ResourceKey
from vpcnet.api.calico import CalicoNetworkPolicy, GlobalNetworkPolicy, GlobalNetworkSet, NetworkSet, Tier
from vpcnet.api.core import Namespace, Pod
from vpcnet.api.errors import Fault, ValidationError
from vpcnet.api.networking import K8sNetworkPolicy
from vpcnet.policy.compile import compile_policy, compile_tier
from vpcnet.policy.labels import endpoint_labels, namespace_labels, network_set_labels
from vpcnet.policy.model import (
    DEFAULT_TIER,
    DEFAULT_TIER_SPEC,
    IPAddress,
    IPNetwork,
    Policy,
    TierSpec,
)

NetworkSetResource = NetworkSet | GlobalNetworkSet


@dataclass(frozen=True)
class NetworkSetEndpoint:
    """A network set as selectors see it: labels (namespace labels included) and CIDRs."""

    key: ResourceKey
    labels: dict[str, str]
    nets: tuple[IPNetwork, ...]


@dataclass
class ClusterState:
    namespaces: dict[str, Namespace]
    pods: list[Pod]  # policy endpoints (hostNetwork pods excluded), sorted by namespace/name
    network_sets: list[NetworkSetEndpoint]
    tiers: dict[str, TierSpec]
    policies: list[Policy]
    resources: dict[ResourceKey, Resource] = field(default_factory=dict)

    @classmethod
    def from_resources(cls, resources: Iterable[Resource]) -> ClusterState:
        """Raises ValidationError (nothing built) for duplicates and references to missing tiers."""
        faults: list[Fault] = []
        by_key: dict[ResourceKey, Resource] = {}
        for r in resources:
            if r.key in by_key:
                faults.append(Fault(str(r.key), "", "defined more than once"))
            by_key[r.key] = r
        namespaces: dict[str, Namespace] = {}
        tiers: dict[str, TierSpec] = {DEFAULT_TIER: DEFAULT_TIER_SPEC}
        pods: list[Pod] = []
        sets: list[NetworkSetResource] = []
        policy_resources: list[K8sNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy] = []
        for r in by_key.values():
            if isinstance(r, Namespace):
                namespaces[r.metadata.name] = r
            elif isinstance(r, Tier):
                tiers[r.metadata.name] = compile_tier(r)
            elif isinstance(r, Pod):
                if not r.host_network:
                    pods.append(r)
            elif isinstance(r, NetworkSet | GlobalNetworkSet):
                sets.append(r)
            elif isinstance(r, K8sNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy):
                policy_resources.append(r)
        for r in [*pods, *sets, *policy_resources]:
            ns = r.metadata.namespace
            if ns is not None and ns not in namespaces:
                namespaces[ns] = Namespace.named(ns)
        policies: list[Policy] = []
        for pr in policy_resources:
            if isinstance(pr, CalicoNetworkPolicy | GlobalNetworkPolicy) and pr.tier not in tiers:
                faults.append(Fault(str(pr.key), "spec.tier", f"tier {pr.tier!r} does not exist"))
                continue
            policies.append(compile_policy(pr))
        if faults:
            raise ValidationError(faults)
        pods.sort(key=lambda p: (p.metadata.namespace or "", p.metadata.name))
        set_endpoints = [_network_set_endpoint(s, namespaces) for s in sets]
        return cls(namespaces, pods, set_endpoints, tiers, policies, by_key)

    # ----------------------------------------------------------------------------------------------

    def endpoint_labels(self, pod: Pod) -> dict[str, str]:
        """The labels selectors see for `pod` (see vpcnet.policy.model); cached for the state's pods."""
        labels = self._endpoint_labels.get(id(pod))
        if labels is None or self._pods_by_id.get(id(pod)) is not pod:
            return self._labels_of(pod)
        return labels

    def _labels_of(self, pod: Pod) -> dict[str, str]:
        ns = pod.metadata.namespace or "default"
        namespace = self.namespaces.get(ns)
        return endpoint_labels(pod, namespace_labels(ns, namespace.metadata.labels if namespace else None))

    @cached_property
    def _pods_by_id(self) -> dict[int, Pod]:
        return {id(p): p for p in self.pods}

    @cached_property
    def _endpoint_labels(self) -> dict[int, dict[str, str]]:
        return {id(pod): self._labels_of(pod) for pod in self.pods}

    @cached_property
    def pods_by_ref(self) -> dict[str, Pod]:
        return {pod.ref: pod for pod in self.pods}

    @cached_property
    def pod_addresses(self) -> dict[int, IPAddress | None]:
        return {id(p): ipaddress.ip_address(p.pod_ip) if p.pod_ip else None for p in self.pods}

    @cached_property
    def pods_by_ip(self) -> dict[IPAddress, list[Pod]]:
        out: dict[IPAddress, list[Pod]] = {}
        for pod in self.pods:
            for ip in pod.pod_ips:
                out.setdefault(ipaddress.ip_address(ip), []).append(pod)
        return out

    def pod(self, ref: str) -> Pod:
        """Look a pod up by "<namespace>/<name>"; KeyError with a helpful message otherwise."""
        pod = self.pods_by_ref.get(ref)
        if pod is None:
            ns, _, name = ref.partition("/")
            other = self.resources.get(ResourceKey(Pod.KIND, ns, name))
            if isinstance(other, Pod) and other.host_network:
                raise KeyError(
                    f"pod {ref!r} uses the host network: it is not a policy endpoint "
                    f"(give its node's address{': ' + other.pod_ip if other.pod_ip else ''})"
                )
            raise KeyError(f"no pod {ref!r} (pods: {', '.join(sorted(self.pods_by_ref)) or 'none'})")
        return pod

    def tier(self, name: str) -> TierSpec:
        return self.tiers[name]


def _network_set_endpoint(s: NetworkSetResource, namespaces: dict[str, Namespace]) -> NetworkSetEndpoint:
    ns = s.metadata.namespace if isinstance(s, NetworkSet) else None
    ns_labels = namespace_labels(ns, namespaces[ns].metadata.labels) if ns is not None else None
    labels = network_set_labels(s.metadata.labels, ns, ns_labels)
    nets = tuple(
        ipaddress.ip_network(n if "/" in n else n + ("/128" if ":" in n else "/32"), strict=False)
        for n in s.nets
    )
    return NetworkSetEndpoint(s.key, labels, nets)
