"""Finding and releasing what the Calico-mode IPAM leaked: `vpcnet ipam check` / `release`, and node cleanup.

A check reads the whole IPAM state at one revision and lists problems:
- an allocation whose pod no longer exists (no Pod of that namespace/name in the datastore), or whose
  pod reports another address (an earlier pod of the same name), or whose node is gone (no live node
  record);
- a handle whose allocation is gone, or an allocation without its handle;
- a block affine to a node that is gone; a block that is internally inconsistent.
The report (JSON) records each leaked allocation with its sequence number, so `release --from-report`
frees exactly what was seen: an address released and handed out again since then is left alone.

Node cleanup: a node without a live record (its lease expired) is marked gone; once the grace period
has passed, its allocations are released and its empty blocks and affinities deleted, in CAS steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from typing import Any

from vpcnet.datastore.types import Datastore, DeleteOp, PutOp, RevisionIs
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.poolalloc import release_handle
from vpcnet.ipam.poolstore import GONE, IpamState, affinity_key, block_key, handle_key, read_state

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


def check_state(
    state: IpamState,
    pods: set[tuple[str, str]] | None,
    pod_ips: dict[tuple[str, str], set[str]] | None = None,
) -> CheckReport:
    """Problems in state; `pods` = the (namespace, name) of existing pods, None to skip the pod check;
    `pod_ips` = the addresses those pods report, where known: an allocation for a pod of that name whose
    address the pod does not have belongs to an earlier pod of the same name (deleted without its CNI DEL,
    then made again)."""
    report = CheckReport(revision=state.revision)
    held: set[tuple[str, IPv4Network, int, int]] = set()
    for cidr, (block, _) in sorted(state.blocks.items()):
        report.inconsistent += block.check()
        if block.affinity is not None and block.affinity not in state.nodes:
            report.gone_node_blocks.append(
                {"block": str(cidr), "node": block.affinity, "allocations": len(block.allocations)}
            )
        if block.affinity is not None and cidr not in state.affinities.get(block.affinity, set()):
            report.inconsistent.append(f"block {cidr}: affine to {block.affinity} without its affinity key")
        for ordinal, allocation in sorted(block.allocations.items()):
            held.add((allocation.handle, cidr, ordinal, allocation.sequence))
            entry = state.handles.get(allocation.handle)
            reason = ""
            if entry is None or (entry[0].block, entry[0].ordinal) != (cidr, ordinal):
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
    for handle, (record, _) in sorted(state.handles.items()):
        if (handle, record.block, record.ordinal, record.sequence) not in held:
            report.dangling_handles.append(handle)
    for node, cidrs in sorted(state.affinities.items()):
        for cidr in sorted(cidrs):
            block_entry = state.blocks.get(cidr)
            if block_entry is None or block_entry[0].affinity != node:
                report.inconsistent.append(
                    f"affinity of {node} to {cidr} without the block being affine to it"
                )
    return report


async def check(datastore: Datastore, pods: set[tuple[str, str]] | None) -> CheckReport:
    return check_state(await read_state(datastore), pods)


async def check_against_pods(datastore: Datastore) -> CheckReport:
    """`vpcnet ipam check`: the IPAM state, then the Pods. In this order, because a pod exists before its
    address is assigned: every allocation read has its pod in the later list unless the pod is really gone.
    (Pods first would call the allocation of a pod started between the two reads a leak, and releasing
    that report would free an address in use.)"""
    from vpcnet.datastore.resources import ResourceStore

    state = await read_state(datastore)
    stored, _ = await ResourceStore(datastore).list("pod")
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


async def release_leak(datastore: Datastore, leak: LeakedAllocation) -> bool:
    """Free one leaked allocation if the block still holds it with the same sequence number and handle.
    The handle (when it still names this allocation) goes in the same transaction."""
    cidr = IPv4Network(leak.block)
    for _ in range(100):
        bkv = await datastore.get(block_key(cidr))
        if bkv is None:
            return False
        block = Block.from_bytes(bkv.value)
        if not block.release(leak.ordinal, leak.sequence, leak.handle):
            return False
        conditions = [RevisionIs(block_key(cidr), bkv.mod_revision)]
        writes: list[PutOp | DeleteOp] = [PutOp(block_key(cidr), block.to_bytes())]
        hkv = await datastore.get(handle_key(leak.handle))
        if hkv is not None:
            data = json.loads(hkv.value)
            if (data["block"], data["ordinal"], data["seq"]) == (leak.block, leak.ordinal, leak.sequence):
                conditions.append(RevisionIs(handle_key(leak.handle), hkv.mod_revision))
                writes.append(DeleteOp(handle_key(leak.handle)))
        if await datastore.commit(conditions, writes) is not None:
            return True
    return False


async def release_from_report(datastore: Datastore, report: dict[str, Any]) -> ReleaseResult:
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
        (result.released if await release_leak(datastore, leak) else result.skipped).append(leak.address)
    state = await read_state(datastore)
    for handle in dangling:
        entry = state.handles.get(handle)
        if entry is None:
            continue
        record, revision = entry
        block = state.blocks.get(record.block)
        still_dangling = block is None or (
            (held := block[0].allocations.get(record.ordinal)) is None
            or (held.handle, held.sequence) != (handle, record.sequence)
        )
        if still_dangling and await datastore.delete(handle_key(handle), mod_revision=revision):
            result.handles_deleted.append(handle)
    return result


@dataclass
class NodeCleanup:
    marked_gone: list[str] = field(default_factory=list)
    came_back: list[str] = field(default_factory=list)
    released_addresses: int = 0
    released_blocks: list[str] = field(default_factory=list)  # claims released (the block deleted if empty)


async def cleanup_gone_nodes(
    datastore: Datastore, grace_seconds: float, now: Callable[[], float] = time.time
) -> NodeCleanup:
    """Release what nodes that are gone held, once they have been gone for grace_seconds. Safe to run on
    every node at once: each step is a compare-and-swap."""
    state = await read_state(datastore)
    out = NodeCleanup()
    owners = {b.affinity for b, _ in state.blocks.values() if b.affinity}
    users = {a.node for b, _ in state.blocks.values() for a in b.allocations.values()}
    for node in sorted(set(state.gone_since) & set(state.nodes)):
        if await datastore.delete(GONE + node):
            out.came_back.append(node)
    for node in sorted((owners | users | set(state.affinities)) - set(state.nodes)):
        since = state.gone_since.get(node)
        if since is None:
            if await datastore.create(GONE + node, json.dumps({"since": now()}).encode()) is not None:
                out.marked_gone.append(node)
            continue
        if now() - since < grace_seconds:
            continue
        # Its allocations first (in every block: borrowed ones too), then its blocks once empty.
        for cidr, (block, _) in sorted(state.blocks.items()):
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
                if await release_leak(datastore, leak):
                    out.released_addresses += 1
        affine = state.affinities.get(node, set()) | {
            c for c, (b, _) in state.blocks.items() if b.affinity == node
        }
        for cidr in sorted(affine):
            if await release_block_if_empty(datastore, node, cidr):
                out.released_blocks.append(str(cidr))
        if not await _holds_anything(datastore, node):
            await datastore.delete(GONE + node)
    out.released_blocks += await delete_empty_unclaimed_blocks(datastore)
    return out


async def release_block_if_empty(datastore: Datastore, node: str, cidr: IPv4Network) -> bool:
    """Release node's claim on cidr: the block and the affinity go when the block is empty; a block that
    still holds addresses (borrowed by live nodes) stays, with no affinity, until it empties."""
    bkv = await datastore.get(block_key(cidr))
    akv = await datastore.get(affinity_key(node, cidr))
    conditions = [
        RevisionIs(block_key(cidr), bkv.mod_revision if bkv else 0),
        RevisionIs(affinity_key(node, cidr), akv.mod_revision if akv else 0),
    ]
    writes: list[PutOp | DeleteOp] = [DeleteOp(affinity_key(node, cidr))]
    if bkv is not None:
        block = Block.from_bytes(bkv.value)
        if block.affinity != node:
            return False
        if block.empty:
            writes.append(DeleteOp(block_key(cidr)))
        else:
            block.affinity = None
            writes.append(PutOp(block_key(cidr), block.to_bytes()))
    return await datastore.commit(conditions, writes) is not None


async def delete_empty_unclaimed_blocks(datastore: Datastore) -> list[str]:
    """Blocks nobody claims (their node went away while others borrowed from them) go once empty."""
    deleted = []
    for cidr, (block, revision) in sorted((await read_state(datastore)).blocks.items()):
        if block.affinity is None and block.empty and await datastore.delete(block_key(cidr), revision):
            deleted.append(str(cidr))
    return deleted


async def _holds_anything(datastore: Datastore, node: str) -> bool:
    state = await read_state(datastore)
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
