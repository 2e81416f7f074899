"""Calico-style address blocks: the unit of affinity and of compare-and-swap (pure; no I/O).

A block is a small CIDR (a /26 by default, a /122 in an IPv6 pool) carved from an IPPool. It may be
affine to one node, which then allocates from it first and routes it. Inside a block, each address
(ordinal) is free or held by one allocation. Free ordinals form a FIFO: allocation takes the head,
release appends to the tail, so the address free the longest is reused first. Every allocation gets the
block's next sequence number; a release names the sequence number it means to free, so a late release
(after the address was freed and handed to someone else) frees nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any

# A block or pool CIDR, and an address in one: either family (a pool, and so its blocks, has one).
Cidr = IPv4Network | IPv6Network
BlockAddress = IPv4Address | IPv6Address

AFFINITY_PREFIX = "host:"  # Calico's block affinity for a node ("virtual:" ones are not used here)


def cidr_key(cidr: Cidr) -> tuple[int, Cidr]:
    """A sort key over both families (Python refuses to compare an IPv4Network with an IPv6Network)."""
    return cidr.version, cidr


def within(net: Cidr, pool: Cidr) -> bool:
    """net lies inside pool (False across families, where subnet_of raises)."""
    return net.version == pool.version and net.subnet_of(pool)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Allocation:
    handle: str
    sequence: int
    node: str  # the node the address is used on (differs from the block's affinity when borrowed)
    namespace: str = ""
    pod: str = ""


@dataclass
class Block:
    cidr: Cidr
    affinity: str | None  # node name, or None for a block whose node is gone
    allocations: dict[int, Allocation] = field(default_factory=dict)
    unallocated: list[int] = field(default_factory=list)
    sequence: int = 0  # the sequence number the next allocation gets

    @classmethod
    def new(cls, cidr: Cidr, affinity: str | None) -> Block:
        return cls(cidr, affinity, {}, list(range(cidr.num_addresses)), 0)

    @property
    def size(self) -> int:
        return self.cidr.num_addresses

    @property
    def free(self) -> int:
        return len(self.unallocated)

    @property
    def empty(self) -> bool:
        return not self.allocations

    def address(self, ordinal: int) -> BlockAddress:
        return self.cidr.network_address + ordinal

    def ordinal(self, address: BlockAddress) -> int:
        if address.version != self.cidr.version or address not in self.cidr:
            raise ValueError(f"{address} is not in block {self.cidr}")
        return int(address) - int(self.cidr.network_address)

    def allocate(self, handle: str, node: str, namespace: str = "", pod: str = "") -> tuple[int, int] | None:
        """Take the free ordinal free the longest; (ordinal, sequence), or None when the block is full."""
        if not self.unallocated:
            return None
        ordinal = self.unallocated.pop(0)
        sequence = self.sequence
        self.sequence += 1
        self.allocations[ordinal] = Allocation(handle, sequence, node, namespace, pod)
        return ordinal, sequence

    def release(self, ordinal: int, sequence: int | None = None, handle: str | None = None) -> bool:
        """Free ordinal if it is held (by that sequence number and handle, when given); False otherwise."""
        held = self.allocations.get(ordinal)
        if held is None:
            return False
        if sequence is not None and held.sequence != sequence:
            return False
        if handle is not None and held.handle != handle:
            return False
        del self.allocations[ordinal]
        self.unallocated.append(ordinal)
        return True

    def check(self) -> list[str]:
        """Internal consistency problems (every ordinal exactly once, free or held)."""
        problems = []
        held, free = set(self.allocations), self.unallocated
        if len(set(free)) != len(free):
            problems.append(f"block {self.cidr}: an ordinal is free twice")
        if held & set(free):
            problems.append(f"block {self.cidr}: ordinals both free and held: {sorted(held & set(free))}")
        if held | set(free) != set(range(self.size)):
            problems.append(f"block {self.cidr}: ordinals neither free nor held")
        return problems

    def to_spec(self) -> dict[str, Any]:
        """The block as Calico's IPAMBlock spec: `allocations` maps each ordinal to an index into
        `attributes` (or None when free), `sequenceNumberForAllocation` keeps each allocation's sequence
        number (ABA protection on release), `affinity` is "host:<node>" (absent when unclaimed)."""
        allocations: list[int | None] = [None] * self.size
        attributes: list[dict[str, Any]] = []
        sequences: dict[str, int] = {}
        for ordinal, held in sorted(self.allocations.items()):
            allocations[ordinal] = len(attributes)
            attributes.append(
                {
                    "handle_id": held.handle,
                    "secondary": {"node": held.node, "namespace": held.namespace, "pod": held.pod},
                }
            )
            sequences[str(ordinal)] = held.sequence
        spec: dict[str, Any] = {
            "cidr": str(self.cidr),
            "allocations": allocations,
            "unallocated": list(self.unallocated),
            "attributes": attributes,
            "sequenceNumber": self.sequence,
            "sequenceNumberForAllocation": sequences,
            "deleted": False,
        }
        if self.affinity is not None:
            spec["affinity"] = f"{AFFINITY_PREFIX}{self.affinity}"
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Block:
        """A block from Calico's IPAMBlock spec (see to_spec); raises ValueError naming the bad field."""
        try:
            cidr = ip_network(spec["cidr"])
            affinity = spec.get("affinity") or None
            if affinity is not None and not str(affinity).startswith(AFFINITY_PREFIX):
                raise ValueError(f"affinity {affinity!r}: only host affinities are supported")
            attributes = spec.get("attributes") or []
            sequences = spec.get("sequenceNumberForAllocation") or {}
            allocations = {}
            for ordinal, index in enumerate(spec.get("allocations") or []):
                if index is None:
                    continue
                attribute = attributes[int(index)]
                secondary = attribute.get("secondary") or {}
                allocations[ordinal] = Allocation(
                    str(attribute.get("handle_id", "")),
                    int(sequences.get(str(ordinal), 0)),
                    str(secondary.get("node", "")),
                    str(secondary.get("namespace", "")),
                    str(secondary.get("pod", "")),
                )
            return cls(
                cidr=cidr,
                affinity=str(affinity)[len(AFFINITY_PREFIX) :] if affinity else None,
                allocations=allocations,
                unallocated=[int(o) for o in spec.get("unallocated") or []],
                sequence=int(spec.get("sequenceNumber", 0)),
            )
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ValueError(f"IPAMBlock spec {spec.get('cidr')!r}: {err}") from None


