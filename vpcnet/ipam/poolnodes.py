"""A node's presence in the Calico-mode datastore: its record, bound to a lease it keeps alive.

When the agent stops or its node dies, the lease expires and the record disappears: other nodes withdraw
their routes to it at once, and the IPAM cleanup releases what it held after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from vpcnet.datastore.types import Datastore, DatastoreError
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolstore import node_key

log = logging.getLogger(__name__)


class NodeRegistration:
    def __init__(self, datastore: Datastore, record: NodeRecord, ttl_seconds: int = 15) -> None:
        self.datastore = datastore
        self.record = record
        self.ttl = ttl_seconds
        self._lease = 0
        self._task: asyncio.Task[None] | None = None

    async def register(self) -> None:
        """Write the record under a fresh lease (replacing an older record of the same node)."""
        self._lease = await self.datastore.grant_lease(self.ttl)
        await self.datastore.put(node_key(self.record.name), self.record.to_bytes(), lease=self._lease)

    async def start(self) -> None:
        await self.register()
        self._task = asyncio.create_task(self._keep_alive(), name=f"node-lease-{self.record.name}")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if await self.datastore.keep_alive(self._lease) <= 0:
                    log.warning("node %s: lease expired; registering again", self.record.name)
                    await self.register()
            except DatastoreError as err:
                log.warning("node %s: lease keep-alive failed (%s); retrying", self.record.name, err)

    async def stop(self, withdraw: bool = True) -> None:
        """Stop refreshing; with withdraw, revoke the lease so the record goes now (a clean shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if withdraw and self._lease:
            with contextlib.suppress(DatastoreError):
                await self.datastore.revoke_lease(self._lease)
