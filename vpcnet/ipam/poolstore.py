"""Reading the pool IPAM's whole state from a resource store, and the pool configuration.

The objects and their layout are in vpcnet/ipam/poolobjects.py (Calico's KDD kinds: IPAMBlock, BlockAffinity,
IPAMHandle; node Leases). Pools and the IPAM configuration are resources too: IPPool and IPAMConfiguration
(projectcalico.org/v3). Over the Kubernetes API each kind is listed on its own, so a state is not one
snapshot of everything; readers that act on it (the GC) re-check each object with a compare-and-swap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import vpcnet.api.ippool  # noqa: F401  (registers IPPool and IPAMConfiguration)
from vpcnet.api.errors import ValidationError
from vpcnet.api.ippool import IPAMConfiguration, IPPool
from vpcnet.api.loader import parse_resource
from vpcnet.api.selector import parse_selector
from vpcnet.datastore.resources import ResourceRef, StoredResource
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.ipam.blocks import Block, Cidr
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolobjects import (
    AFFINITY_KIND,
    BLOCK_KIND,
    HANDLE_KIND,
    IPAMCONFIG_KIND,
    IPPOOL_KIND,
    LEASE_KIND,
    LEASE_NAMESPACE,
    Affinity,
    Handle,
    NodeLease,
    parse_affinity,
    parse_block,
    parse_handle,
    parse_lease,
)

_USER_METADATA = ("name", "namespace", "labels", "annotations")


@dataclass(frozen=True)
class IpamState:
    """Everything the IPAM keeps (for routes, `ipam show`, `ipam check` and the GC)."""

    revision: int  # the newest of the listings' revisions
    now: float  # the wall clock when read (liveness of leases)
    blocks: dict[Cidr, tuple[Block, int]]  # block -> (block, revision)
    affinities: dict[str, dict[Cidr, tuple[Affinity, int]]]  # node -> block -> (affinity, revision)
    handles: dict[str, tuple[Handle, int]]  # handle id -> (handle, revision)
    leases: dict[str, tuple[NodeLease, int]]  # node -> (lease, revision)

    @property
    def nodes(self) -> dict[str, NodeRecord]:
        """The live nodes."""
        leases = self.leases.items()
        return {n: lease.record for n, (lease, _) in leases if lease.record and lease.live(self.now)}

    @property
    def gone_since(self) -> dict[str, float]:
        """Nodes whose lease ran out, and since when."""
        return {n: lease.expires for n, (lease, _) in self.leases.items() if not lease.live(self.now)}

    def claimed(self, node: str) -> set[Cidr]:
        """The blocks node claims (a pending affinity is no claim yet)."""
        return {c for c, (a, _) in self.affinities.get(node, {}).items() if a.state != "pending"}


async def read_state(store: ResourceStoreLike, now: float | None = None) -> IpamState:
    blocks_listed, r1 = await store.list(BLOCK_KIND)
    affinities_listed, r2 = await store.list(AFFINITY_KIND)
    handles_listed, r3 = await store.list(HANDLE_KIND)
    leases_listed, r4 = await store.list(LEASE_KIND, LEASE_NAMESPACE)
    blocks = {}
    for stored in blocks_listed:
        try:
            block = parse_block(stored)
        except ValueError:
            continue  # not ours to judge here; `ipam check` of a malformed block is out of scope
        blocks[block.cidr] = (block, stored.revision)
    affinities: dict[str, dict[Cidr, tuple[Affinity, int]]] = {}
    for stored in affinities_listed:
        affinity = parse_affinity(stored)
        affinities.setdefault(affinity.node, {})[affinity.cidr] = (affinity, stored.revision)
    handles = {}
    for stored in handles_listed:
        handle = parse_handle(stored)
        handles[handle.handle_id] = (handle, stored.revision)
    leases = {}
    for stored in leases_listed:
        lease = parse_lease(stored)
        if lease is not None:
            leases[lease.node] = (lease, stored.revision)
    return IpamState(
        max(r1, r2, r3, r4), time.time() if now is None else now, blocks, affinities, handles, leases
    )


@dataclass(frozen=True)
class PoolConfig:
    pools: list[IPPool]
    strict_affinity: bool = False
    max_blocks_per_host: int = 0

    def usable_by(self, labels: dict[str, str], version: int | None = None) -> list[IPPool]:
        """Enabled pools (of that IP version, when given) whose nodeSelector matches the node's labels, in
        name order."""
        return [
            p
            for p in self.pools
            if not p.disabled
            and (version is None or p.cidr.version == version)
            and parse_selector(p.node_selector).matches(labels)
        ]


async def read_pool_config(resources: ResourceStoreLike) -> PoolConfig:
    """The IPPools and the IPAMConfiguration from the datastore (validated again on the way in)."""
    pools, _ = await resources.list(IPPOOL_KIND)
    config = await resources.get(ResourceRef(IPAMCONFIG_KIND, None, "default"))
    return parse_pool_config([*pools, *([config] if config else [])])


def parse_pool_config(stored: list[StoredResource]) -> PoolConfig:
    """The pools and the configuration among stored resources (others are ignored)."""
    pools: list[IPPool] = []
    config: IPAMConfiguration | None = None
    for item in stored:
        resource = _parse(item.body, str(item.ref))
        if isinstance(resource, IPPool):
            pools.append(resource)
        elif isinstance(resource, IPAMConfiguration) and item.ref.name == "default":
            config = resource
    pools.sort(key=lambda p: p.name)
    if config is not None:
        return PoolConfig(pools, config.strict_affinity, config.max_blocks_per_host)
    return PoolConfig(pools)


def _parse(body: dict[str, Any], where: str) -> object:
    body = {k: v for k, v in body.items()}
    # Only what a user writes: the Kubernetes API adds uid, creationTimestamp, resourceVersion, ...
    body["metadata"] = {k: v for k, v in body.get("metadata", {}).items() if k in _USER_METADATA}
    try:
        return parse_resource(body, where)
    except ValidationError:
        return None  # a stored object that no longer validates is ignored, not fatal