def block_cidrs(pool: Cidr, block_size: int, start_hint: str = "") -> Iterator[Cidr]:
    """The pool's blocks, rotated to start at a place derived from start_hint (the node's name), so that
    nodes claiming blocks at the same time mostly try different ones instead of fighting over the first.
    A generator: a /12 pool has 16,384 blocks of /26 (an IPv6 /64 has 2**58 of /122) and a claim usually
    needs the first few."""
    count = 1 << (block_size - pool.prefixlen)
    step = 1 << (pool.max_prefixlen - block_size)
    make = IPv4Network if pool.version == 4 else IPv6Network
    start = _stable_hash(start_hint) % count if start_hint else 0
    base = int(pool.network_address)
    for i in range(count):
        yield make((base + ((start + i) % count) * step, block_size))


def _stable_hash(text: str) -> int:
    # FNV-1a: stable across processes (Python's hash() is salted per process).
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def block_name(cidr: Cidr) -> str:
    """A block's object name: 10.244.0.0/26 -> 10-244-0-0-26, fd00:10:244::40/122 -> fd00-10-244--40-122
    (as Calico's KDD names IPAMBlocks: '.', ':' and '/' become '-'). An IPv6 block at a ::-leading or
    all-zero address would start with '-', which no object name may: such a name gets a leading 'x'."""
    name = str(cidr).replace(".", "-").replace(":", "-").replace("/", "-")
    return f"x{name}" if name.startswith("-") else name
