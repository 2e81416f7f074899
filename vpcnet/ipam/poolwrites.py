"""The pool IPAM's object writes, each a compare-and-swap on one object (as Calico's IPAM does in KDD).

Write order, and the invariant it keeps (a crash between any two writes leaks nothing permanently):

  INVARIANT: every allocation in a block is counted by its handle (handle.block[cidr] >= the handle's
  allocations in that block). The converse may fail for a moment: a handle may count more than the blocks
  hold (an assign that wrote its handle, then lost its block CAS or crashed; a release that freed the block
  and crashed before its handle write). Such a handle holds no address: the next assign of that handle
  recounts it, and the GC deletes a handle that holds nothing once it is older than DANGLING_GRACE.

- assign: handle first (create, or replace recounted +1 for the chosen block), then the block (CAS).
- release: the block first (CAS, by sequence number), then the handle (replace recounted, or delete).
- claim: BlockAffinity created pending -> IPAMBlock created (CAS create: if it exists, another node won and
  our pending affinity is deleted) -> affinity replaced confirmed. A pending affinity is no claim; a block
  affine to a node whose affinity is still pending is confirmed by that node's next claim or by the GC.
- give up a block: affinity -> pendingDeletion, then the block deleted (if empty) or unclaimed, then the
  affinity deleted. A pendingDeletion affinity is deleted by the GC when its block no longer names the node.

Over the Kubernetes API there is no multi-object transaction, and etcd uses the same sequence so that both
behave alike (and the contention tests compare them).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from vpcnet.datastore.resources import StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.ipam.blocks import Block, Cidr, cidr_key
from vpcnet.ipam.poolobjects import (
    CONFIRMED,
    PENDING,
    PENDING_DELETION,
    HandleRecord,
    affinity_document,
    affinity_ref,
    block_document,
    block_ref,
    handle_document,
    handle_ref,
    parse_affinity,
    parse_block,
    parse_handle,
    records_in,
)

MAX_ATTEMPTS = 100  # as Calico's datastoreRetries
DANGLING_GRACE = 120.0  # a handle holding nothing for this long is garbage, not an assign in progress


class ConflictRetriesExhausted(RuntimeError):
    pass


async def backoff(attempt: int, rng: random.Random | None = None) -> None:
    # Jittered, growing pauses so that writers racing for one object fall out of step.
    await asyncio.sleep((rng or random).uniform(0, min(0.002 * (2 ** min(attempt, 6)), 0.1)))


async def read_block(store: ResourceStoreLike, cidr: Cidr) -> tuple[Block, int] | None:
    stored = await store.get(block_ref(cidr))
    return (parse_block(stored), stored.revision) if stored else None


async def write_block(store: ResourceStoreLike, block: Block, revision: int) -> int | None:
    """CAS the block; its new revision, or None when it changed since `revision`."""
    stored = await store.replace(block_document(block), revision)
    return stored.revision if stored else None


async def handle_holdings(
    store: ResourceStoreLike, stored: StoredResource
) -> tuple[dict[Cidr, int], list[HandleRecord]]:
    """What a handle really holds: per block it names, the number of its allocations there; and those."""
    handle = parse_handle(stored)
    counts: dict[Cidr, int] = {}
    records: list[HandleRecord] = []
    for cidr in sorted(handle.blocks, key=cidr_key):
        read = await read_block(store, cidr)
        found = records_in(read[0], handle.handle_id) if read else []
        counts[cidr] = len(found)
        records += found
    return counts, records


async def write_handle(
    store: ResourceStoreLike,
    handle_id: str,
    counts: dict[Cidr, int],
    revision: int,
    now: Callable[[], float],
) -> bool:
    """Replace the handle with counts (delete it when they are all zero); False on a conflict."""
    if not any(counts.values()):
        return await store.delete_at(handle_ref(handle_id), revision)
    return await store.replace(handle_document(handle_id, counts, now()), revision) is not None


async def recount_handle(store: ResourceStoreLike, handle_id: str, now: Callable[[], float]) -> None:
    """Bring a handle's counts down to what its blocks hold (after a release); deleted when nothing."""
    for attempt in range(MAX_ATTEMPTS):
        stored = await store.get(handle_ref(handle_id))
        if stored is None:
            return
        counts, _ = await handle_holdings(store, stored)
        if await write_handle(store, handle_id, counts, stored.revision, now):
            return
        await backoff(attempt)
    raise ConflictRetriesExhausted(f"handle {handle_id}: still conflicting after {MAX_ATTEMPTS} attempts")


