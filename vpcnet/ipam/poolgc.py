"""Finding and releasing what the Calico-mode IPAM leaked: `vpcnet ipam check` / `release`, and node cleanup.

A check reads the whole IPAM state at one revision and lists problems:
- an allocation whose pod no longer exists (no Pod of that namespace/name in the datastore), or whose
  pod reports another address (an earlier pod of the same name), or whose node is gone (no live node
  record);
- a handle that holds no address (older than DANGLING_GRACE: a younger one may be an assign between its
  handle write and its block write), or an allocation its handle does not count;
- a block affine to a node that is gone; a block that is internally inconsistent.
The report (JSON) records each leaked allocation with its sequence number, so `release --from-report`
frees exactly what was seen: an address released and handed out again since then is left alone.

Node cleanup: a node whose Lease expired is gone since the expiry; a node that holds something but has no
Lease at all gets a tombstone Lease ("gone since now"). Once the grace period has passed, its allocations
are released and its blocks given up, each step a CAS (vpcnet/ipam/poolwrites.py has the write order).
The cleanup also repairs what a crash between two writes left: dangling handles, affinities left pending
or pendingDeletion without their block, blocks claimed by a live node whose affinity is still pending.
Everything works over a ResourceStoreLike (etcd or the Kubernetes API).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from ipaddress import ip_network
from typing import Any

from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.ipam.blocks import Block, Cidr, cidr_key
from vpcnet.ipam.poolalloc import release_handle
from vpcnet.ipam.poolobjects import (
    PENDING_DELETION,
    HandleRecord,
    affinity_ref,
    block_ref,
    handle_ref,
    lease_document,
    lease_ref,
    parse_handle,
    records_in,
)
from vpcnet.ipam.poolstore import IpamState, read_state
from vpcnet.ipam.poolwrites import (
    DANGLING_GRACE,
    confirm_affinity,
    give_up_block,
    handle_holdings,
    recount_handle,
    release_in_block,
)

REPORT_VERSION = 1


@dataclass(frozen=True)
class LeakedAllocation:
    address: str
    block: str
    ordinal: int
    sequence: int
    handle: str
    node: str
    namespace: str
    pod: str
    reason: str  # "pod-gone" | "pod-has-another-address" | "node-gone" | "no-handle"


@dataclass
class CheckReport:
    revision: int
    allocations_in_use: int = 0
    leaked: list[LeakedAllocation] = field(default_factory=list)
    dangling_handles: list[str] = field(default_factory=list)  # handle without its allocation
    gone_node_blocks: list[dict[str, Any]] = field(default_factory=list)  # {block, node, allocations}
    inconsistent: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.leaked or self.dangling_handles or self.gone_node_blocks or self.inconsistent)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "revision": self.revision,
            "allocationsInUse": self.allocations_in_use,
            "leakedAllocations": [asdict(leak) for leak in self.leaked],
            "danglingHandles": self.dangling_handles,
            "goneNodeBlocks": self.gone_node_blocks,
            "inconsistent": self.inconsistent,
            "clean": self.clean,
        }


def _first_cidr(item: tuple[Cidr, Any]) -> tuple[int, Cidr]:
    """Sort (block, ...) pairs of both families by block."""
    return cidr_key(item[0])


def check_state(
    state: IpamState,
    pods: set[tuple[str, str]] | None,
    pod_ips: dict[tuple[str, str], set[str]] | None = None,
    dangling_grace: float = DANGLING_GRACE,
) -> CheckReport:
    """Problems in state; `pods` = the (namespace, name) of existing pods, None to skip the pod check;
    `pod_ips` = the addresses those pods report, where known: an allocation for a pod of that name whose
    address the pod does not have belongs to an earlier pod of the same name (deleted without its CNI DEL,
    then made again)."""
    report = CheckReport(revision=state.revision)
    held: dict[tuple[str, Cidr], int] = {}  # (handle, block) -> allocations
    for cidr, (block, _) in sorted(state.blocks.items(), key=_first_cidr):
        report.inconsistent += block.check()
        if block.affinity is not None and block.affinity not in state.nodes:
            report.gone_node_blocks.append(
                {"block": str(cidr), "node": block.affinity, "allocations": len(block.allocations)}
            )
        if block.affinity is not None and cidr not in state.claimed(block.affinity):
            report.inconsistent.append(
                f"block {cidr}: affine to {block.affinity} without a confirmed affinity"
            )
        for ordinal, allocation in sorted(block.allocations.items()):
            key = (allocation.handle, cidr)
            held[key] = held.get(key, 0) + 1
            entry = state.handles.get(allocation.handle)
            reason = ""
            if entry is None or entry[0].blocks.get(cidr, 0) < held[key]:
                reason = "no-handle"
            elif allocation.node not in state.nodes:
                reason = "node-gone"
            elif pods is not None and allocation.pod and (allocation.namespace, allocation.pod) not in pods:
                reason = "pod-gone"
            elif (
                pod_ips
                and (ips := pod_ips.get((allocation.namespace, allocation.pod)))
                and str(block.address(ordinal)) not in ips
            ):
                reason = "pod-has-another-address"
            if reason:
                report.leaked.append(
                    LeakedAllocation(
                        str(block.address(ordinal)),
                        str(cidr),
                        ordinal,
                        allocation.sequence,
                        allocation.handle,
                        allocation.node,
                        allocation.namespace,
                        allocation.pod,
                        reason,
                    )
                )
            else:
                report.allocations_in_use += 1
    for handle_id, (handle, _) in sorted(state.handles.items()):
        holds = any(held.get((handle_id, cidr)) for cidr in handle.blocks)
        if not holds and state.now - handle.written_at >= dangling_grace:
            report.dangling_handles.append(handle_id)
    for node, claims in sorted(state.affinities.items()):
        for cidr, (affinity, _) in sorted(claims.items(), key=_first_cidr):
            block_entry = state.blocks.get(cidr)
            if affinity.state != "pending" and (block_entry is None or block_entry[0].affinity != node):
                report.inconsistent.append(
                    f"{affinity.state} affinity of {node} to {cidr} without the block being affine to it"
                )
    return report


async def check(store: ResourceStoreLike, pods: set[tuple[str, str]] | None) -> CheckReport:
    return check_state(await read_state(store), pods)


async def check_against_pods(store: ResourceStoreLike) -> CheckReport:
    """`vpcnet ipam check`: the IPAM state, then the Pods. In this order, because a pod exists before its
    address is assigned: every allocation read has its pod in the later list unless the pod is really gone.
    (Pods first would call the allocation of a pod started between the two reads a leak, and releasing
    that report would free an address in use.)"""
    state = await read_state(store)
    stored, _ = await store.list("pod")
    pods = {(s.ref.namespace or "default", s.ref.name) for s in stored}
    return check_state(
        state, pods, {(s.ref.namespace or "default", s.ref.name): _pod_ips(s.body) for s in stored}
    )


def _pod_ips(body: dict[str, Any]) -> set[str]:
    """status.podIPs / status.podIP (empty while the pod has none yet)."""
    status = body.get("status") or {}
    ips = {str(entry.get("ip")) for entry in status.get("podIPs") or [] if isinstance(entry, dict)}
    if status.get("podIP"):
        ips.add(str(status["podIP"]))
    ips.discard("None")
    return ips


@dataclass
class ReleaseResult:
    released: list[str] = field(default_factory=list)  # addresses
    skipped: list[str] = field(default_factory=list)  # changed since the report: left alone
    handles_deleted: list[str] = field(default_factory=list)


async def release_leak(store: ResourceStoreLike, leak: LeakedAllocation) -> bool:
    """Free one leaked allocation if the block still holds it with the same sequence number and handle
    (block first, then the handle recounted: see poolwrites)."""
    cidr = ip_network(leak.block)

    def pick(block: Block) -> list[HandleRecord]:
        return [
            r
            for r in records_in(block, leak.handle)
            if (r.ordinal, r.sequence) == (leak.ordinal, leak.sequence)
        ]

    freed = await release_in_block(store, cidr, pick)
    if freed:
        await recount_handle(store, leak.handle, time.time)
    return bool(freed)


async def delete_if_dangling(store: ResourceStoreLike, handle_id: str, grace: float = DANGLING_GRACE) -> bool:
    """Delete a handle that holds no address and was last written more than grace seconds ago."""
    stored = await store.get(handle_ref(handle_id))
    if stored is None or time.time() - parse_handle(stored).written_at < grace:
        return False
    _, records = await handle_holdings(store, stored)
    return not records and await store.delete_at(stored.ref, stored.revision)


async def release_from_report(
    store: ResourceStoreLike, report: dict[str, Any], dangling_grace: float = DANGLING_GRACE
) -> ReleaseResult:
    """Release what a `vpcnet ipam check -o report` found (and only if it is still as reported)."""
    if report.get("version") != REPORT_VERSION:
        raise ValueError(f"report version {report.get('version')!r}: expected {REPORT_VERSION}")
    result = ReleaseResult()
    try:
        leaks = [LeakedAllocation(**item) for item in report.get("leakedAllocations", [])]
        dangling = [str(h) for h in report.get("danglingHandles", [])]
    except TypeError as err:
        raise ValueError(f"report: leakedAllocations: {err}") from None
    for leak in leaks:
        (result.released if await release_leak(store, leak) else result.skipped).append(leak.address)
    for handle in dangling:
        if await delete_if_dangling(store, handle, dangling_grace):
            result.handles_deleted.append(handle)
    return result


@dataclass
class NodeCleanup:
    marked_gone: list[str] = field(default_factory=list)
    came_back: list[str] = field(default_factory=list)
    released_addresses: int = 0
    released_blocks: list[str] = field(default_factory=list)  # claims released (the block deleted if empty)


async def cleanup_gone_nodes(
    store: ResourceStoreLike,
    grace_seconds: float,
    now: Callable[[], float] = time.time,
    dangling_grace: float = DANGLING_GRACE,
) -> NodeCleanup:
    """Release what nodes that are gone held, once they have been gone for grace_seconds; repair what
    crashes left half-done. Safe to run on every node at once: each step is a compare-and-swap."""
    state = await read_state(store, now())
    out = NodeCleanup()
    live = state.nodes
    owners = {b.affinity for b, _ in state.blocks.values() if b.affinity}
    users = {a.node for b, _ in state.blocks.values() for a in b.allocations.values()}
    for node in sorted((owners | users | set(state.affinities)) - set(live)):
        since = state.gone_since.get(node)
        if since is None:  # no lease at all: a tombstone says since when it is gone
            if await store.create(lease_document(node, None, 0, now())) is not None:
                out.marked_gone.append(node)
            continue
        if now() - since < grace_seconds:
            continue
        # Its allocations first (in every block: borrowed ones too), then its blocks.
        for cidr, (block, _) in sorted(state.blocks.items(), key=_first_cidr):
            for ordinal, allocation in sorted(block.allocations.items()):
                if allocation.node != node:
                    continue
                leak = LeakedAllocation(
                    str(block.address(ordinal)),
                    str(cidr),
                    ordinal,
                    allocation.sequence,
                    allocation.handle,
                    node,
                    allocation.namespace,
                    allocation.pod,
                    "node-gone",
                )
                if await release_leak(store, leak):
                    out.released_addresses += 1
        affine = set(state.affinities.get(node, {})) | {
            c for c, (b, _) in state.blocks.items() if b.affinity == node
        }
        for cidr in sorted(affine, key=cidr_key):
            if await give_up_block(store, node, cidr):
                out.released_blocks.append(str(cidr))
    await _forget_gone_nodes(store, now)
    out.released_blocks += await delete_empty_unclaimed_blocks(store)
    await repair(store, await read_state(store, now()), dangling_grace)
    return out


async def _forget_gone_nodes(store: ResourceStoreLike, now: Callable[[], float]) -> None:
    """Delete the lease of a gone node that holds nothing any more (unless it was renewed meanwhile)."""
    state = await read_state(store, now())
    for node, (lease, revision) in state.leases.items():
        if not lease.live(state.now) and not _holds_anything(state, node):
            await store.delete_at(lease_ref(node), revision)


async def repair(store: ResourceStoreLike, state: IpamState, dangling_grace: float = DANGLING_GRACE) -> None:
    """Finish or undo what a crash between two writes left (see the invariant in poolwrites)."""
    live = state.nodes
    for node, claims in state.affinities.items():
        for cidr, (affinity, revision) in claims.items():
            block = state.blocks.get(cidr)
            ours = block is not None and block[0].affinity == node
            if ours and affinity.state == "pending" and node in live:
                await confirm_affinity(store, node, cidr)  # claimed, then the confirm was lost
            elif not ours and affinity.state == PENDING_DELETION:
                await store.delete_at(affinity_ref(node, cidr), revision)  # its block is already gone
    for handle_id, (handle, _) in state.handles.items():
        if state.now - handle.written_at >= dangling_grace:
            await delete_if_dangling(store, handle_id, dangling_grace)


async def delete_empty_unclaimed_blocks(store: ResourceStoreLike) -> list[str]:
    """Blocks nobody claims (their node went away while others borrowed from them) go once empty."""
    deleted = []
    for cidr, (block, revision) in sorted((await read_state(store)).blocks.items(), key=_first_cidr):
        if block.affinity is None and block.empty and await store.delete_at(block_ref(cidr), revision):
            deleted.append(str(cidr))
    return deleted


def _holds_anything(state: IpamState, node: str) -> bool:
    return bool(state.affinities.get(node)) or any(
        b.affinity == node or any(a.node == node for a in b.allocations.values())
        for b, _ in state.blocks.values()
    )


__all__ = [
    "CheckReport",
    "LeakedAllocation",
    "NodeCleanup",
    "ReleaseResult",
    "check",
    "check_against_pods",
    "check_state",
    "cleanup_gone_nodes",
    "release_from_report",
    "release_handle",
]
