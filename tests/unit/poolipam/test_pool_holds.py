"""PoolAllocator.holds: whether any handle (on any node) holds an address, read from the blocks; what the
CNI's DEL of an unknown container consults before it touches an address's wiring."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network

from vpcnet.datastore.types import KeyValue, Listing
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam
from vpcnet.ipam.poolstore import block_key

CIDR = IPv4Network("10.244.0.0/26")


class Blocks:
    def __init__(self, block: Block) -> None:
        self.block = block

    async def list(self, prefix: str) -> Listing:
        key = block_key(self.block.cidr)
        items = [KeyValue(key, self.block.to_bytes(), 1, 1, 1)] if key.startswith(prefix) else []
        return Listing(items, 1)


def test_holds_reads_the_block_of_the_address() -> None:
    block = Block.new(CIDR, "n2")  # another node's block: a borrowed address counts as held too
    ordinal, _ = block.allocate("h-web", "n1", "shop", "web") or (0, 0)
    allocator = PoolAllocator(PoolIpam(Blocks(block), "n1"))  # type: ignore[arg-type]
    assert asyncio.run(allocator.holds(block.address(ordinal)))
    assert not asyncio.run(allocator.holds(block.address(ordinal + 1)))
    assert not asyncio.run(allocator.holds(IPv4Address("10.9.9.9")))  # in no block