async def release_in_block(
    store: ResourceStoreLike, cidr: Cidr, pick: Callable[[Block], list[HandleRecord]]
) -> list[HandleRecord]:
    """Free the allocations pick(block) names, by CAS on the block (re-read and picked again on a
    conflict); what was freed."""
    for attempt in range(MAX_ATTEMPTS):
        read = await read_block(store, cidr)
        if read is None:
            return []
        block, revision = read
        freed = [r for r in pick(block) if block.release(r.ordinal, r.sequence, r.handle)]
        if not freed:
            return []
        if await write_block(store, block, revision) is not None:
            return freed
        await backoff(attempt)
    raise ConflictRetriesExhausted(f"block {cidr}: still conflicting after {MAX_ATTEMPTS} attempts")


async def claim_block(store: ResourceStoreLike, node: str, cidr: Cidr) -> tuple[Block, int] | None:
    """Claim cidr for node (pending affinity -> block -> confirmed); the block and its revision, or None
    when another node has the block."""
    affinity = await store.create(affinity_document(node, cidr, PENDING))
    if affinity is None:  # ours from an earlier attempt that did not finish
        affinity = await store.get(affinity_ref(node, cidr))
        if affinity is None:
            return None
    created = await store.create(block_document(Block.new(cidr, node)))
    if created is not None:
        block, revision = parse_block(created), created.revision
    else:
        read = await read_block(store, cidr)
        if read is None or read[0].affinity != node:  # another node won the block
            if parse_affinity(affinity).state == PENDING:
                await store.delete_at(affinity.ref, affinity.revision)
            return None
        block, revision = read
    await confirm_affinity(store, node, cidr)
    return block, revision


async def confirm_affinity(store: ResourceStoreLike, node: str, cidr: Cidr) -> None:
    """Make node's affinity to cidr confirmed (its block names node)."""
    for attempt in range(MAX_ATTEMPTS):
        current = await store.get(affinity_ref(node, cidr))
        if current is None:
            if await store.create(affinity_document(node, cidr, CONFIRMED)) is not None:
                return
        elif parse_affinity(current).state == CONFIRMED or (
            await store.replace(affinity_document(node, cidr, CONFIRMED), current.revision) is not None
        ):
            return
        await backoff(attempt)
    raise ConflictRetriesExhausted(f"affinity {node} {cidr}: still conflicting after {MAX_ATTEMPTS} attempts")


async def give_up_block(store: ResourceStoreLike, node: str, cidr: Cidr) -> bool:
    """Release node's claim on cidr: affinity pendingDeletion -> block deleted when empty, else kept with
    no affinity (its addresses are borrowed by live nodes; it goes once empty) -> affinity deleted.
    False when something changed under us (the caller tries again on its next round)."""
    current = await store.get(affinity_ref(node, cidr))
    if current is not None and parse_affinity(current).state != PENDING_DELETION:
        marked = await store.replace(affinity_document(node, cidr, PENDING_DELETION), current.revision)
        if marked is None:
            return False
        current = marked
    read = await read_block(store, cidr)
    if read is not None and read[0].affinity == node:
        block, revision = read
        if block.empty:
            if not await store.delete_at(block_ref(cidr), revision):
                return False
        else:
            block.affinity = None
            if await write_block(store, block, revision) is None:
                return False
    return current is None or await store.delete_at(current.ref, current.revision)
