"""vpcnet.api: resource types, YAML loading, validation with field paths.

Kinds: v1 Namespace and Pod (cluster state), networking.k8s.io/v1 NetworkPolicy, and
projectcalico.org/v3 NetworkPolicy, GlobalNetworkPolicy, Tier, NetworkSet, GlobalNetworkSet, IPPool and
IPAMConfiguration (Calico networking mode).
`load_documents(text, source)` validates multi-document YAML and raises `ValidationError` (every
fault with document and field path) or returns the resources; `Resource.to_dict()` serializes back;
`kind_class(apiVersion, kind)` is the registry, `register_kind` extends it.
"""

from vpcnet.api.base import ObjectMeta, Resource, ResourceKey, kind_class, known_kinds, register_kind
from vpcnet.api.calico import (
    CalicoNetworkPolicy,
    CalicoRule,
    EntityRule,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    IcmpMatch,
    NetworkSet,
    Tier,
)
from vpcnet.api.core import Container, ContainerPort, Namespace, Pod
from vpcnet.api.errors import Fault, ValidationError
from vpcnet.api.ippool import IPAMConfiguration, IPPool
from vpcnet.api.loader import dump_documents, load_documents, load_files, parse_resource
from vpcnet.api.networking import (
    IPBlock,
    K8sNetworkPolicy,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
)
from vpcnet.api.sgpolicy import SecurityGroupPolicy

__all__ = [
    "CalicoNetworkPolicy",
    "CalicoRule",
    "Container",
    "ContainerPort",
    "EntityRule",
    "Fault",
    "GlobalNetworkPolicy",
    "GlobalNetworkSet",
    "IPAMConfiguration",
    "IPBlock",
    "IPPool",
    "IcmpMatch",
    "K8sNetworkPolicy",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Namespace",
    "NetworkPolicyPeer",
    "NetworkPolicyPort",
    "NetworkPolicyRule",
    "NetworkSet",
    "ObjectMeta",
    "Pod",
    "Resource",
    "ResourceKey",
    "SecurityGroupPolicy",
    "Tier",
    "ValidationError",
    "dump_documents",
    "kind_class",
    "known_kinds",
    "load_documents",
    "load_files",
    "parse_resource",
    "register_kind",
]
