"""Where the Calico-mode IPAM keeps its state in the datastore, and how it reads it.

Keys under /vpcnet/ipam/v1/:
  block/<10.244.0.0-26>        a Block (JSON): affinity, allocations with sequence numbers, free FIFO
  affinity/<node>/<block>      the node's claim on a block (written in the same transaction as the block)
  handle/<handle id>           one pod interface's address: block, ordinal, sequence number, pod
  node/<node>                  a live node's record (address, subnet, VTEP MAC), bound to a lease
  gone/<node>                  when a node was first seen gone (for the grace period before cleanup)
Pools and the IPAM configuration are resources: IPPool and IPAMConfiguration (projectcalico.org/v3).

Claiming a block is one transaction (block absent and affinity absent -> write both and the first
allocation), so Calico's two-phase pending/confirmed affinity is not needed with etcd.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import vpcnet.api.ippool  # noqa: F401  (registers IPPool and IPAMConfiguration)
from vpcnet.api.errors import ValidationError
from vpcnet.api.ippool import IPAMConfiguration, IPPool
from vpcnet.api.loader import parse_resource
from vpcnet.api.selector import parse_selector
from vpcnet.datastore.resources import ResourceRef, ResourceStore, kind_path
from vpcnet.datastore.types import Datastore, KeyValue
from vpcnet.ipam.blocks import Block, block_from_key_name, block_key_name
from vpcnet.ipam.node_record import NodeRecord

IPAM_ROOT = "/vpcnet/ipam/v1/"
BLOCKS = IPAM_ROOT + "block/"
AFFINITIES = IPAM_ROOT + "affinity/"
HANDLES = IPAM_ROOT + "handle/"
NODES = IPAM_ROOT + "node/"
GONE = IPAM_ROOT + "gone/"
IPPOOL_KIND = kind_path(IPPool.API_VERSION, IPPool.KIND)
IPAMCONFIG_KIND = kind_path(IPAMConfiguration.API_VERSION, IPAMConfiguration.KIND)


def block_key(cidr: IPv4Network) -> str:
    return BLOCKS + block_key_name(cidr)


def affinity_key(node: str, cidr: IPv4Network) -> str:
    return f"{AFFINITIES}{node}/{block_key_name(cidr)}"


def handle_key(handle: str) -> str:
    return HANDLES + handle


def node_key(node: str) -> str:
    return NODES + node


@dataclass(frozen=True)
class HandleRecord:
    """What one pod interface holds: the address, where it lives in its block, and whose it is."""

    handle: str
    address: IPv4Address
    block: IPv4Network
    ordinal: int
    sequence: int
    node: str
    namespace: str
    pod: str

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "address": str(self.address),
                "block": str(self.block),
                "ordinal": self.ordinal,
                "seq": self.sequence,
                "node": self.node,
                "ns": self.namespace,
                "pod": self.pod,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_kv(cls, kv: KeyValue) -> HandleRecord:
        data = json.loads(kv.value)
        return cls(
            handle=kv.key[len(HANDLES) :],
            address=IPv4Address(data["address"]),
            block=IPv4Network(data["block"]),
            ordinal=int(data["ordinal"]),
            sequence=int(data["seq"]),
            node=str(data["node"]),
            namespace=str(data["ns"]),
            pod=str(data["pod"]),
        )


def node_record_from_kv(kv: KeyValue) -> NodeRecord:
    """The NodeRecord stored at node/<name>."""
    return NodeRecord.from_bytes(kv.key[len(NODES) :], kv.value)


@dataclass(frozen=True)
class IpamState:
    """Everything the IPAM keeps, read at one revision (for routes, `ipam show` and `ipam check`)."""

    revision: int
    blocks: dict[IPv4Network, tuple[Block, int]]  # block -> (block, mod_revision)
    affinities: dict[str, set[IPv4Network]]  # node -> blocks it claims
    handles: dict[str, tuple[HandleRecord, int]]  # handle -> (record, mod_revision)
    nodes: dict[str, NodeRecord]
    gone_since: dict[str, float]  # node -> when first seen gone


def parse_state(items: list[KeyValue], revision: int) -> IpamState:
    blocks: dict[IPv4Network, tuple[Block, int]] = {}
    affinities: dict[str, set[IPv4Network]] = {}
    handles: dict[str, tuple[HandleRecord, int]] = {}
    nodes: dict[str, NodeRecord] = {}
    gone: dict[str, float] = {}
    for kv in items:
        if kv.key.startswith(BLOCKS):
            block = Block.from_bytes(kv.value)
            blocks[block.cidr] = (block, kv.mod_revision)
        elif kv.key.startswith(AFFINITIES):
            node, _, name = kv.key[len(AFFINITIES) :].rpartition("/")
            affinities.setdefault(node, set()).add(block_from_key_name(name))
        elif kv.key.startswith(HANDLES):
            record = HandleRecord.from_kv(kv)
            handles[record.handle] = (record, kv.mod_revision)
        elif kv.key.startswith(NODES):
            node_record = node_record_from_kv(kv)
            nodes[node_record.name] = node_record
        elif kv.key.startswith(GONE):
            gone[kv.key[len(GONE) :]] = float(json.loads(kv.value)["since"])
    return IpamState(revision, blocks, affinities, handles, nodes, gone)


async def read_state(datastore: Datastore) -> IpamState:
    listing = await datastore.list(IPAM_ROOT)
    return parse_state(listing.items, listing.revision)


@dataclass(frozen=True)
class PoolConfig:
    pools: list[IPPool]
    strict_affinity: bool = False
    max_blocks_per_host: int = 0

    def usable_by(self, labels: dict[str, str]) -> list[IPPool]:
        """Enabled pools whose nodeSelector matches the node's labels, in name order."""
        return [p for p in self.pools if not p.disabled and parse_selector(p.node_selector).matches(labels)]


async def read_pool_config(resources: ResourceStore) -> PoolConfig:
    """The IPPools and the IPAMConfiguration from the datastore (validated again on the way in)."""
    pools: list[IPPool] = []
    for stored in (await resources.list(IPPOOL_KIND))[0]:
        resource = _parse(stored.body, str(stored.ref))
        if isinstance(resource, IPPool):
            pools.append(resource)
    pools.sort(key=lambda p: p.name)
    config = await resources.get(ResourceRef(IPAMCONFIG_KIND, None, "default"))
    if config is not None:
        parsed = _parse(config.body, "IPAMConfiguration default")
        if isinstance(parsed, IPAMConfiguration):
            return PoolConfig(pools, parsed.strict_affinity, parsed.max_blocks_per_host)
    return PoolConfig(pools)


def _parse(body: dict[str, Any], where: str) -> object:
    body = {k: v for k, v in body.items()}
    body["metadata"] = {k: v for k, v in body.get("metadata", {}).items() if k != "resourceVersion"}
    try:
        return parse_resource(body, where)
    except ValidationError:
        return None  # a stored object that no longer validates is ignored, not fatal
