"""Where each of our kinds lives in the Kubernetes API, and how Calico's v3 objects are stored there.

Our kinds are named by `kind_path(apiVersion, kind)` ("pod", "networkpolicy.networking.k8s.io",
"networkpolicy.projectcalico.org"). Built-in kinds map to their own API paths. Calico's kinds are what
users write as `projectcalico.org/v3`; in the Kubernetes datastore (Calico's KDD) they are stored as custom
resources of the CRDs in `crd.projectcalico.org/v1` with the same metadata and spec, so an object written by
calicoctl or by Calico's own components means the same here. The store converts at its edge: documents
go out as `crd.projectcalico.org/v1` and come back as `projectcalico.org/v3`; consumers never see the CRD
form. ENIConfig is the VPC CNI's CRD, `crd.k8s.amazonaws.com/v1alpha1`, and SecurityGroupPolicy the VPC
resource controller's, `vpcresources.k8s.aws/v1beta1`; both served as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CALICO_API_VERSION = "projectcalico.org/v3"
CALICO_CRD_GROUP = "crd.projectcalico.org"
CALICO_CRD_VERSION = "v1"
CALICO_CRD_API_VERSION = f"{CALICO_CRD_GROUP}/{CALICO_CRD_VERSION}"
ENICONFIG_API_VERSION = "crd.k8s.amazonaws.com/v1alpha1"
SGP_API_VERSION = "vpcresources.k8s.aws/v1beta1"  # security groups for pods
ENICONFIG_LABEL = "k8s.amazonaws.com/eniConfig"  # a node's ENIConfig, unless ENI_CONFIG_LABEL_DEF says
ENICONFIG_LABEL_ENV = "ENI_CONFIG_LABEL_DEF"


class UnknownKind(LookupError):
    """A kind the Kubernetes datastore does not serve."""


@dataclass(frozen=True)
class KubeKind:
    kind_path: str  # ours: "networkpolicy.projectcalico.org"
    api_version: str  # what the API serves: "v1", "networking.k8s.io/v1", "crd.projectcalico.org/v1"
    kind: str  # what the API serves: "NetworkPolicy", "IPAMConfig"
    plural: str
    namespaced: bool
    user_api_version: str  # what our documents say (differs from api_version for Calico's kinds)
    user_kind: str

    @property
    def base_path(self) -> str:
        """The collection's path prefix: /api/v1 or /apis/<group>/<version>."""
        return f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"

    def collection_path(self, namespace: str | None = None) -> str:
        """Every object (of a namespace, when given and the kind is namespaced)."""
        if namespace and self.namespaced:
            return f"{self.base_path}/namespaces/{namespace}/{self.plural}"
        return f"{self.base_path}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind_path} {name}: a namespaced kind needs metadata.namespace")
            return f"{self.base_path}/namespaces/{namespace}/{self.plural}/{name}"
        return f"{self.base_path}/{self.plural}/{name}"

    def to_api(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Our document as the API stores it (a deep copy)."""
        body = _copy(document)
        body["apiVersion"], body["kind"] = self.api_version, self.kind
        return body

    def from_api(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """An object from the API as our document (a deep copy)."""
        body = _copy(obj)
        body["apiVersion"], body["kind"] = self.user_api_version, self.user_kind
        return body


def _copy(document: Mapping[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(document))


def _builtin(kind_path: str, api_version: str, kind: str, plural: str, namespaced: bool) -> KubeKind:
    return KubeKind(kind_path, api_version, kind, plural, namespaced, api_version, kind)


def _calico(user_kind: str, plural: str, namespaced: bool, crd_kind: str | None = None) -> KubeKind:
    kind_path = f"{user_kind.lower()}.projectcalico.org"
    return KubeKind(
        kind_path,
        CALICO_CRD_API_VERSION,
        crd_kind or user_kind,
        plural,
        namespaced,
        CALICO_API_VERSION,
        user_kind,
    )


KINDS: dict[str, KubeKind] = {
    k.kind_path: k
    for k in (
        _builtin("pod", "v1", "Pod", "pods", True),
        _builtin("namespace", "v1", "Namespace", "namespaces", False),
        _builtin("node", "v1", "Node", "nodes", False),
        _builtin("serviceaccount", "v1", "ServiceAccount", "serviceaccounts", True),
        _builtin("lease.coordination.k8s.io", "coordination.k8s.io/v1", "Lease", "leases", True),
        _builtin(
            "networkpolicy.networking.k8s.io",
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            True,
        ),
        _calico("NetworkPolicy", "networkpolicies", True),
        _calico("GlobalNetworkPolicy", "globalnetworkpolicies", False),
        _calico("Tier", "tiers", False),
        _calico("NetworkSet", "networksets", True),
        _calico("GlobalNetworkSet", "globalnetworksets", False),
        _calico("IPPool", "ippools", False),
        _calico("IPAMConfiguration", "ipamconfigs", False, crd_kind="IPAMConfig"),
        _calico("BlockAffinity", "blockaffinities", False),
        _calico("IPAMBlock", "ipamblocks", False),
        _calico("IPAMHandle", "ipamhandles", False),
        _builtin("eniconfig.crd.k8s.amazonaws.com", ENICONFIG_API_VERSION, "ENIConfig", "eniconfigs", False),
        _builtin(
            "securitygrouppolicy.vpcresources.k8s.aws",
            SGP_API_VERSION,
            "SecurityGroupPolicy",
            "securitygrouppolicies",
            True,
        ),
        # What the lab's control plane writes: leader election, and the CRDs that make the kinds above served.
        _builtin("lease.coordination.k8s.io", "coordination.k8s.io/v1", "Lease", "leases", True),
        _builtin(
            "customresourcedefinition.apiextensions.k8s.io",
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            False,
        ),
    )
}


def kube_kind(kind_path: str) -> KubeKind:
    try:
        return KINDS[kind_path]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise UnknownKind(
            f"kind {kind_path!r} is not served by the Kubernetes datastore (known: {known})"
        ) from None


def user_document(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """A document written in the CRD form (crd.projectcalico.org/v1, as kubectl users of KDD sometimes do)
    in our v3 form; any other document as it is."""
    if document.get("apiVersion") != CALICO_CRD_API_VERSION:
        return document
    for k in KINDS.values():
        if k.api_version == CALICO_CRD_API_VERSION and k.kind == document.get("kind"):
            return k.from_api(document)
    return document


def eniconfig_label(environ: Mapping[str, str]) -> str:
    """The node label that names a node's ENIConfig (the VPC CNI's ENI_CONFIG_LABEL_DEF, else its default)."""
    return environ.get(ENICONFIG_LABEL_ENV, "").strip() or ENICONFIG_LABEL
