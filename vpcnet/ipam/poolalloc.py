"""Calico-mode address management: blocks affine to nodes, every write a compare-and-swap on one object.

`PoolIpam` hands out addresses for one node, one IP version at a time (a dual-stack pod's handle holds one
address of each, as Calico's): from its own blocks first, then from a newly claimed block, then (unless
strictAffinity) borrowed from any block with room. The writes and their order (handle, then
block; the invariant that keeps a crash from leaking) are in vpcnet/ipam/poolwrites.py. When another writer
won a compare-and-swap, the attempt starts again from fresh reads. `PoolAllocator` adapts it to the CNI
server's Allocator protocol. It takes any ResourceStoreLike: etcd or the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address

from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.datastore.types import DatastoreUnavailable
from vpcnet.ipam.blocks import Block, Cidr, block_cidrs, cidr_key, within
from vpcnet.ipam.poolobjects import (
    AFFINITY_KIND,
    BLOCK_KIND,
    PENDING_DELETION,
    HandleRecord,
    handle_document,
    handle_ref,
    parse_affinity,
    parse_block,
    parse_handle,
    records_in,
)
from vpcnet.ipam.poolstore import PoolConfig, read_pool_config
from vpcnet.ipam.poolwrites import (
    MAX_ATTEMPTS,
    ConflictRetriesExhausted,
    backoff,
    claim_block,
    confirm_affinity,
    handle_holdings,
    read_block,
    recount_handle,
    release_in_block,
    write_block,
)
from vpcnet.ipam.types import (
    MAIN_ROUTE_TABLE,
    AddressExhausted,
    AddressManagerNotReady,
    Assignment,
    IpamKey,
    PodAddress,
)

log = logging.getLogger(__name__)

__all__ = [
    "ConflictRetriesExhausted",
    "IpamCounters",
    "PoolAllocator",
    "PoolIpam",
    "release_handle",
    "release_handle_all",
]


@dataclass
class IpamCounters:
    """What happened, for metrics and the benchmark."""

    assigned: int = 0
    released: int = 0
    conflicts: int = 0
    blocks_claimed: int = 0
    borrowed: int = 0


def handle_id(key: IpamKey) -> str:
    """One pod interface's handle: "<network>.<container id>.<ifname>" (Calico: k8s-pod-network.<id>)."""
    return f"{key.network}.{key.container_id}.{key.ifname}".replace("/", "_")


