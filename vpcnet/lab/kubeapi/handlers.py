"""The REST verbs of the resource API over the object store: create, get, list, watch, update, patch,
delete, deletecollection, and the status subresource. Each answers an object or raises ApiError."""

from __future__ import annotations

import copy
import json
from typing import Any

from vpcnet.lab.kubeapi import errors
from vpcnet.lab.kubeapi.admission import prepare_create, prepare_update
from vpcnet.lab.kubeapi.bodies import apply_patch
from vpcnet.lab.kubeapi.errors import STALE, ApiError, bad_request
from vpcnet.lab.kubeapi.resources import CRD_TYPE, Registry, ResourceType
from vpcnet.lab.kubeapi.selectors import Selector
from vpcnet.lab.kubeapi.storage import ObjectStore

NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_UNDELETABLE_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
_PATCH_RETRIES = 5  # a patch re-reads and retries when a concurrent write moved the object
# Kinds whose DELETE answers the deleted object (the rest answer a Status), as in the real server.
_RETURNS_DELETED = frozenset({"Pod", "Namespace", "Node", "CustomResourceDefinition"})

Obj = dict[str, Any]


def _rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


class Verbs:
    """One instance per server: the object store, and the registry that CRD writes keep current."""

    def __init__(self, store: ObjectStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    async def start(self) -> None:
        """Serve the CRDs already stored, and make the namespaces every cluster has."""
        crds, _ = await self.store.list(CRD_TYPE, None)
        for crd in crds:
            self.registry.set_crd(crd)
        ns_type = self._namespace_type()
        for name in NAMESPACES:
            if await self.store.get(ns_type, None, name) is None:
                obj = prepare_create(ns_type, {"metadata": {"name": name}}, None)
                await self.store.create(ns_type, obj)

    def _namespace_type(self) -> ResourceType:
        rt = self.registry.lookup("", "v1", "namespaces")
        assert rt is not None
        return rt

    async def _must_get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = await self.store.get(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    async def _check_namespace(self, namespace: str) -> None:
        if await self.store.get(self._namespace_type(), None, namespace) is None:
            raise errors.not_found("namespaces", "", namespace)

    # --- reads ----------------------------------------------------------------------------------------------

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return await self._must_get(rt, namespace, name)

    async def list(self, rt: ResourceType, namespace: str | None, selector: Selector | None) -> Obj:
        items, revision = await self.store.list(rt, namespace)
        if selector is not None:
            items = [obj for obj in items if selector(obj)]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(revision)},
            "items": items,
        }

    # --- writes ---------------------------------------------------------------------------------------------

    async def create(self, rt: ResourceType, namespace: str | None, body: Any) -> Obj:
        obj = prepare_create(rt, body, namespace)
        if rt.namespaced:
            assert namespace is not None
            await self._check_namespace(namespace)
        if rt is CRD_TYPE:
            self._check_crd_names(obj)
        stored = await self.store.create(rt, obj)
        if stored is None:
            raise errors.already_exists(rt.plural, rt.group, obj["metadata"]["name"])
        if rt is CRD_TYPE:
            self.registry.set_crd(stored)
        return stored

    def _check_crd_names(self, crd: Obj) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            existing = self.registry.lookup(spec["group"], version["name"], spec["names"]["plural"])
            if existing is not None and existing.builtin:
                raise errors.invalid(
                    CRD_TYPE.kind,
                    CRD_TYPE.group,
                    crd["metadata"]["name"],
                    [errors.Cause("spec.names.plural", "Invalid value: a built-in resource has this name")],
                )

    async def update(
        self, rt: ResourceType, namespace: str | None, name: str, body: Any, *, status_only: bool
    ) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        body_name = (body.get("metadata") or {}).get("name")
        if body_name != name:
            raise bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        current = await self._must_get(rt, namespace, name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted not in (None, "") and str(wanted) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name, STALE)
        return await self._replace(rt, current, body, status_only=status_only)

    async def _replace(self, rt: ResourceType, current: Obj, new: Any, *, status_only: bool) -> Obj:
        obj = prepare_update(rt, current, new, status_only=status_only)
        stored = await self.store.update(rt, obj, _rv(current))
        if stored is None:
            raise errors.conflict(rt.plural, rt.group, current["metadata"]["name"], STALE)
        if rt is CRD_TYPE:
            self.registry.set_crd(stored)
        return stored

    async def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: bytes,
        content_type: str,
        *,
        status_only: bool,
    ) -> Obj:
        for attempt in range(_PATCH_RETRIES):
            current = await self._must_get(rt, namespace, name)
            patched = apply_patch(rt, copy.deepcopy(current), body, content_type)
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            wanted = (patched.get("metadata") or {}).get("resourceVersion")
            if wanted not in (None, "") and str(wanted) != current["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, STALE)  # the patch named a stale version
            try:
                return await self._replace(rt, current, patched, status_only=status_only)
            except ApiError as err:
                if err.reason != "Conflict" or attempt == _PATCH_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def delete(self, rt: ResourceType, namespace: str | None, name: str, body: bytes) -> Obj:
        options = _delete_options(body)
        current = await self._must_get(rt, namespace, name)
        if rt.kind == "Namespace" and rt.builtin and name in _UNDELETABLE_NAMESPACES:
            raise ApiError(
                403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        _check_preconditions(rt, current, options.get("preconditions") or {})
        revision = await self.store.delete(rt, current)
        if revision is None:
            raise errors.conflict(rt.plural, rt.group, name, STALE)
        await self._cascade(rt, current)
        if rt.kind in _RETURNS_DELETED and (rt.builtin or rt is CRD_TYPE):
            return current
        return errors.success(rt.plural, rt.group, name, current["metadata"].get("uid", ""))

    async def _cascade(self, rt: ResourceType, deleted: Obj) -> None:
        """What goes with a deleted namespace (its objects) or CRD (its custom resources and their kind)."""
        name = deleted["metadata"]["name"]
        if rt.kind == "Namespace" and rt.builtin:
            for other in self.registry.storage_types():
                if other.namespaced:
                    await self.store.delete_prefix(self.store.prefix(other, name))
        elif rt is CRD_TYPE:
            for gone in self.registry.remove_crd(name)[:1]:
                await self.store.delete_prefix(self.store.prefix(gone, None))

    async def delete_collection(
        self, rt: ResourceType, namespace: str | None, selector: Selector | None, body: bytes
    ) -> Obj:
        listing = await self.list(rt, namespace, selector)
        deleted = []
        for obj in listing["items"]:
            try:
                await self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], body)
                deleted.append(obj)
            except ApiError as err:
                if err.code != 404:
                    raise
        listing["items"] = deleted
        return listing


def _delete_options(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        options = json.loads(body)
    except ValueError as err:
        raise bad_request(f"DeleteOptions could not be decoded as JSON: {err}") from None
    if not isinstance(options, dict):
        raise bad_request("DeleteOptions must be a JSON object")
    if options.get("dryRun"):
        raise bad_request("dryRun is not served by the lab's API")
    return options


def _check_preconditions(rt: ResourceType, current: Obj, preconditions: dict[str, Any]) -> None:
    meta = current["metadata"]
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(field)
        if wanted and str(wanted) != str(meta.get(field)):
            raise errors.conflict(
                rt.plural,
                rt.group,
                meta["name"],
                f"Precondition failed: {label} in precondition: {wanted}, "
                f"{label} in object meta: {meta.get(field)}",
            )
