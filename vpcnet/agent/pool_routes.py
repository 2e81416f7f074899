"""Calico mode: keep this node's routes, tunnel and NAT in step with the datastore (Felix's route manager).

Routes are computed from block affinities, not learned over BGP: the datastore already holds who owns
which block and it is watched anyway, so one watch replaces a BIRD process per node and its N-1 BGP
sessions, a node that dies is withdrawn when its lease expires, and borrowed addresses get their /32s
from the same data. The loop: take a snapshot of blocks, node leases and pools (a ResourceStoreLike: etcd
or the Kubernetes API), render, apply only the difference; then watch from the snapshot's revision, and on
any relevant change do it again (changes that arrive together are handled together). A lease renewal that
changes nothing is not a change; the loop also wakes when the next live lease would expire (an expiry is
no event). A periodic resync re-applies even without events (repairs manual edits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from vpcnet.dataplane.kernel_cmd import CommandRunner, SubprocessRunner
from vpcnet.dataplane.poolroutes import PoolDataplane, render
from vpcnet.dataplane.poolroutes_apply import ApplyStats, IpipUnsupported, apply_pool_dataplane
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreError, EventType, WatchCompacted
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolobjects import (
    BLOCK_KIND,
    IPAMCONFIG_KIND,
    IPPOOL_KIND,
    LEASE_KIND,
    NodeLease,
    parse_block,
    parse_lease,
)
from vpcnet.ipam.poolstore import PoolConfig, parse_pool_config

log = logging.getLogger(__name__)

KINDS = (BLOCK_KIND, LEASE_KIND, IPPOOL_KIND, IPAMCONFIG_KIND)


class PoolRouteSync:
    def __init__(
        self,
        store: ResourceStoreLike,
        local: NodeRecord,
        *,
        runner: CommandRunner | None = None,
        uplink: str = "eth0",
        uplink_mtu: int = 1500,
        resync_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.local = local
        self.runner = runner or SubprocessRunner()
        self.uplink = uplink
        self.uplink_mtu = uplink_mtu
        self.resync_interval = resync_interval
        self.revision = 0  # the datastore revision the kernel reflects
        self.applies = 0
        self.skipped = 0  # syncs whose desired state had not changed (nothing sent to the kernel)
        self.last: PoolDataplane | None = None
        self.last_stats: ApplyStats | None = None
        self.last_error = ""
        self.unsupported = ""  # what this kernel cannot do that the pools ask for (IP-in-IP)
        self.synced = asyncio.Event()
        self._dirty = asyncio.Event()
        self._live: dict[str, NodeLease] = {}  # the live leases the kernel reflects
        self.next_expiry = float("inf")  # when the first of them runs out

    async def sync_once(self, force: bool = True) -> int:
        """Read, render, apply; the revision read. Raises on failure (the caller retries). Without force,
        a desired state equal to the one last applied is not applied again: most changes (an address
        taken in an existing block) change no route, and reading the kernel back costs four execs."""
        items, revision = await self.store.snapshot(KINDS)
        now = time.time()
        blocks, leases, pools_and_config = [], {}, []
        for stored in items:
            if stored.ref.kind == BLOCK_KIND:
                try:
                    blocks.append(parse_block(stored))
                except ValueError as err:
                    log.warning("routes: %s ignored: %s", stored.ref, err)
            elif stored.ref.kind == LEASE_KIND:
                lease = parse_lease(stored)
                if lease is not None and lease.live(now):
                    leases[lease.node] = lease
            else:
                pools_and_config.append(stored)
        config: PoolConfig = parse_pool_config(pools_and_config)
        self._live = leases
        self.next_expiry = min((lease.expires for lease in leases.values()), default=float("inf"))
        nodes: dict[str, NodeRecord] = {n: lease.record for n, lease in leases.items() if lease.record}
        nodes[self.local.name] = self.local  # route as ourselves even before our record shows up
        desired = render(
            self.local, nodes, blocks, config.pools, uplink=self.uplink, uplink_mtu=self.uplink_mtu
        )
        for note in desired.notes:
            log.info("routes: %s", note)
        if not force and desired == self.last:
            self.skipped += 1
            return revision
        try:
            self.last_stats = await apply_pool_dataplane(desired, self.runner)
            self.unsupported = ""
        except IpipUnsupported as err:
            # Everything else is programmed; retrying cannot load a kernel module, so say it once (again
            # on the next change or resync only if it changed) instead of looping on it.
            if str(err) != self.unsupported:
                log.error("routes: %s", err)
            self.unsupported = str(err)
            self.last_stats = None
        self.last = desired
        self.applies += 1
        return revision

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                self.revision = await self.sync_once()
                self.synced.set()
                self.last_error = ""
                delay = 0.1
                await self._follow()
            except asyncio.CancelledError:
                raise
            except WatchCompacted as err:
                log.info("routes: %s; reading everything again", err)
            except Exception as err:  # a failed apply or datastore outage: retry with backoff
                self.last_error = str(err)
                log.warning("routes: sync failed (%s); retrying in %.1f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _follow(self) -> None:
        """Watch from the revision applied; re-sync on relevant changes (batched) and periodically."""
        watcher = asyncio.create_task(self._watch(self.revision + 1))
        try:
            next_resync = time.monotonic() + self.resync_interval
            while True:
                until_expiry = self.next_expiry + 0.05 - time.time()  # a lease running out is no event
                timeout = max(0.0, min(next_resync - time.monotonic(), until_expiry))
                dirty = asyncio.create_task(self._dirty.wait())
                await asyncio.wait({dirty, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                dirty.cancel()
                if watcher.done():
                    watcher.result()  # re-raise what stopped the watch
                    raise DatastoreError("the route watch ended")
                self._dirty.clear()
                await asyncio.sleep(0.02)  # let a burst of changes (one pod start) land together
                self._dirty.clear()
                resync = time.monotonic() >= next_resync  # read the kernel back, repair what drifted
                await self.sync_once(force=resync)
                if resync:
                    next_resync = time.monotonic() + self.resync_interval
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher

    async def _watch(self, start: int) -> None:
        async for event in self.store.watch(KINDS, start):
            self.revision = max(self.revision, event.revision)
            if event.type is EventType.PUT and event.resource is not None and event.ref.kind == LEASE_KIND:
                lease = parse_lease(event.resource)
                known = self._live.get(lease.node) if lease else None
                if lease is not None and known is not None and lease.record == known.record:
                    # A renewal: the same node, still live; only its expiry moves.
                    self._live[lease.node] = lease
                    self.next_expiry = min(x.expires for x in self._live.values())
                    continue
            self._dirty.set()
        raise DatastoreError("the route watch ended")

    def status(self) -> dict[str, Any]:
        routes = sorted(r.ip_args() for r in self.last.routes) if self.last else []
        return {
            "node": self.local.name,
            "synced": self.synced.is_set(),
            "revision": self.revision,
            "applies": self.applies,
            "skipped": self.skipped,
            "routes": routes,
            "tunnels": [t.name for t in self.last.tunnels] if self.last else [],
            "notes": list(self.last.notes) if self.last else [],
            "lastError": self.last_error,
            "unsupported": self.unsupported,
        }