class PoolIpam:
    def __init__(
        self,
        store: ResourceStoreLike,
        node: str,
        node_labels: dict[str, str] | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.node = node
        self.node_labels = node_labels if node_labels is not None else {"kubernetes.io/hostname": node}
        self._rng = rng or random.Random()
        self._clock = clock
        self.counters = IpamCounters()
        self._affine: list[Cidr] | None = None  # blocks affine to this node, as last read
        self._blocks: dict[Cidr, tuple[Block, int]] = {}  # our blocks as we last wrote them
        # One change at a time from this node (Calico's CNI takes a host-wide lock for the same reason):
        # concurrent ADDs on one node would all pick the same block and fail each other's CAS.
        self._lock = asyncio.Lock()

    async def config(self) -> PoolConfig:
        return await read_pool_config(self.store)

    async def lookup(self, handle: str) -> HandleRecord | None:
        held = await self.lookup_all(handle)
        return held[0] if held else None

    async def lookup_all(self, handle: str) -> list[HandleRecord]:
        """Every address the handle holds (one per IP version for a dual-stack pod), IPv4 first."""
        stored = await self.store.get(handle_ref(handle))
        if stored is None:
            return []
        _, records = await handle_holdings(self.store, stored)
        return sorted(records, key=lambda r: r.address.version)

    async def _backoff(self, attempt: int) -> None:
        self.counters.conflicts += 1
        await backoff(attempt, self._rng)

    async def assign(self, handle: str, namespace: str = "", pod: str = "", version: int = 4) -> HandleRecord:
        """The handle's address of that IP version: the one it holds already, or a new one from a pool of
        that version. Raises AddressExhausted."""
        async with self._lock:
            try:
                return await self._assign_locked(handle, namespace, pod, version)
            except (AddressExhausted, ConflictRetriesExhausted):
                # An attempt that lost its block CAS may have left the handle counting an address it never
                # got: take that back now rather than leave it to the GC.
                await recount_handle(self.store, handle, self._clock)
                raise

    async def _assign_locked(self, handle: str, namespace: str, pod: str, version: int) -> HandleRecord:
        for attempt in range(MAX_ATTEMPTS):
            try:
                record = await self._assign_once(handle, namespace, pod, version)
            except DatastoreUnavailable:
                # The outcome of our writes is unknown: the next attempt reads the handle and finds out.
                await asyncio.sleep(0.2)
                continue
            if record is not None:
                self.counters.assigned += 1
                return record
            await self._backoff(attempt)
        raise ConflictRetriesExhausted(f"assign {handle}: still conflicting after {MAX_ATTEMPTS} attempts")

    async def _assign_once(self, handle: str, namespace: str, pod: str, version: int) -> HandleRecord | None:
        """One attempt; None when a compare-and-swap lost (the caller starts again)."""
        try:
            block, revision = await self._choose_block(version)
        except _Lost:
            return None
        taken = block.allocate(handle, self.node, namespace, pod)
        if taken is None:
            self._blocks.pop(block.cidr, None)
            return None
        ordinal, sequence = taken
        # 1. The handle, counting the allocation about to be made (see poolwrites: handle first).
        written = await self._count_in_handle(handle, block.cidr, version)
        if isinstance(written, HandleRecord):
            return written  # the handle holds an address already (a repeated ADD)
        if not written:
            return None
        # 2. The block.
        new_revision = await write_block(self.store, block, revision)
        if new_revision is None:
            self._blocks.pop(block.cidr, None)
            return None
        if block.affinity == self.node:
            self._blocks[block.cidr] = (block, new_revision)
        else:
            self.counters.borrowed += 1
        held = block.allocations[ordinal]
        return HandleRecord(
            handle, block.address(ordinal), block.cidr, ordinal, sequence, self.node, held.namespace, held.pod
        )

    async def _count_in_handle(self, handle: str, cidr: Cidr, version: int) -> HandleRecord | bool:
        """Create the handle counting one address in cidr, or (it exists) return the address of this
        version it holds, or recount it plus one. False on a conflict."""
        created = await self.store.create(handle_document(handle, {cidr: 1}, self._clock()))
        if created is not None:
            return True
        stored = await self.store.get(handle_ref(handle))
        if stored is None:
            return False  # deleted between the two calls: start again
        counts, records = await handle_holdings(self.store, stored)
        for record in records:
            if record.address.version == version:
                return record
        counts[cidr] = counts.get(cidr, 0) + 1
        replaced = await self.store.replace(handle_document(handle, counts, self._clock()), stored.revision)
        return replaced is not None

    async def _choose_block(self, version: int) -> tuple[Block, int]:
        """A block of that IP version with room for this node: its own, a newly claimed one, or (unless
        strictAffinity) any."""
        # 1. A block this node holds (the list of them is kept in memory; a block that is gone or no longer
        # ours makes us read the affinities again).
        for _ in range(2):
            fresh = self._affine is None
            if self._affine is None:
                self._affine = await self._read_affine()
            for cidr in [c for c in self._affine if c.version == version]:
                read = self._blocks.get(cidr) or await read_block(self.store, cidr)
                if read is None or read[0].affinity != self.node:
                    self._affine, self._blocks = None, {}
                    continue
                if read[0].free:
                    return Block.from_spec(read[0].to_spec()), read[1]  # a copy: ours to change
            if fresh:
                break
            self._affine = None  # make sure no block of ours was claimed meanwhile elsewhere
        affine_count = len(self._affine or [])  # maxBlocksPerHost counts both families, as Calico's
        # 2. A new block.
        config = await self.config()
        pools = config.usable_by(self.node_labels, version)
        if not pools:
            raise AddressExhausted(f"node {self.node}: no enabled IPPool selects this node (IPv{version})")
        may_claim = not (config.strict_affinity and config.max_blocks_per_host) or (
            affine_count < config.max_blocks_per_host
        )
        listed, _ = await self.store.list(BLOCK_KIND)
        blocks = []
        for stored in listed:
            try:
                blocks.append((parse_block(stored), stored.revision))
            except ValueError:
                continue
        taken = {b.cidr for b, _ in blocks}
        if may_claim:
            for pool in pools:
                for cidr in block_cidrs(pool.cidr, pool.block_size, self.node):
                    if cidr in taken:
                        continue
                    claimed = await claim_block(self.store, self.node, cidr)
                    if claimed is None:
                        raise _Lost()
                    self.counters.blocks_claimed += 1
                    log.info("node %s claimed block %s", self.node, cidr)
                    if self._affine is not None:
                        self._affine.append(cidr)
                    return claimed
        # 3. Borrow an address from any block with room (another node's), unless strictAffinity.
        if not config.strict_affinity:
            for block, revision in blocks:
                if block.free and any(within(block.cidr, p.cidr) for p in pools):
                    return block, revision
        limit = (
            f"maxBlocksPerHost {config.max_blocks_per_host} reached and strictAffinity forbids borrowing"
            if not may_claim
            else "every block of the pools is claimed"
            + (" and strictAffinity forbids borrowing" if config.strict_affinity else " and full")
        )
        raise AddressExhausted(
            f"node {self.node}: no address in pools {', '.join(str(p.cidr) for p in pools)}: {limit}"
        )

    async def _read_affine(self) -> list[Cidr]:
        """This node's blocks: its affinities (a pending one whose block names us is confirmed now)."""
        listed, _ = await self.store.list(AFFINITY_KIND)
        mine = []
        for stored in listed:
            affinity = parse_affinity(stored)
            if affinity.node != self.node or affinity.state == PENDING_DELETION:
                continue
            if affinity.state != "confirmed":
                read = await read_block(self.store, affinity.cidr)
                if read is None or read[0].affinity != self.node:
                    continue  # a claim in progress, or one that lost: not ours
                await confirm_affinity(self.store, self.node, affinity.cidr)
            mine.append(affinity.cidr)
        return sorted(mine, key=cidr_key)

    async def release(self, handle: str) -> HandleRecord | None:
        """Free the handle's addresses (only the allocations it names, by sequence number); the first one
        (IPv4 first), or None if it held none."""
        freed = await self.release_all(handle)
        return freed[0] if freed else None

    async def release_all(self, handle: str) -> list[HandleRecord]:
        """Free every address of the handle (both of a dual-stack pod); what was freed, IPv4 first."""
        async with self._lock:
            freed = await release_handle_all(self.store, handle, counters=self.counters, clock=self._clock)
            for record in freed:
                self._blocks.pop(record.block, None)
            return freed


class _Lost(Exception):
    """Another node claimed the block we tried (the attempt starts again)."""


async def release_handle(
    store: ResourceStoreLike,
    handle: str,
    *,
    counters: IpamCounters | None = None,
    clock: Callable[[], float] = time.time,
) -> HandleRecord | None:
    """Release every allocation of handle (blocks first, then the handle: see poolwrites); the first one
    released, or None when it held nothing."""
    freed = await release_handle_all(store, handle, counters=counters, clock=clock)
    return freed[0] if freed else None


async def release_handle_all(
    store: ResourceStoreLike,
    handle: str,
    *,
    counters: IpamCounters | None = None,
    clock: Callable[[], float] = time.time,
) -> list[HandleRecord]:
    """Release every allocation of handle; the ones released, IPv4 first."""
    stored = await store.get(handle_ref(handle))
    if stored is None:
        return []
    freed: list[HandleRecord] = []
    for cidr in sorted(parse_handle(stored).blocks, key=cidr_key):
        freed += await release_in_block(store, cidr, lambda b: records_in(b, handle))
    await recount_handle(store, handle, clock)
    if freed and counters:
        counters.released += 1
    return sorted(freed, key=lambda r: r.address.version)


class PoolAllocator:
    """The Allocator protocol (vpcnet/ipam/types.py) over PoolIpam, for the agent's CNI server. versions:
    the pods' IP versions, (4,), (6,) or (4, 6) for dual stack: one address of each (IPv4 the primary,
    as Calico's CNI lists it first)."""

    def __init__(self, ipam: PoolIpam, versions: tuple[int, ...] = (4,)) -> None:
        if not versions or set(versions) - {4, 6}:
            raise ValueError(f"IP versions {versions!r}: want 4, 6 or both")
        self.ipam = ipam
        self.versions = tuple(sorted(set(versions)))
        self._ready = False

    def set_ready(self, ready: bool = True) -> None:
        self._ready = ready

    def ready(self) -> bool:
        return self._ready

    @staticmethod
    def _assignment(records: list[HandleRecord]) -> Assignment:
        first = records[0]
        second = next((r.address for r in records[1:] if isinstance(r.address, IPv6Address)), None)
        return Assignment(
            address=first.address,
            device_number=-1,
            route_table=MAIN_ROUTE_TABLE,
            eni_id="",
            subnet=first.block,
            pod_namespace=first.namespace,
            pod_name=first.pod,
            address6=second if first.address.version == 4 else None,
        )

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        if not self._ready:
            raise AddressManagerNotReady("the Calico pool IPAM is starting")
        handle = handle_id(key)
        records = []
        try:
            for version in self.versions:
                records.append(await self.ipam.assign(handle, pod_namespace, pod_name, version))
        except BaseException:
            if records:  # a dual-stack pod gets both families or neither
                await self.ipam.release_all(handle)
            raise
        return self._assignment(records)

    async def release(self, key: IpamKey) -> Assignment | None:
        records = await self.ipam.release_all(handle_id(key))
        return self._assignment(records) if records else None

    async def lookup(self, key: IpamKey) -> Assignment | None:
        records = await self.ipam.lookup_all(handle_id(key))
        return self._assignment(records) if records else None

    async def holds(self, address: PodAddress) -> bool:
        """Whether the block holding address allocates it (to any node: borrowed addresses count)."""
        listed, _ = await self.ipam.store.list(BLOCK_KIND)
        for stored in listed:
            block = parse_block(stored)
            if address.version == block.cidr.version and address in block.cidr:
                return block.ordinal(address) in block.allocations
        return False
