"""The resource store's verbs (list, get, apply, delete, snapshot by vpcnet kind path) over the Kubernetes
API, so that `vpcnet apply/get/delete` are thin conveniences over the lab's API, its one source of truth.

Documents go in and come out in the form users write (Calico kinds as projectcalico.org/v3); the API stores
Calico kinds as their crd.projectcalico.org/v1 CRDs (vpcnet.controllers.kinds). The API has no transaction
over several objects: `apply` writes one object after another (callers validate everything first)."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from vpcnet.controllers.apiclient import ApiClient, ApiError
from vpcnet.controllers.kinds import MIRRORED, Mirrored, from_api_document, to_api_document
from vpcnet.datastore.resources import (
    ApplyResult,
    ResourceError,
    ResourceRef,
    StoredResource,
    kind_path,
    ref_of,
)

List = list  # the method named `list` shadows the builtin in annotations
_SERVER_OWNED = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


def mirrored_for(path: str) -> Mirrored:
    for m in MIRRORED:
        if kind_path(m.api_version, m.kind) == path:
            return m
    raise ResourceError(f"{path}: not a kind the lab's API serves")


def contains(have: Any, want: Any) -> bool:
    """`want` is in `have`: every field `want` sets has that value in `have` (which may hold more, such
    as the defaults the server filled in)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


class ApiResourceStore:
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def _stored(self, m: Mirrored, obj: dict[str, Any]) -> StoredResource:
        body = from_api_document(obj, m)
        version = str(obj.get("metadata", {}).get("resourceVersion", "0"))
        body["metadata"]["resourceVersion"] = version
        meta = obj.get("metadata", {})
        ref = ResourceRef(
            kind_path(m.api_version, m.kind),
            meta.get("namespace") if m.api.namespaced else None,
            meta["name"],
        )
        return StoredResource(ref, body, int(version))

    async def get(self, ref: ResourceRef) -> StoredResource | None:
        m = mirrored_for(ref.kind)
        obj = await self.client.get(m.api, ref.namespace, ref.name)
        return self._stored(m, obj) if obj is not None else None

    async def list(self, kind: str, namespace: str | None = None) -> tuple[List[StoredResource], int]:
        m = mirrored_for(kind)
        try:
            listing = await self.client.list(m.api, namespace if m.api.namespaced else None)
        except ApiError as exc:
            if exc.code == 404:  # a CRD not installed: none of its kind
                return [], 0
            raise
        items = [self._stored(m, obj) for obj in listing.get("items", [])]
        return items, int(listing.get("metadata", {}).get("resourceVersion", 0))

    async def snapshot(self, kinds: Collection[str]) -> tuple[List[StoredResource], int]:
        items: list[StoredResource] = []
        revision = 0
        for kind in sorted(kinds):
            listed, at = await self.list(kind)
            items += listed
            revision = max(revision, at)
        return items, revision

    async def apply(self, documents: Sequence[Mapping[str, Any]]) -> ApplyResult:
        """Create what is missing, replace what differs (labels, annotations, spec...), leave the rest."""
        created, configured, unchanged = [], [], []
        ordered = sorted(documents, key=lambda d: d.get("kind") != "Namespace")
        for i, doc in enumerate(ordered):
            ref = ref_of(doc, f"document {i + 1}")
            m = mirrored_for(ref.kind)
            obj = to_api_document(copy.deepcopy(dict(doc)))
            current = await self.client.get(m.api, ref.namespace, ref.name)
            try:
                if current is None:
                    await self.client.create(m.api, _without_server_owned(obj))
                    created.append(ref)
                    continue
                if _same(obj, current):
                    unchanged.append(ref)
                    continue
                body = _without_server_owned(obj)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await self.client.replace(m.api, body)
                configured.append(ref)
            except ApiError as exc:
                raise ResourceError(f"{ref}: the API refused it: {exc}") from None
        return ApplyResult(0, created, configured, unchanged)

    async def delete(self, refs: Sequence[ResourceRef]) -> List[ResourceRef]:
        deleted = []
        for ref in refs:
            if await self.client.delete(mirrored_for(ref.kind).api, ref.namespace, ref.name):
                deleted.append(ref)
        return deleted


def _without_server_owned(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for key in _SERVER_OWNED:
        meta.pop(key, None)
    return out


def _same(new: dict[str, Any], current: dict[str, Any]) -> bool:
    """Nothing to write: the document's fields are all there, and its labels and annotations are exactly
    the stored ones (a label removed from the file is removed from the object)."""
    meta, old = new.get("metadata", {}), current.get("metadata", {})
    if (meta.get("labels") or {}) != (old.get("labels") or {}):
        return False
    if (meta.get("annotations") or {}) != (old.get("annotations") or {}):
        return False
    rest = {k: v for k, v in new.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    return contains(current, rest)
