"""The pool IPAM's objects, as Calico's Kubernetes datastore (KDD) stores them (pure; no I/O).

Every object is one resource of a kind both stores serve (vpcnet.datastore.store.ResourceStoreLike), so the
same allocator runs over etcd and over the Kubernetes API, each write a compare-and-swap on one object:
- IPAMBlock (projectcalico.org/v3; CRD ipamblocks.crd.projectcalico.org): name "10-244-0-0-26", spec in
  Calico's layout (vpcnet.ipam.blocks.Block.to_spec). The unit of allocation.
- BlockAffinity: name "<node>-10-244-0-0-26", spec {state pending|confirmed|pendingDeletion, node, cidr,
  type host, deleted "false"}. A node's claim on a block; pending counts as no claim.
- IPAMHandle: name = the handle id made a valid object name, spec {handleID, block: {cidr: count}}: which
  blocks hold this handle's addresses. An annotation records when it was last written, so a repair can tell
  an old dangling handle from one whose allocation is being written right now.
- Lease (coordination.k8s.io/v1, namespace kube-node-lease, name "vpcnet-ipam-<node>"): a node's liveness
  and what other nodes route to (its NodeRecord, in an annotation). In KDD Calico reads this from the
  Kubernetes Node; a Lease is the object Kubernetes itself uses for node heartbeats, and it works the same
  over etcd. The node renews spec.renewTime every ttl/3; a Lease not renewed within leaseDurationSeconds
  means the node is gone (wall clocks: nodes are expected to run NTP, and the IPAM grace period is minutes).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any

from vpcnet.api.ippool import IPAMConfiguration, IPPool
from vpcnet.datastore.resources import ResourceRef, StoredResource, kind_path
from vpcnet.ipam.blocks import Block, BlockAddress, Cidr, block_name, cidr_key
from vpcnet.ipam.node_record import NodeRecord

CALICO_API = "projectcalico.org/v3"
LEASE_API = "coordination.k8s.io/v1"
BLOCK_KIND = kind_path(CALICO_API, "IPAMBlock")
AFFINITY_KIND = kind_path(CALICO_API, "BlockAffinity")
HANDLE_KIND = kind_path(CALICO_API, "IPAMHandle")
LEASE_KIND = kind_path(LEASE_API, "Lease")
IPPOOL_KIND = kind_path(IPPool.API_VERSION, IPPool.KIND)
IPAMCONFIG_KIND = kind_path(IPAMConfiguration.API_VERSION, IPAMConfiguration.KIND)
LEASE_NAMESPACE = "kube-node-lease"
LEASE_PREFIX = "vpcnet-ipam-"
NODE_RECORD_ANNOTATION = "vpcnet.io/node-record"
WRITTEN_ANNOTATION = "vpcnet.io/written-at"

PENDING, CONFIRMED, PENDING_DELETION = "pending", "confirmed", "pendingDeletion"

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def object_name(text: str) -> str:
    """text as a Kubernetes object name (an RFC 1123 subdomain): itself when it is one, else its lower-case
    alphanumeric runs joined by "-" and a hash of the original (so two different texts never collide)."""
    if len(text) <= 253 and _SUBDOMAIN.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:200]
    return f"{stem}-{digest}" if stem else digest


def timestamp(seconds: float) -> str:
    """A Kubernetes MicroTime."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------- blocks


def block_ref(cidr: Cidr) -> ResourceRef:
    return ResourceRef(BLOCK_KIND, None, block_name(cidr))


def block_document(block: Block) -> dict[str, Any]:
    return {
        "apiVersion": CALICO_API,
        "kind": "IPAMBlock",
        "metadata": {"name": block_name(block.cidr)},
        "spec": block.to_spec(),
    }


def parse_block(stored: StoredResource) -> Block:
    return Block.from_spec(stored.body.get("spec") or {})


# ---------------------------------------------------------------------------------------------- affinities


@dataclass(frozen=True)
class Affinity:
    node: str
    cidr: Cidr
    state: str


def affinity_ref(node: str, cidr: Cidr) -> ResourceRef:
    return ResourceRef(AFFINITY_KIND, None, f"{object_name(node)}-{block_name(cidr)}")


def affinity_document(node: str, cidr: Cidr, state: str) -> dict[str, Any]:
    return {
        "apiVersion": CALICO_API,
        "kind": "BlockAffinity",
        "metadata": {"name": affinity_ref(node, cidr).name},
        "spec": {"state": state, "node": node, "cidr": str(cidr), "type": "host", "deleted": "false"},
    }


