"""kube-controllers' one job: the Kubernetes kinds (and Calico's and ENIConfig, stored as CRDs) mirrored from
the API into the etcd datastore the agents read, as Calico's kube-controllers does for its etcd install.

Per kind: list, make etcd match the list (write what differs, delete what vanished), then watch from the
list's version with bookmarks and copy every event; when the watch ends or fails, list again (a relist
catches deletions missed in a gap). `revision` says how far the mirror has caught up: every API change up
to it is in etcd (the minimum over the kinds of the last event or bookmark seen).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from vpcnet.controllers.apiclient import ApiClient, ApiError
from vpcnet.controllers.kinds import MIRRORED, Mirrored, from_api_document
from vpcnet.datastore.resources import ResourceRef, ResourceStore, kind_path
from vpcnet.datastore.types import DatastoreError

log = logging.getLogger(__name__)

APPLY_BATCH = 40  # documents per etcd transaction (each takes a condition and a write; etcd allows 128 ops)
WATCH_TIMEOUT = 300
RETRY_MAX = 5.0


def ref_in_etcd(mirrored: Mirrored, obj: dict[str, Any]) -> ResourceRef:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace") if mirrored.api.namespaced else None
    return ResourceRef(kind_path(mirrored.api_version, mirrored.kind), namespace, str(meta.get("name")))


class Mirror:
    """Mirrors `kinds` from the API into `store`; calls `on_progress(revision)` as it catches up."""

    def __init__(
        self,
        client: ApiClient,
        store: ResourceStore,
        kinds: Sequence[Mirrored] = MIRRORED,
        on_progress: Callable[[int], None] = lambda _r: None,
    ) -> None:
        self.client = client
        self.store = store
        self.kinds = list(kinds)
        self.on_progress = on_progress
        self.seen: dict[str, int] = {}
        self.reported = 0

    @property
    def revision(self) -> int:
        """Every API change up to this revision is in etcd (0 until every kind has been listed)."""
        if len(self.seen) < len(self.kinds):
            return 0
        return min(self.seen.values())

    def _saw(self, mirrored: Mirrored, revision: int) -> None:
        key = mirrored.api.path()
        self.seen[key] = max(self.seen.get(key, 0), revision)
        if self.revision > self.reported:
            self.reported = self.revision
            self.on_progress(self.reported)

    async def run(self) -> None:
        await asyncio.gather(*(self._run_kind(m) for m in self.kinds))

    async def _run_kind(self, mirrored: Mirrored) -> None:
        delay = 0.2
        while True:
            try:
                await self._list_and_watch(mirrored)
                delay = 0.2
            except (ApiError, DatastoreError, OSError, ValueError) as exc:
                if not (isinstance(exc, ApiError) and exc.code == 404):  # a CRD not installed (yet)
                    log.warning("mirror of %s: %s; listing again", mirrored.api.plural, exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RETRY_MAX)

    async def _list_and_watch(self, mirrored: Mirrored) -> None:
        listing = await self.client.list(mirrored.api)
        version = str(listing.get("metadata", {}).get("resourceVersion", "0"))
        await self.reconcile(mirrored, listing.get("items", []))
        self._saw(mirrored, int(version))
        async for event in self.client.watch(mirrored.api, version, timeout_seconds=WATCH_TIMEOUT):
            kind, obj = event.get("type"), event.get("object") or {}
            revision = int(obj.get("metadata", {}).get("resourceVersion", 0) or 0)
            if kind == "ERROR":
                raise ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message")))
            if kind in ("ADDED", "MODIFIED"):
                await self.store.apply([from_api_document(obj, mirrored)])
            elif kind == "DELETED":
                await self.store.delete([ref_in_etcd(mirrored, obj)])
            self._saw(mirrored, revision)

    async def reconcile(self, mirrored: Mirrored, items: Sequence[dict[str, Any]]) -> None:
        """etcd's copy of the kind made equal to `items`: changed documents written, vanished ones deleted."""
        docs = [from_api_document(obj, mirrored) for obj in items]
        for start in range(0, len(docs), APPLY_BATCH):
            await self.store.apply(docs[start : start + APPLY_BATCH])
        wanted = {ref_in_etcd(mirrored, obj) for obj in items}
        stored, _ = await self.store.list(kind_path(mirrored.api_version, mirrored.kind))
        gone = sorted(item.ref for item in stored if item.ref not in wanted)
        for start in range(0, len(gone), APPLY_BATCH):
            await self.store.delete(gone[start : start + APPLY_BATCH])
        if gone:
            log.info("mirror of %s: removed %d vanished from etcd", mirrored.api.plural, len(gone))
