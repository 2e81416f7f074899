"""PoolAllocator.holds: whether any handle (on any node) holds an address, read from the blocks; what the
CNI's DEL of an unknown container consults before it touches an address's wiring."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network

from vpcnet.datastore.resources import StoredResource
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam
from vpcnet.ipam.poolobjects import BLOCK_KIND, block_document, block_ref

CIDR = IPv4Network("10.244.0.0/26")


class Blocks:
    """Only what holds() reads: the listing of IPAMBlocks."""

    def __init__(self, block: Block) -> None:
        self.block = block

    async def list(self, kind: str, namespace: str | None = None) -> tuple[list[StoredResource], int]:
        if kind != BLOCK_KIND:
            return [], 1
        return [StoredResource(block_ref(self.block.cidr), block_document(self.block), 1)], 1


def test_holds_reads_the_block_of_the_address() -> None:
    block = Block.new(CIDR, "n2")  # another node's block: a borrowed address counts as held too
    ordinal, _ = block.allocate("h-web", "n1", "shop", "web") or (0, 0)
    allocator = PoolAllocator(PoolIpam(Blocks(block), "n1"))  # type: ignore[arg-type]
    assert asyncio.run(allocator.holds(block.address(ordinal)))
    assert not asyncio.run(allocator.holds(block.address(ordinal + 1)))
    assert not asyncio.run(allocator.holds(IPv4Address("10.9.9.9")))  # in no block