def parse_affinity(stored: StoredResource) -> Affinity:
    spec = stored.body.get("spec") or {}
    return Affinity(str(spec.get("node", "")), ip_network(spec["cidr"]), str(spec.get("state", "")))


# ---------------------------------------------------------------------------------------------- handles


@dataclass(frozen=True)
class Handle:
    handle_id: str
    blocks: dict[Cidr, int]  # block -> how many of this handle's addresses it holds
    written_at: float  # when last written (0 when unknown: treated as old)


def handle_ref(handle_id: str) -> ResourceRef:
    return ResourceRef(HANDLE_KIND, None, object_name(handle_id))


def handle_document(handle_id: str, blocks: dict[Cidr, int], now: float) -> dict[str, Any]:
    return {
        "apiVersion": CALICO_API,
        "kind": "IPAMHandle",
        "metadata": {
            "name": handle_ref(handle_id).name,
            "annotations": {WRITTEN_ANNOTATION: timestamp(now)},
        },
        "spec": {
            "handleID": handle_id,
            "block": {
                str(cidr): count
                for cidr, count in sorted(blocks.items(), key=lambda item: cidr_key(item[0]))
                if count > 0
            },
            "deleted": False,
        },
    }


def parse_handle(stored: StoredResource) -> Handle:
    spec = stored.body.get("spec") or {}
    written = ((stored.body.get("metadata") or {}).get("annotations") or {}).get(WRITTEN_ANNOTATION)
    return Handle(
        str(spec.get("handleID", stored.ref.name)),
        {ip_network(cidr): int(count) for cidr, count in (spec.get("block") or {}).items()},
        parse_timestamp(written) if written else 0.0,
    )


@dataclass(frozen=True)
class HandleRecord:
    """What one pod interface holds: the address, where it lives in its block, and whose it is (read from
    the block: the handle object says only which block)."""

    handle: str
    address: BlockAddress
    block: Cidr
    ordinal: int
    sequence: int
    node: str
    namespace: str
    pod: str


def records_in(block: Block, handle_id: str) -> list[HandleRecord]:
    """The allocations of handle_id in block."""
    return [
        HandleRecord(handle_id, block.address(o), block.cidr, o, a.sequence, a.node, a.namespace, a.pod)
        for o, a in sorted(block.allocations.items())
        if a.handle == handle_id
    ]


# ---------------------------------------------------------------------------------------------- node leases


@dataclass(frozen=True)
class NodeLease:
    record: NodeRecord | None  # None for a tombstone (a node seen gone that never had a lease)
    node: str
    renewed: float
    duration: float

    @property
    def expires(self) -> float:
        return self.renewed + self.duration

    def live(self, now: float) -> bool:
        return self.record is not None and now < self.expires


def lease_ref(node: str) -> ResourceRef:
    return ResourceRef(LEASE_KIND, LEASE_NAMESPACE, LEASE_PREFIX + object_name(node))


def lease_document(node: str, record: NodeRecord | None, ttl: float, now: float) -> dict[str, Any]:
    """A live node's lease (record given), or a tombstone saying "gone since now" (record None)."""
    annotations = {NODE_RECORD_ANNOTATION: record.to_bytes().decode()} if record else {}
    return {
        "apiVersion": LEASE_API,
        "kind": "Lease",
        "metadata": {
            "name": lease_ref(node).name,
            "namespace": LEASE_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "vpcnet"},
            "annotations": annotations,
        },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": max(1, round(ttl)) if record else 1,
            "renewTime": timestamp(now if record else now - 1),
        },
    }


def parse_lease(stored: StoredResource) -> NodeLease | None:
    """The lease of a node, or None for a Lease that is not one of ours (Kubernetes' own node leases)."""
    if not stored.ref.name.startswith(LEASE_PREFIX):
        return None
    spec = stored.body.get("spec") or {}
    node = str(spec.get("holderIdentity") or "")
    raw = ((stored.body.get("metadata") or {}).get("annotations") or {}).get(NODE_RECORD_ANNOTATION)
    try:
        renewed = parse_timestamp(str(spec["renewTime"]))
        record = NodeRecord.from_bytes(node, raw.encode()) if raw else None
    except (KeyError, ValueError, json.JSONDecodeError):
        return None
    return NodeLease(record, node, renewed, float(spec.get("leaseDurationSeconds") or 0))
