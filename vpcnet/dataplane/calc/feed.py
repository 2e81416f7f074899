"""The one dispatch from a datastore resource to the policy calculation (felix's calc graph input).

`feed_stored` takes what a datastore watch delivers (a stored document, or None for a deletion) and
`feed_resource` / `delete_resource` the parsed resource or the reference of a deleted one; the node
agent and the tests feed the calculation through these, so a kind is handled the same way everywhere.
Kinds the calculation does not use are ignored. `KINDS` are the datastore kinds it reads. A stored
resource that does not decode or validate goes to `feed_invalid`: a policy is replaced by its fail-closed
deny (vpcnet.policy.failclosed); any other kind keeps what the calculation had.
"""

from __future__ import annotations

from typing import Protocol

from vpcnet.api.base import Resource, ResourceKey
from vpcnet.api.calico import CalicoNetworkPolicy, GlobalNetworkPolicy, GlobalNetworkSet, NetworkSet, Tier
from vpcnet.api.core import Namespace, Pod
from vpcnet.api.loader import parse_resource
from vpcnet.api.networking import K8sNetworkPolicy
from vpcnet.datastore.resources import ResourceRef, StoredResource, kind_path
from vpcnet.policy.compile import compile_policy, compile_tier
from vpcnet.policy.failclosed import fail_closed_policy
from vpcnet.policy.model import Policy, PolicyKind, TierSpec, policy_id


class Calculation(Protocol):
    """What feed drives (vpcnet.dataplane.policy_calc.PolicyCalculator)."""

    def upsert_pod(self, pod: Pod) -> None: ...
    def delete_pod(self, ref: str) -> None: ...
    def upsert_namespace(self, namespace: Namespace) -> None: ...
    def delete_namespace(self, name: str) -> None: ...
    def upsert_policy(self, policy: Policy) -> None: ...
    def delete_policy(self, policy_id: str) -> None: ...
    def upsert_tier(self, tier: TierSpec) -> None: ...
    def delete_tier(self, name: str) -> None: ...
    def upsert_network_set(self, network_set: NetworkSet | GlobalNetworkSet) -> None: ...
    def delete_network_set(self, key: ResourceKey) -> None: ...


class Fanout:
    """Several calculations fed as one (a node's planes, one per address family): each gets every call."""

    def __init__(self, calcs: list[Calculation]) -> None:
        self.calcs = calcs

    def upsert_pod(self, pod: Pod) -> None:
        for calc in self.calcs:
            calc.upsert_pod(pod)

    def delete_pod(self, ref: str) -> None:
        for calc in self.calcs:
            calc.delete_pod(ref)

    def upsert_namespace(self, namespace: Namespace) -> None:
        for calc in self.calcs:
            calc.upsert_namespace(namespace)

    def delete_namespace(self, name: str) -> None:
        for calc in self.calcs:
            calc.delete_namespace(name)

    def upsert_policy(self, policy: Policy) -> None:
        for calc in self.calcs:
            calc.upsert_policy(policy)

    def delete_policy(self, policy_id: str) -> None:
        for calc in self.calcs:
            calc.delete_policy(policy_id)

    def upsert_tier(self, tier: TierSpec) -> None:
        for calc in self.calcs:
            calc.upsert_tier(tier)

    def delete_tier(self, name: str) -> None:
        for calc in self.calcs:
            calc.delete_tier(name)

    def upsert_network_set(self, network_set: NetworkSet | GlobalNetworkSet) -> None:
        for calc in self.calcs:
            calc.upsert_network_set(network_set)

    def delete_network_set(self, key: ResourceKey) -> None:
        for calc in self.calcs:
            calc.delete_network_set(key)


def _kind(resource_type: type[Resource]) -> str:
    return kind_path(resource_type.API_VERSION, resource_type.KIND)


POD = _kind(Pod)
NAMESPACE = _kind(Namespace)
K8S_POLICY = _kind(K8sNetworkPolicy)
CALICO_POLICY = _kind(CalicoNetworkPolicy)
GLOBAL_POLICY = _kind(GlobalNetworkPolicy)
TIER = _kind(Tier)
NETWORK_SET = _kind(NetworkSet)
GLOBAL_NETWORK_SET = _kind(GlobalNetworkSet)
KINDS = frozenset(
    {POD, NAMESPACE, K8S_POLICY, CALICO_POLICY, GLOBAL_POLICY, TIER, NETWORK_SET, GLOBAL_NETWORK_SET}
)
_POLICY_KIND = {
    K8S_POLICY: PolicyKind.KUBERNETES,
    CALICO_POLICY: PolicyKind.CALICO,
    GLOBAL_POLICY: PolicyKind.GLOBAL,
}
_NETWORK_SET_KIND = {NETWORK_SET: NetworkSet.KIND, GLOBAL_NETWORK_SET: GlobalNetworkSet.KIND}


def ref_of(resource: Resource) -> ResourceRef:
    """The datastore reference of a resource."""
    return ResourceRef(_kind(type(resource)), resource.metadata.namespace, resource.metadata.name)


def feed_stored(calc: Calculation, ref: ResourceRef, stored: StoredResource | None) -> None:
    """A stored resource put, or deleted (None). Raises ValueError (nothing changed) when the document
    does not decode or parse; the caller then reports it and calls feed_invalid."""
    if stored is None:
        delete_resource(calc, ref)
    elif stored.invalid is not None:
        raise ValueError(f"{ref}: {stored.invalid}")
    else:
        feed_resource(calc, parse_resource(stored.body, str(ref)))


def feed_invalid(calc: Calculation, ref: ResourceRef) -> bool:
    """The resource at ref is stored but unreadable. A policy fails closed: its fail-closed deny takes its
    place. Other kinds keep what the calculation had (a pod or namespace whose labels cannot be read keeps
    its last ones; a new pod stays unprogrammed, so its veth meets the dispatch drop). True for a policy."""
    kind = _POLICY_KIND.get(ref.kind)
    if kind is None:
        return False
    calc.upsert_policy(fail_closed_policy(kind, ref.namespace, ref.name))
    return True


def feed_resource(calc: Calculation, resource: Resource) -> None:
    """A resource added or changed."""
    if isinstance(resource, Pod):
        calc.upsert_pod(resource)
    elif isinstance(resource, Namespace):
        calc.upsert_namespace(resource)
    elif isinstance(resource, K8sNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy):
        calc.upsert_policy(compile_policy(resource))
    elif isinstance(resource, NetworkSet | GlobalNetworkSet):
        calc.upsert_network_set(resource)
    elif isinstance(resource, Tier):
        calc.upsert_tier(compile_tier(resource))


def delete_resource(calc: Calculation, ref: ResourceRef) -> None:
    """The resource at ref deleted."""
    if ref.kind == POD:
        calc.delete_pod(f"{ref.namespace}/{ref.name}")
    elif ref.kind == NAMESPACE:
        calc.delete_namespace(ref.name)
    elif ref.kind in _POLICY_KIND:
        calc.delete_policy(policy_id(_POLICY_KIND[ref.kind], ref.namespace, ref.name))
    elif ref.kind == TIER:
        calc.delete_tier(ref.name)
    elif ref.kind in _NETWORK_SET_KIND:
        calc.delete_network_set(ResourceKey(_NETWORK_SET_KIND[ref.kind], ref.namespace, ref.name))
