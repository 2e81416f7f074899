"""Calico-mode address management: blocks affine to nodes in the datastore, every write a compare-and-swap.

`PoolIpam` hands out addresses for one node: from its own blocks first, then from a newly claimed block,
then (unless strictAffinity) borrowed from any block with room. Each step reads, changes a copy, and
writes back in one transaction conditional on the revisions it read (block, handle, affinity); when
another node won the race the whole step starts again from fresh reads. `PoolAllocator` adapts it to
the CNI server's Allocator protocol.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from vpcnet.datastore.resources import ResourceStore
from vpcnet.datastore.types import Datastore, DatastoreUnavailable, DeleteOp, PutOp, RevisionIs
from vpcnet.ipam.blocks import Block, block_cidrs, block_from_key_name
from vpcnet.ipam.poolstore import (
    AFFINITIES,
    BLOCKS,
    HandleRecord,
    PoolConfig,
    affinity_key,
    block_key,
    handle_key,
    read_pool_config,
)
from vpcnet.ipam.types import (
    MAIN_ROUTE_TABLE,
    AddressExhausted,
    AddressManagerNotReady,
    Assignment,
    IpamKey,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 100  # as Calico's datastoreRetries


class ConflictRetriesExhausted(RuntimeError):
    pass


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
        datastore: Datastore,
        node: str,
        node_labels: dict[str, str] | None = None,
        *,
        config_loader: Callable[[], asyncio.Future[PoolConfig]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.datastore = datastore
        self.node = node
        self.node_labels = node_labels if node_labels is not None else {"kubernetes.io/hostname": node}
        self._resources = ResourceStore(datastore)
        self._rng = rng or random.Random()
        self.counters = IpamCounters()
        self._affine: list[IPv4Network] | None = None  # blocks affine to this node, as last read
        # One change at a time from this node (Calico's CNI takes a host-wide lock for the same reason):
        # concurrent ADDs on one node would all pick the same block and fail each other's CAS.
        self._lock = asyncio.Lock()

    async def config(self) -> PoolConfig:
        return await read_pool_config(self._resources)

    async def lookup(self, handle: str) -> HandleRecord | None:
        kv = await self.datastore.get(handle_key(handle))
        return HandleRecord.from_kv(kv) if kv else None

    async def _backoff(self, attempt: int) -> None:
        self.counters.conflicts += 1
        # Jittered, growing pauses so that nodes racing for one block fall out of step.
        await asyncio.sleep(self._rng.uniform(0, min(0.002 * (2 ** min(attempt, 6)), 0.1)))

    async def assign(self, handle: str, namespace: str = "", pod: str = "") -> HandleRecord:
        """The handle's address: the one it holds already, or a new one. Raises AddressExhausted."""
        async with self._lock:
            return await self._assign_locked(handle, namespace, pod)

    async def _assign_locked(self, handle: str, namespace: str, pod: str) -> HandleRecord:
        for attempt in range(MAX_ATTEMPTS):
            # The first attempt does not read the handle: its transaction requires the handle to be absent,
            # so a repeated ADD fails that condition and the next attempt finds the address it holds.
            if attempt:
                existing = await self.lookup(handle)
                if existing is not None:
                    return existing
            try:
                record = await self._assign_once(handle, namespace, pod)
            except DatastoreUnavailable:
                # The outcome of our write is unknown: the handle read at the top tells.
                await asyncio.sleep(0.2)
                continue
            if record is not None:
                self.counters.assigned += 1
                return record
            await self._backoff(attempt)
        raise ConflictRetriesExhausted(f"assign {handle}: still conflicting after {MAX_ATTEMPTS} attempts")

    async def _assign_once(self, handle: str, namespace: str, pod: str) -> HandleRecord | None:
        """One attempt; None when a compare-and-swap lost (the caller starts again)."""
        # 1. A block this node holds (the list of them is kept in memory; a block that is gone or no longer
        # ours makes us read the affinities again).
        fresh = self._affine is None
        if self._affine is None:
            affine = await self.datastore.list(f"{AFFINITIES}{self.node}/")
            self._affine = [block_from_key_name(kv.key.rpartition("/")[2]) for kv in affine.items]
        affine_blocks = list(self._affine)
        for cidr in affine_blocks:
            block_kv = await self.datastore.get(block_key(cidr))
            block = Block.from_bytes(block_kv.value) if block_kv else None
            if block_kv is None or block is None or block.affinity != self.node:
                self._affine = None
                continue
            if block.free:
                return await self._allocate_in(block, block_kv.mod_revision, handle, namespace, pod)
        if not fresh:
            # Before claiming another block, make sure no block of ours was claimed meanwhile elsewhere.
            self._affine = None
            return await self._assign_once(handle, namespace, pod)
        # 2. A new block, claimed and allocated from in one transaction.
        config = await self.config()
        pools = config.usable_by(self.node_labels)
        if not pools:
            raise AddressExhausted(f"node {self.node}: no enabled IPPool selects this node")
        may_claim = not (config.strict_affinity and config.max_blocks_per_host) or (
            len(affine_blocks) < config.max_blocks_per_host
        )
        all_blocks = await self.datastore.list(BLOCKS)
        taken = {kv.key[len(BLOCKS) :] for kv in all_blocks.items}
        if may_claim:
            for pool in pools:
                for cidr in block_cidrs(pool.cidr, pool.block_size, self.node):
                    if block_key(cidr)[len(BLOCKS) :] in taken:
                        continue
                    return await self._claim(cidr, handle, namespace, pod)
        # 3. Borrow an address from any block with room (another node's), unless strictAffinity.
        if not config.strict_affinity:
            for kv in all_blocks.items:
                block = Block.from_bytes(kv.value)
                if block.free and any(block.cidr.subnet_of(p.cidr) for p in pools):
                    record = await self._allocate_in(block, kv.mod_revision, handle, namespace, pod)
                    if record is not None:
                        self.counters.borrowed += 1
                    return record
        limit = (
            f"maxBlocksPerHost {config.max_blocks_per_host} reached and strictAffinity forbids borrowing"
            if not may_claim
            else "every block of the pools is claimed"
            + (" and strictAffinity forbids borrowing" if config.strict_affinity else " and full")
        )
        raise AddressExhausted(
            f"node {self.node}: no address in pools {', '.join(str(p.cidr) for p in pools)}: {limit}"
        )

    def _record(
        self, block: Block, ordinal: int, sequence: int, handle: str, ns: str, pod: str
    ) -> HandleRecord:
        return HandleRecord(handle, block.address(ordinal), block.cidr, ordinal, sequence, self.node, ns, pod)

    async def _allocate_in(
        self, block: Block, revision: int, handle: str, namespace: str, pod: str
    ) -> HandleRecord | None:
        taken = block.allocate(handle, self.node, namespace, pod)
        if taken is None:
            return None
        record = self._record(block, *taken, handle, namespace, pod)
        committed = await self.datastore.commit(
            [RevisionIs(block_key(block.cidr), revision), RevisionIs(handle_key(handle), 0)],
            [PutOp(block_key(block.cidr), block.to_bytes()), PutOp(handle_key(handle), record.to_bytes())],
        )
        return record if committed is not None else None

    async def _claim(self, cidr: IPv4Network, handle: str, namespace: str, pod: str) -> HandleRecord | None:
        block = Block.new(cidr, self.node)
        taken = block.allocate(handle, self.node, namespace, pod)
        assert taken is not None
        record = self._record(block, *taken, handle, namespace, pod)
        bkey, akey, hkey = block_key(cidr), affinity_key(self.node, cidr), handle_key(handle)
        committed = await self.datastore.commit(
            [RevisionIs(bkey, 0), RevisionIs(akey, 0), RevisionIs(hkey, 0)],
            [PutOp(bkey, block.to_bytes()), PutOp(akey, b"{}"), PutOp(hkey, record.to_bytes())],
        )
        if committed is None:
            return None
        self.counters.blocks_claimed += 1
        if self._affine is not None:
            self._affine.append(cidr)
        log.info("node %s claimed block %s", self.node, cidr)
        return record

    async def release(self, handle: str) -> HandleRecord | None:
        """Free the handle's address (only the allocation it names, by sequence number); None if none."""
        async with self._lock:
            return await release_handle(self.datastore, handle, counters=self.counters)


