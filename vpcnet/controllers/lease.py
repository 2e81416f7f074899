"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: the holder
renews `renewTime` every retry period; anyone may take a Lease whose renewTime is older than
leaseDurationSeconds; every write is a replace at the read resourceVersion, so two candidates cannot both win.
On a clean stop the holder releases the Lease (ReleaseOnCancel), so its successor need not wait it out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from vpcnet.datastore.resources import ResourceRef
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError

log = logging.getLogger(__name__)


def micro_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        with contextlib.suppress(ValueError, TypeError):
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
    return None


LEASE = "lease.coordination.k8s.io"


class LeaderElector:
    def __init__(
        self,
        store: ResourceStoreLike,
        identity: str,
        name: str = "vpcnet-kube-controllers",
        namespace: str = "kube-system",
        duration: float = 15.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.ref = ResourceRef(LEASE, namespace, name)
        self.identity = identity
        self.name = name
        self.namespace = namespace
        self.duration = duration
        self.clock = clock

    def _spec(self, acquired: str | None, transitions: int) -> dict[str, Any]:
        now = micro_time(self.clock())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        """Take or renew the Lease; True if we hold it now."""
        lease = await self.store.get(self.ref)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, 0),
            }
            return await self.store.create(body) is not None  # None: another made it first
        spec = lease.body.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder and holder != self.identity:
            renewed = parse_time(str(spec.get("renewTime", "")))
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            if renewed is not None and self.clock() < renewed + timedelta(seconds=duration):
                return False
            transitions += 1
        acquired = spec.get("acquireTime") if holder == self.identity else None
        body = {**lease.body, "spec": self._spec(acquired, transitions)}
        # A replace at the read resourceVersion: two candidates cannot both win.
        return await self.store.replace(body, lease.revision) is not None

    async def release(self) -> None:
        with contextlib.suppress(DatastoreError):
            lease = await self.store.get(self.ref)
            if lease is not None and (lease.body.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {
                    **lease.body["spec"],
                    "holderIdentity": "",
                    "renewTime": micro_time(datetime(1970, 1, 1, tzinfo=UTC)),
                }
                await self.store.replace({**lease.body, "spec": spec}, lease.revision)

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` while we lead: wait to acquire, renew every duration/3, stop `work` when a renewal
        fails for longer than the lease (someone else may lead by then), then campaign again."""
        retry = self.duration / 3
        try:
            while True:
                if not await self._safe_acquire():
                    await asyncio.sleep(retry)
                    continue
                log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
                task = asyncio.create_task(work())
                last_renewed = asyncio.get_running_loop().time()
                try:
                    while not task.done():
                        await asyncio.wait({task}, timeout=retry)
                        if task.done():
                            break
                        if await self._safe_acquire():
                            last_renewed = asyncio.get_running_loop().time()
                        elif asyncio.get_running_loop().time() - last_renewed > self.duration * 2 / 3:
                            log.warning("%s lost the lease; stopping until it leads again", self.identity)
                            break
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await self.release()

    async def _safe_acquire(self) -> bool:
        try:
            return await self.try_acquire()
        except DatastoreError as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False
