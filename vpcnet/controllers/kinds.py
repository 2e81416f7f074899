"""The kinds vpcnet reads from the Kubernetes API, where each is served, and how Calico's kinds map.

Calico's kinds live in the API as CRDs in `crd.projectcalico.org/v1` with the spec of `projectcalico.org/v3`
(what calicoctl does in Kubernetes-datastore mode): `vpcnet apply` takes the v3 documents users write and
stores the CRD form; kube-controllers mirrors the CRD form back into etcd as v3, the kind the agents read.
The only kind renamed on the way is IPAMConfiguration (CRD kind IPAMConfig, plural ipamconfigs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from vpcnet.controllers.apiclient import ApiKind

CALICO_API = "projectcalico.org/v3"
CALICO_CRD_GROUP = "crd.projectcalico.org"
CALICO_CRD_API = f"{CALICO_CRD_GROUP}/v1"

POD = ApiKind("", "v1", "pods", "Pod", True)
NAMESPACE = ApiKind("", "v1", "namespaces", "Namespace", False)
NODE = ApiKind("", "v1", "nodes", "Node", False)
SERVICE_ACCOUNT = ApiKind("", "v1", "serviceaccounts", "ServiceAccount", True)
NETWORK_POLICY = ApiKind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True)
LEASE = ApiKind("coordination.k8s.io", "v1", "leases", "Lease", True)
CRD = ApiKind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
ENICONFIG = ApiKind("crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs", "ENIConfig", False)

BUILTIN = (POD, NAMESPACE, NODE, SERVICE_ACCOUNT, NETWORK_POLICY, LEASE, CRD)

# v3 kind -> (CRD kind, plural, namespaced): the Calico kinds users write (IPAM's own blocks, handles and
# affinities are the agents' and stay in etcd).
_CALICO = {
    "NetworkPolicy": ("NetworkPolicy", "networkpolicies", True),
    "GlobalNetworkPolicy": ("GlobalNetworkPolicy", "globalnetworkpolicies", False),
    "NetworkSet": ("NetworkSet", "networksets", True),
    "GlobalNetworkSet": ("GlobalNetworkSet", "globalnetworksets", False),
    "Tier": ("Tier", "tiers", False),
    "IPPool": ("IPPool", "ippools", False),
    "IPAMConfiguration": ("IPAMConfig", "ipamconfigs", False),
}
CALICO_KINDS = {
    v3: ApiKind(CALICO_CRD_GROUP, "v1", plural, crd_kind, namespaced)
    for v3, (crd_kind, plural, namespaced) in _CALICO.items()
}
_V3_OF_CRD = {crd_kind: v3 for v3, (crd_kind, _, _) in _CALICO.items()}


@dataclass(frozen=True)
class Mirrored:
    """A kind kube-controllers copies into etcd: read at `api`, stored as apiVersion/kind."""

    api: ApiKind
    api_version: str
    kind: str


MIRRORED: tuple[Mirrored, ...] = (
    Mirrored(NAMESPACE, "v1", "Namespace"),
    Mirrored(POD, "v1", "Pod"),
    Mirrored(NODE, "v1", "Node"),
    Mirrored(SERVICE_ACCOUNT, "v1", "ServiceAccount"),
    Mirrored(NETWORK_POLICY, "networking.k8s.io/v1", "NetworkPolicy"),
    Mirrored(ENICONFIG, ENICONFIG.api_version, "ENIConfig"),
    *(Mirrored(api, CALICO_API, v3) for v3, api in CALICO_KINDS.items()),
)


def api_kind_of(api_version: str, kind: str) -> ApiKind | None:
    """Where a document of this apiVersion/kind is stored in the API (Calico v3 kinds: as their CRD)."""
    if api_version == CALICO_API:
        return CALICO_KINDS.get(kind)
    if api_version == CALICO_CRD_API:
        return next((k for k in CALICO_KINDS.values() if k.kind == kind), None)
    for known in (*BUILTIN, ENICONFIG):
        if (known.api_version, known.kind) == (api_version, kind):
            return known
    return None


def to_api_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as the API stores it: Calico v3 kinds become their crd.projectcalico.org/v1 form."""
    if doc.get("apiVersion") != CALICO_API:
        return doc
    target = CALICO_KINDS.get(str(doc.get("kind")))
    if target is None:
        return doc
    out = copy.deepcopy(doc)
    out["apiVersion"], out["kind"] = CALICO_CRD_API, target.kind
    return out


def from_api_document(obj: dict[str, Any], mirrored: Mirrored) -> dict[str, Any]:
    """An API object as etcd's readers know it: its kind's apiVersion/kind, without what only the API
    keeps (resourceVersion, managedFields, kubectl's last-applied copy)."""
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields", "generation", "selfLink")
    }
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    return {"apiVersion": mirrored.api_version, "kind": mirrored.kind, "metadata": meta, **out}


def v3_kind_of_crd(crd_kind: str) -> str | None:
    return _V3_OF_CRD.get(crd_kind)
