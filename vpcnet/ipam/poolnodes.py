"""A node's presence in the Calico-mode IPAM: a Lease it renews (vpcnet/ipam/poolobjects.py says why a Lease).

When the agent stops or its node dies, the lease is no longer renewed: once leaseDurationSeconds have passed
other nodes withdraw their routes to it (they wake up at the expiry time, no event needed), and the IPAM
cleanup releases what it held after a grace period. A clean shutdown may delete the lease (withdraw now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from vpcnet.datastore.resources import StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolobjects import lease_document, lease_ref

log = logging.getLogger(__name__)


class NodeRegistration:
    def __init__(
        self,
        store: ResourceStoreLike,
        record: NodeRecord,
        ttl_seconds: int = 15,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.record = record
        self.ttl = ttl_seconds
        self.clock = clock
        self._current: StoredResource | None = None
        self._task: asyncio.Task[None] | None = None

    async def register(self) -> None:
        """Write the lease renewed now (replacing an older lease of the same node, or a tombstone)."""
        for _ in range(20):
            document = lease_document(self.record.name, self.record, self.ttl, self.clock())
            if self._current is None:
                self._current = await self.store.create(document)
                if self._current is None:
                    self._current = await self.store.get(lease_ref(self.record.name))
                    if self._current is None:
                        continue
                else:
                    return
            renewed = await self.store.replace(document, self._current.revision)
            if renewed is not None:
                self._current = renewed
                return
            self._current = None  # changed under us (a GC tombstone, or an earlier run): read it again
        raise DatastoreError(f"node {self.record.name}: its lease kept changing under us")

    async def start(self) -> None:
        await self.register()
        self._task = asyncio.create_task(self._keep_alive(), name=f"node-lease-{self.record.name}")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.register()
            except DatastoreError as err:
                log.warning("node %s: lease renewal failed (%s); retrying", self.record.name, err)

    async def stop(self, withdraw: bool = True) -> None:
        """Stop renewing; with withdraw, delete the lease so the node is gone now (a clean shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if withdraw and self._current is not None:
            with contextlib.suppress(DatastoreError):
                await self.store.delete_at(self._current.ref, self._current.revision)
            self._current = None
