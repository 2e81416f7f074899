"""The served resources: the built-in kinds, and the kinds that CustomResourceDefinitions add.

A kind is served from `/api/v1/...` (core group) or `/apis/<group>/<version>/...` and stored under one etcd
prefix whatever version it is read at, as the real server stores it: core and built-in kinds under
`/registry/<plural>/`, CRDs under `/registry/apiextensions.k8s.io/customresourcedefinitions/`, custom
resources under `/registry/<group>/<plural>/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    status_subresource: bool = False
    short_names: tuple[str, ...] = ()
    builtin: bool = True  # built-in kinds take strategic merge patches; custom resources do not
    storage_path: str = ""  # below the registry root; default: plural (built-in) or group/plural (custom)
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # CRD openAPIV3Schema
    categories: tuple[str, ...] = ()
    # A CRD version's additionalPrinterColumns (server-side printing, vpcnet.lab.kubeapi.tables).
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> tuple[str, str]:
        return (self.group, self.version)

    @property
    def storage(self) -> str:
        if self.storage_path:
            return self.storage_path
        return self.plural if self.builtin else f"{self.group}/{self.plural}"

    def discovery(self) -> list[dict[str, Any]]:
        """This resource's entries in an APIResourceList (the resource, and its status subresource)."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _core(
    kind: str, plural: str, namespaced: bool, status: bool = False, short: tuple[str, ...] = ()
) -> ResourceType:
    return ResourceType("", "v1", kind, plural, kind.lower(), namespaced, status, short)


CRD_TYPE = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    "customresourcedefinition",
    namespaced=False,
    status_subresource=True,
    short_names=("crd", "crds"),
    storage_path="apiextensions.k8s.io/customresourcedefinitions",
)

BUILTIN: tuple[ResourceType, ...] = (
    _core("Namespace", "namespaces", False, True, ("ns",)),
    _core("Pod", "pods", True, True, ("po",)),
    _core("Node", "nodes", False, True, ("no",)),
    _core("ServiceAccount", "serviceaccounts", True, False, ("sa",)),
    _core("Event", "events", True, False, ("ev",)),
    _core("ConfigMap", "configmaps", True, False, ("cm",)),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced=True),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        True,
        False,
        ("netpol",),
    ),
    CRD_TYPE,
    # Stored and served only (no controller acts on them): what deploy/ installs besides the above, so that
    # `kubectl apply -k deploy/` runs against the lab as against a cluster.
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, True, ("ds",)),
    ResourceType("apps", "v1", "Deployment", "deployments", "deployment", True, True, ("deploy",)),
    ResourceType(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        True,
        True,
        ("pdb",),
    ),
    *(
        ResourceType("rbac.authorization.k8s.io", "v1", kind, f"{kind.lower()}s", kind.lower(), namespaced)
        for kind, namespaced in (
            ("ClusterRole", False),
            ("ClusterRoleBinding", False),
            ("Role", True),
            ("RoleBinding", True),
        )
    ),
)


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a (valid) CRD serves: one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status_subresource="status" in subresources,
                short_names=tuple(names.get("shortNames") or ()),
                builtin=False,
                schema=schema,
                categories=tuple(names.get("categories") or ()),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            )
        )
    return out


class Registry:
    """What is served now: the built-in kinds plus those of the CRDs seen (added and removed by name)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_crd: dict[str, list[ResourceType]] = {}
        for rt in BUILTIN:
            self._add(rt)

    def _add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def group_versions(self) -> dict[str, list[str]]:
        """Every group (core as "") with its versions, in the order they were first served."""
        out: dict[str, list[str]] = {}
        for rt in self._types.values():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group_version == (group, version)]

    def set_crd(self, crd: dict[str, Any]) -> None:
        """Serve what this CRD defines now (replacing what an older version of it defined)."""
        self.remove_crd(crd["metadata"]["name"])
        types = crd_types(crd)
        self._by_crd[crd["metadata"]["name"]] = types
        for rt in types:
            self._add(rt)

    def remove_crd(self, name: str) -> list[ResourceType]:
        types = self._by_crd.pop(name, [])
        for rt in types:
            self._types.pop((rt.group, rt.version, rt.plural), None)
        return types

    def storage_types(self) -> list[ResourceType]:
        """One type per storage prefix (a CRD with two versions stores both under one prefix)."""
        seen: dict[str, ResourceType] = {}
        for rt in self._types.values():
            seen.setdefault(rt.storage, rt)
        return list(seen.values())
