"""kube-controllers' one job: the Kubernetes kinds (and Calico's and ENIConfig, stored as CRDs) mirrored from
the API into the etcd datastore the agents read, as Calico's kube-controllers does for its etcd install.

The API side is the Kubernetes store (vpcnet/datastore/kube.py), so the mirror follows the API through the
datastore's reflectors: list, watch with bookmarks, relist on 410 with the deletions of the gap synthesized,
backoff, hang detection. A snapshot makes etcd match the API (write what differs, delete what vanished);
then every change is copied as it comes. `revision` says how far the mirror has caught up: every API change
up to it is in etcd (the store's progress, which bookmarks move on quiet kinds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vpcnet.datastore.resources import ResourceStore, StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError, EventType, WatchCompacted

log = logging.getLogger(__name__)

APPLY_BATCH = 40  # documents per etcd transaction (each takes a condition and a write; etcd allows 128 ops)
RETRY_MAX = 5.0

# The kinds users and the cluster write and the agents read; the IPAM's own blocks, handles and affinities
# are the agents' and stay in etcd.
MIRRORED = (
    "namespace",
    "pod",
    "node",
    "serviceaccount",
    "networkpolicy.networking.k8s.io",
    "eniconfig.crd.k8s.amazonaws.com",
    "securitygrouppolicy.vpcresources.k8s.aws",
    "networkpolicy.projectcalico.org",
    "globalnetworkpolicy.projectcalico.org",
    "networkset.projectcalico.org",
    "globalnetworkset.projectcalico.org",
    "tier.projectcalico.org",
    "ippool.projectcalico.org",
    "ipamconfiguration.projectcalico.org",
)
_API_ONLY_METADATA = ("resourceVersion", "managedFields", "generation", "selfLink")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def etcd_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """An API object as etcd's readers know it: without what only the API keeps (resourceVersion,
    managedFields, kubectl's last-applied copy)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _API_ONLY_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}


class Mirror:
    """Mirrors `kinds` from `api` into `store`; calls `on_progress(revision)` as it catches up."""

    def __init__(
        self,
        api: ResourceStoreLike,
        store: ResourceStore,
        kinds: Sequence[str] = MIRRORED,
        on_progress: Callable[[int], None] = lambda _r: None,
    ) -> None:
        self.api = api
        self.store = store
        self.kinds = list(kinds)
        self.on_progress = on_progress
        self.revision = 0  # every API change up to it is in etcd

    def _progress(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            self.on_progress(revision)

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._snapshot_and_watch()
            except WatchCompacted:
                log.info("mirror: the store's event log moved past us; taking a snapshot again")
            except DatastoreError as exc:  # etcd or the API away: the reflectors keep their caches
                log.warning("mirror: %s; again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _snapshot_and_watch(self) -> None:
        items, revision = await self.api.snapshot(self.kinds)
        await self.reconcile(items)
        self._progress(revision)
        async for event in self.api.watch(self.kinds, revision + 1, self._progress):
            if event.type is EventType.PUT:
                assert event.resource is not None
                await self.store.apply([etcd_document(event.resource.body)])
            else:
                await self.store.delete([event.ref])

    async def reconcile(self, items: Sequence[StoredResource]) -> None:
        """etcd's copy of the kinds made equal to `items`: changed documents written, vanished ones gone."""
        docs = [etcd_document(item.body) for item in items]
        for start in range(0, len(docs), APPLY_BATCH):
            await self.store.apply(docs[start : start + APPLY_BATCH])
        wanted = {item.ref for item in items}
        gone = []
        for kind in self.kinds:
            stored, _ = await self.store.list(kind)
            gone += [item.ref for item in stored if item.ref not in wanted]
        gone.sort()
        for start in range(0, len(gone), APPLY_BATCH):
            await self.store.delete(gone[start : start + APPLY_BATCH])
        if gone:
            log.info("mirror: removed %d vanished from etcd", len(gone))
