"""Which lists a strategic merge patch merges, per kind: the upstream types' patchStrategy/patchMergeKey tags.

Source: the `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` extensions that kube-apiserver's
OpenAPI publishes from the Go struct tags of k8s.io/api (core/v1, networking/v1, coordination/v1; apps/v1,
policy/v1 and rbac/v1 for the kinds deploy/ installs, whose pod templates take the Pod's rules) and
apiextensions v1, read from the published schemas of Kubernetes 1.25, 1.30, 1.32 and 1.37; the table is their
union (a field a client version does not know never appears in its patches).

Every list not named here is atomic, a patch replaces it whole: e.g. Pod spec.tolerations,
spec.readinessGates, containers[].envFrom/args/command, Node spec.taints, Namespace spec.finalizers,
ServiceAccount imagePullSecrets, every NetworkPolicy list (ingress, egress, from, to, ports, policyTypes),
CRD spec.versions. Tags below an atomic list never take effect (the list is replaced before anything could
merge inside it), so e.g. Pod status.containerStatuses[].volumeMounts and CRD
versions[].schema...x-kubernetes-validations are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ListMerge:
    """A list merged, not replaced: objects matched by `key`, or scalars as a set when `key` is None."""

    key: str | None
    retain_keys: bool = False  # the field also carries patchStrategy retainKeys (clients send $retainKeys)


@dataclass(eq=False)
class Schema:
    """What strategic merge needs to know of a type: its merged lists and the fields leading there."""

    fields: dict[str, FieldRule] = field(default_factory=dict)

    def field(self, name: str) -> FieldRule:
        """The rule for field `name`; a field the table does not name merges maps and replaces lists."""
        return self.fields.get(name, DEFAULT_RULE)


@dataclass(eq=False)
class FieldRule:
    """How one field merges, and the schema of its value (a map) or of its items (a list)."""

    merge: ListMerge | None = None
    schema: Schema = field(default_factory=Schema)


DEFAULT_RULE = FieldRule()

# Field paths from the kind's root; "[]" steps into a list's items.
_OBJECT_META = {"finalizers": ListMerge(None), "ownerReferences": ListMerge("uid")}
_CONTAINER = {
    "env": ListMerge("name"),
    "ports": ListMerge("containerPort"),
    "volumeDevices": ListMerge("devicePath"),
    "volumeMounts": ListMerge("mountPath"),
}


def _metadata(prefix: str = "metadata") -> dict[str, ListMerge]:
    return {f"{prefix}/{name}": rule for name, rule in _OBJECT_META.items()}


def _containers(field_name: str) -> dict[str, ListMerge]:
    paths = {f"spec/{field_name}": ListMerge("name")}
    paths.update({f"spec/{field_name}/[]/{name}": rule for name, rule in _CONTAINER.items()})
    return paths


_POD: dict[str, ListMerge] = {
    **_metadata(),
    **_containers("containers"),
    **_containers("initContainers"),
    **_containers("ephemeralContainers"),
    "spec/volumes": ListMerge("name", retain_keys=True),
    **_metadata("spec/volumes/[]/ephemeral/volumeClaimTemplate/metadata"),
    "spec/imagePullSecrets": ListMerge("name"),
    "spec/hostAliases": ListMerge("ip"),
    "spec/topologySpreadConstraints": ListMerge("topologyKey"),
    "spec/schedulingGates": ListMerge("name"),
    "spec/resourceClaims": ListMerge("name", retain_keys=True),
    "spec/evictionResponders": ListMerge("name"),
    "status/conditions": ListMerge("type"),
    "status/podIPs": ListMerge("ip"),
    "status/hostIPs": ListMerge("ip"),
    "status/resourceClaimStatuses": ListMerge("name", retain_keys=True),
    "status/nodeAllocatableResourceClaimStatuses": ListMerge("resourceClaimName"),
    "status/nodeAllocatableResourceClaimStatuses/[]/mapping": ListMerge("name"),
    "status/nodeAllocatableResourceClaimStatuses/[]/overhead": ListMerge("name"),
}


def _pod_template(prefix: str = "spec/template") -> dict[str, ListMerge]:
    """A workload's pod template: the Pod's metadata and spec rules under `prefix` (apps/v1 types)."""
    return {f"{prefix}/{path}": rule for path, rule in _POD.items() if not path.startswith("status/")}


_WORKLOAD = {**_metadata(), **_pod_template(), "status/conditions": ListMerge("type")}

MERGED_LISTS: dict[str, dict[str, ListMerge]] = {
    "v1/Pod": _POD,
    "v1/Namespace": {**_metadata(), "status/conditions": ListMerge("type")},
    "v1/Node": {
        **_metadata(),
        "spec/podCIDRs": ListMerge(None),
        "status/addresses": ListMerge("type"),
        "status/conditions": ListMerge("type"),
    },
    "v1/ServiceAccount": {**_metadata(), "secrets": ListMerge("name")},
    "v1/ConfigMap": _metadata(),
    "v1/Event": _metadata(),
    "networking.k8s.io/v1/NetworkPolicy": _metadata(),
    "coordination.k8s.io/v1/Lease": _metadata(),
    "apiextensions.k8s.io/v1/CustomResourceDefinition": _metadata(),
    # Stored only in the lab (deploy/'s objects); their lists as apps/v1, policy/v1 and rbac/v1 tag them.
    "apps/v1/Deployment": _WORKLOAD,
    "apps/v1/DaemonSet": _WORKLOAD,
    "policy/v1/PodDisruptionBudget": {**_metadata(), "status/conditions": ListMerge("type")},
    **{
        f"rbac.authorization.k8s.io/v1/{kind}": _metadata()
        for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    },
}


def _build(paths: dict[str, ListMerge]) -> Schema:
    root = Schema()
    for path, merge in paths.items():
        node = root
        steps = [step for step in path.split("/") if step != "[]"]
        for step in steps[:-1]:
            node = node.fields.setdefault(step, FieldRule()).schema
        node.fields.setdefault(steps[-1], FieldRule()).merge = merge
    return root


_SCHEMAS: dict[str, Schema] = {kind: _build(paths) for kind, paths in MERGED_LISTS.items()}


def schema_for(kind_key: str) -> Schema | None:
    """The strategic-merge schema of a built-in kind ("v1/Pod", "coordination.k8s.io/v1/Lease"), or None."""
    return _SCHEMAS.get(kind_key)


def known_kinds() -> list[str]:
    """The kind keys that accept a strategic merge patch."""
    return sorted(_SCHEMAS)
