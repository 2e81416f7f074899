"""The resource store over the Kubernetes API (Calico's KDD): the same consumer-facing shape as the etcd
ResourceStore (vpcnet.datastore.store.ResourceStoreLike), so the policy agent, the pool IPAM and the CLI
take either.

Reads that a consumer follows (`snapshot`, `watch`) come from one reflector per kind, started on first use
and kept for the store's life: list, watch with bookmarks, relist on 410 with the gap synthesized, resync,
backoff, hang detection (vpcnet/datastore/reflector.py). A consumer never sees a 410: the reflector turns
it into the events that bring the consumer's view to the API's. One-off reads (`get`, `list`) go to the API.

Writes are object by object, since the API has no multi-object transaction: `apply` validates every
document first (bad input changes nothing), then creates or replaces each one, re-reading on a conflict
(as kubectl apply does, a failure half-way leaves the earlier documents applied). `create`, `replace` and
`delete_at` are the compare-and-swap on resourceVersion that Calico's IPAM uses in KDD; `replace_status` is
the same on the status subresource (what a kubelet writes).

Revisions: resourceVersions read as ints (true of every etcd-backed API server, where they are etcd
revisions); the contract calls them opaque, so a server whose versions are not integers is refused with an
error that says so. The revision of a snapshot and of progress(R) is explained in kube_feed.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

from vpcnet.datastore.kube_client import ApiStatusError, KindListerWatcher, KubeApi, status_error
from vpcnet.datastore.kube_feed import EventFeed, Progress
from vpcnet.datastore.kube_kinds import KubeKind, kube_kind, user_document
from vpcnet.datastore.reflector import EventType as ReflectorEventType
from vpcnet.datastore.reflector import Reflector, ReflectorEvent, ReflectorSettings, object_rv
from vpcnet.datastore.resources import (
    ApplyResult,
    ResourceError,
    ResourceEvent,
    ResourceRef,
    StoredResource,
    ref_of,
)
from vpcnet.datastore.types import DatastoreError, DatastoreUnavailable, EventType

List = list  # `list` is a method name below
_APPLY_ATTEMPTS = 20
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


def revision(resource_version: str, where: str) -> int:
    try:
        return int(resource_version)
    except ValueError:
        raise DatastoreError(
            f"{where}: resourceVersion {resource_version!r} is not an integer; vpcnet's Kubernetes datastore "
            "needs an etcd-backed API server, whose resourceVersions are etcd revisions"
        ) from None


class KubeResourceStore:
    def __init__(
        self,
        api: KubeApi,
        reflector_settings: ReflectorSettings | None = None,
        *,
        sync_timeout: float = 60.0,
        feed: EventFeed | None = None,
    ) -> None:
        self.api = api
        self.reflector_settings = reflector_settings or ReflectorSettings()
        self.sync_timeout = sync_timeout
        self.feed = feed or EventFeed()
        self.reflectors: dict[str, Reflector] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.api.close()

    # ------------------------------------------------------------------ followed reads (reflectors)

    async def _follow(self, kinds: Collection[str]) -> None:
        """Start a reflector for each kind not yet followed, and wait until every one has listed."""
        wanted = [kube_kind(kind) for kind in kinds]
        for kk in wanted:
            if kk.kind_path in self.reflectors:
                continue
            reflector = Reflector(
                kk.kind_path,
                KindListerWatcher(self.api, kk.collection_path()),
                lambda event, kk=kk: self._on_event(kk, event),  # type: ignore[misc]
                self.reflector_settings,
            )
            self.reflectors[kk.kind_path] = reflector
            self._tasks[kk.kind_path] = asyncio.create_task(reflector.run(), name=f"reflector {kk.kind_path}")
        pending = [
            self.reflectors[kk.kind_path]
            for kk in wanted
            if not self.reflectors[kk.kind_path].synced.is_set()
        ]
        if not pending:
            return
        try:
            async with asyncio.timeout(self.sync_timeout):
                await asyncio.gather(*(r.synced.wait() for r in pending))
        except TimeoutError:
            late = [r for r in pending if not r.synced.is_set()]
            detail = "; ".join(f"{r.name}: {r.stats.last_error or 'no answer'}" for r in late)
            raise DatastoreUnavailable(
                f"Kubernetes API: no list within {self.sync_timeout:.0f}s ({detail})"
            ) from None

    def _on_event(self, kk: KubeKind, event: ReflectorEvent) -> None:
        where = f"{kk.kind_path} {event.key}".rstrip()
        rev = revision(event.resource_version, where)
        if event.type in (ReflectorEventType.SYNCED, ReflectorEventType.PROGRESS):
            self.feed.advance(kk.kind_path, rev)
            return
        assert event.object is not None
        stored = _stored(kk, event.object)
        if event.type is ReflectorEventType.DELETED:
            self.feed.record(kk.kind_path, ResourceEvent(EventType.DELETE, stored.ref, None, rev))
        else:
            self.feed.record(kk.kind_path, ResourceEvent(EventType.PUT, stored.ref, stored, rev))
        if not event.from_list:  # a relist's diff comes in no order; its SYNCED moves the kind on
            self.feed.advance(kk.kind_path, rev)

    async def snapshot(self, kinds: Collection[str]) -> tuple[List[StoredResource], int]:
        await self._follow(kinds)
        # No await from here on: the caches and the feed's position are read at one moment.
        items = [
            _stored(kube_kind(kind), obj) for kind in kinds for obj in self.reflectors[kind].cache.values()
        ]
        return items, self.feed.mark(kinds)

    async def watch(
        self, kinds: Collection[str], start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[ResourceEvent]:
        await self._follow(kinds)
        sub = self.feed.subscribe(kinds, start_revision)
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, Progress):
                    if progress is not None:
                        progress(item.revision)
                else:
                    yield item
        finally:
            self.feed.unsubscribe(sub)

    # ------------------------------------------------------------------ one-off reads

    async def get(self, ref: ResourceRef) -> StoredResource | None:
        kk = kube_kind(ref.kind)
        path = kk.object_path(ref.namespace, ref.name)
        status, body = await self.api.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise status_error("GET", path, status, body)
        return _stored(kk, body)

    async def list(self, kind: str, namespace: str | None = None) -> tuple[List[StoredResource], int]:
        kk = kube_kind(kind)
        result = await self.api.list(kk.collection_path(namespace))
        items = [_stored(kk, obj) for obj in result.items]
        return items, revision(result.resource_version, f"list {kind}")

    # ------------------------------------------------------------------ writes

    async def create(self, document: Mapping[str, Any]) -> StoredResource | None:
        kk, ref, body = _prepared(document)
        path = kk.collection_path(ref.namespace)
        status, answer = await self.api.request("POST", path, body=body)
        if status == 409:
            return None
        if status not in (200, 201):
            raise status_error("POST", path, status, answer)
        return _stored(kk, answer)

    async def replace(self, document: Mapping[str, Any], expected_revision: int) -> StoredResource | None:
        kk, ref, body = _prepared(document)
        body["metadata"]["resourceVersion"] = str(expected_revision)
        path = kk.object_path(ref.namespace, ref.name)
        status, answer = await self.api.request("PUT", path, body=body)
        if status in (404, 409):
            return None
        if status not in (200, 201):
            raise status_error("PUT", path, status, answer)
        return _stored(kk, answer)

    async def replace_status(
        self, document: Mapping[str, Any], expected_revision: int
    ) -> StoredResource | None:
        """Overwrite the status of a resource still at expected_revision (the `/status` subresource: the
        rest of the document is ignored by the server); None when it changed or is gone."""
        kk, ref, body = _prepared(document)
        body["metadata"]["resourceVersion"] = str(expected_revision)
        path = kk.object_path(ref.namespace, ref.name) + "/status"
        status, answer = await self.api.request("PUT", path, body=body)
        if status in (404, 409):
            return None
        if status not in (200, 201):
            raise status_error("PUT", path, status, answer)
        return _stored(kk, answer)

    async def delete_at(self, ref: ResourceRef, expected_revision: int) -> bool:
        kk = kube_kind(ref.kind)
        path = kk.object_path(ref.namespace, ref.name)
        options = {"kind": "DeleteOptions", "apiVersion": "v1"}
        options["preconditions"] = {"resourceVersion": str(expected_revision)}  # type: ignore[assignment]
        status, answer = await self.api.request("DELETE", path, body=options)
        if status in (404, 409):
            return False
        if status not in (200, 202):
            raise status_error("DELETE", path, status, answer)
        return True

    async def apply(self, documents: Sequence[Mapping[str, Any]]) -> ApplyResult:
        prepared = [_prepared(doc, f"document {i + 1}") for i, doc in enumerate(documents)]
        seen: dict[ResourceRef, int] = {}
        for i, (_, ref, _) in enumerate(prepared):
            if ref in seen:
                raise ResourceError(
                    f"document {i + 1}: {ref} appears twice in one apply (first as {seen[ref] + 1})"
                )
            seen[ref] = i
        result = ApplyResult(revision=0)
        newest = 0
        # Namespaces first, as kubectl does: the objects in them are refused until they exist.
        prepared.sort(key=lambda p: p[1].kind != "namespace")
        for kk, ref, body in prepared:
            outcome, rev = await self._apply_one(kk, ref, body)
            getattr(result, outcome).append(ref)
            newest = max(newest, rev)
        return ApplyResult(newest, result.created, result.configured, result.unchanged)

    async def _apply_one(self, kk: KubeKind, ref: ResourceRef, body: dict[str, Any]) -> tuple[str, int]:
        for _ in range(_APPLY_ATTEMPTS):
            current = await self.get(ref)
            if current is None:
                created = await self.create(kk.from_api(body))
                if created is not None:
                    return "created", created.revision
                continue
            if _same(kk.to_api(current.body), body):
                return "unchanged", current.revision
            replaced = await self.replace(kk.from_api(body), current.revision)
            if replaced is not None:
                return "configured", replaced.revision
        raise ResourceError(f"apply: {ref} kept changing under us ({_APPLY_ATTEMPTS} attempts)")

    async def delete(self, refs: Sequence[ResourceRef]) -> List[ResourceRef]:
        deleted = []
        for ref in refs:
            kk = kube_kind(ref.kind)
            path = kk.object_path(ref.namespace, ref.name)
            status, answer = await self.api.request("DELETE", path)
            if status == 404:
                continue
            if status not in (200, 202):
                raise status_error("DELETE", path, status, answer)
            deleted.append(ref)
        return deleted


def _stored(kk: KubeKind, obj: Mapping[str, Any]) -> StoredResource:
    body = kk.from_api(obj)
    metadata = body.get("metadata") or {}
    ref = ResourceRef(
        kk.kind_path, metadata.get("namespace") if kk.namespaced else None, str(metadata.get("name"))
    )
    return StoredResource(ref, body, revision(object_rv(obj), str(ref)))


def _prepared(
    document: Mapping[str, Any], where: str = "document"
) -> tuple[KubeKind, ResourceRef, dict[str, Any]]:
    """The kind, reference and API body of a document; every check before anything is sent."""
    document = user_document(document)
    ref = ref_of(document, where)
    try:
        kk = kube_kind(ref.kind)
    except LookupError as err:
        raise ResourceError(f"{where}: {err}") from None
    if kk.namespaced and ref.namespace is None:
        raise ResourceError(f"{where} ({ref}): metadata.namespace: required for {kk.kind}")
    if not kk.namespaced and ref.namespace is not None:
        raise ResourceError(
            f"{where} ({ref}): metadata.namespace: must not be set, {kk.kind} is cluster-scoped"
        )
    body = kk.to_api(document)
    for name in _SERVER_FIELDS:
        body["metadata"].pop(name, None)
    return kk, ref, body


def contains(have: Any, want: Any) -> bool:
    """`want` is in `have`: every field `want` sets has that value in `have` (which may hold more, such as
    the defaults the server filled in)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


def _same(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Nothing to write: the stored object already says everything the document says (fields the server
    adds, its defaults and status are not ours to compare), with exactly the document's labels and
    annotations (one removed from the file is removed from the object)."""
    meta, old = desired.get("metadata") or {}, current.get("metadata") or {}
    for key in ("labels", "annotations"):
        if (meta.get(key) or {}) != (old.get(key) or {}):
            return False
    if any(old.get(k) != v for k, v in meta.items() if k not in ("labels", "annotations")):
        return False
    rest = {k: v for k, v in desired.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    return contains(current, rest)


__all__ = ["ApiStatusError", "KubeResourceStore", "contains", "revision"]