async def release_handle(
    datastore: Datastore,
    handle: str,
    *,
    expect_sequence: int | None = None,
    counters: IpamCounters | None = None,
) -> HandleRecord | None:
    """Release handle's allocation and delete the handle, atomically. With expect_sequence, only if the
    handle still holds that very allocation (a report may be stale). None when there was nothing to do."""
    for attempt in range(MAX_ATTEMPTS):
        hkv = await datastore.get(handle_key(handle))
        if hkv is None:
            return None
        record = HandleRecord.from_kv(hkv)
        if expect_sequence is not None and record.sequence != expect_sequence:
            return None
        bkey = block_key(record.block)
        bkv = await datastore.get(bkey)
        conditions = [
            RevisionIs(handle_key(handle), hkv.mod_revision),
            RevisionIs(bkey, bkv.mod_revision if bkv else 0),
        ]
        writes: list[PutOp | DeleteOp] = [DeleteOp(handle_key(handle))]
        if bkv is not None:
            block = Block.from_bytes(bkv.value)
            if block.release(record.ordinal, record.sequence, handle):
                writes.append(PutOp(bkey, block.to_bytes()))
        if await datastore.commit(conditions, writes) is not None:
            if counters:
                counters.released += 1
            return record
        if counters:
            counters.conflicts += 1
        await asyncio.sleep(random.uniform(0, min(0.002 * (2 ** min(attempt, 6)), 0.1)))
    raise ConflictRetriesExhausted(f"release {handle}: still conflicting after {MAX_ATTEMPTS} attempts")


class PoolAllocator:
    """The Allocator protocol (vpcnet/ipam/types.py) over PoolIpam, for the agent's CNI server."""

    def __init__(self, ipam: PoolIpam) -> None:
        self.ipam = ipam
        self._ready = False

    def set_ready(self, ready: bool = True) -> None:
        self._ready = ready

    def ready(self) -> bool:
        return self._ready

    @staticmethod
    def _assignment(record: HandleRecord) -> Assignment:
        return Assignment(
            address=record.address,
            device_number=-1,
            route_table=MAIN_ROUTE_TABLE,
            eni_id="",
            subnet=record.block,
            pod_namespace=record.namespace,
            pod_name=record.pod,
        )

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        if not self._ready:
            raise AddressManagerNotReady("the Calico pool IPAM is starting")
        return self._assignment(await self.ipam.assign(handle_id(key), pod_namespace, pod_name))

    async def release(self, key: IpamKey) -> Assignment | None:
        record = await self.ipam.release(handle_id(key))
        return self._assignment(record) if record else None

    async def lookup(self, key: IpamKey) -> Assignment | None:
        record = await self.ipam.lookup(handle_id(key))
        return self._assignment(record) if record else None

    async def holds(self, address: IPv4Address) -> bool:
        """Whether the block holding address allocates it (to any node: borrowed addresses count)."""
        for kv in (await self.ipam.datastore.list(BLOCKS)).items:
            if address in block_from_key_name(kv.key[len(BLOCKS) :]):
                block = Block.from_bytes(kv.value)
                return block.ordinal(address) in block.allocations
        return False
