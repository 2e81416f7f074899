"""The agent's own Node and every ENIConfig, followed in the datastore (the Kubernetes API, or etcd where
kube-controllers mirror both): a snapshot, then a watch from its revision; when the history is gone
(compaction, 410) a fresh snapshot; on any failure a retry with backoff and jitter. After the snapshot and
after each change the consumer gets the whole current view, so it never has to merge events itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vpcnet.datastore.resources import ResourceEvent, StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError, EventType, WatchCompacted

log = logging.getLogger("vpcnet.agent.eniconfig")

NODE_KIND = "node"
ENICONFIG_KIND = "eniconfig.crd.k8s.amazonaws.com"
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0


@dataclass(frozen=True)
class NodeView:
    """What the datastore says now: the node's object (None: not registered yet) and ENIConfigs by name."""

    node: Mapping[str, Any] | None
    eniconfigs: Mapping[str, StoredResource]


class NodeConfigFeed:
    def __init__(self, store: ResourceStoreLike, node_name: str, on_view: Callable[[NodeView], None]) -> None:
        self.store = store
        self.node_name = node_name
        self.on_view = on_view
        self.revision = 0
        self.synced = asyncio.Event()  # the first snapshot was handed over
        self.last_error = ""
        self._node: dict[str, Any] | None = None
        self._configs: dict[str, StoredResource] = {}

    async def run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._snapshot()
                self.last_error, delay = "", BACKOFF_FIRST
                await self._follow()
            except asyncio.CancelledError:
                raise
            except WatchCompacted as err:
                log.info("eniconfig: %s; reading the node and ENIConfigs again", err)
            except Exception as err:  # the datastore is away: keep the last view, try again
                self.last_error = str(err)
                log.warning("eniconfig: watch failed (%s); retrying in %.1f s", err, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, BACKOFF_MAX)

    async def _snapshot(self) -> None:
        items, revision = await self.store.snapshot((NODE_KIND, ENICONFIG_KIND))
        self._node, self._configs = None, {}
        for item in items:
            self._take(item)
        self.revision = revision
        self._hand_over()
        self.synced.set()

    async def _follow(self) -> None:
        async for event in self.store.watch((NODE_KIND, ENICONFIG_KIND), self.revision + 1):
            self.revision = max(self.revision, event.revision)
            if self._apply(event):
                self._hand_over()
        raise DatastoreError("the node and ENIConfig watch ended")

    def _apply(self, event: ResourceEvent) -> bool:
        """Take one change; whether it concerns us (another node's change does not)."""
        ref = event.ref
        if ref.kind == NODE_KIND and ref.name != self.node_name:
            return False
        if event.type is EventType.DELETE or event.resource is None:
            if ref.kind == NODE_KIND:
                self._node = None
            else:
                self._configs.pop(ref.name, None)
            return True
        self._take(event.resource)
        return True

    def _take(self, item: StoredResource) -> None:
        if item.ref.kind == NODE_KIND:
            if item.ref.name == self.node_name and item.invalid is None:
                self._node = item.body
        elif item.ref.kind == ENICONFIG_KIND:
            self._configs[item.ref.name] = item

    def _hand_over(self) -> None:
        self.on_view(NodeView(self._node, dict(self._configs)))
