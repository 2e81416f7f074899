"""Pool IPAM against a real etcd: concurrent allocators never hand out an address twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

import pytest
from etcd_fixture import EtcdServer

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.datastore.types import Condition, WriteOp
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam
from vpcnet.ipam.poolstore import read_state
from vpcnet.ipam.types import AddressExhausted, IpamKey

pytestmark = pytest.mark.root
T = TypeVar("T")


def ippool(name: str, cidr: str, block_size: int = 26, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "blockSize": block_size, **spec},
    }


def ipam_config(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPAMConfiguration",
        "metadata": {"name": "default"},
        "spec": spec,
    }


async def with_stores(
    server: EtcdServer, count: int, body: Callable[[list[EtcdDatastore]], Awaitable[T]]
) -> T:
    stores = [EtcdDatastore(server.settings()) for _ in range(count)]
    try:
        return await asyncio.wait_for(body(stores), 120)
    finally:
        for store in stores:
            await store.close()


class UnconditionalDatastore(EtcdDatastore):
    """A broken datastore that ignores the compare part of every transaction (the negative control)."""

    async def commit(self, conditions: Sequence[Condition], writes: Sequence[WriteOp]) -> int | None:
        return await super().commit([], writes)


async def allocate_concurrently(
    stores: Sequence[EtcdDatastore], nodes: Sequence[str], per_allocator: int
) -> list[tuple[str, IPv4Address]]:
    async def one(i: int) -> list[tuple[str, IPv4Address]]:
        ipam = PoolIpam(ResourceStore(stores[i]), nodes[i], rng=random.Random(i))
        out = []
        for j in range(per_allocator):
            handle = f"net.c{i}-{j}.eth0"
            record = await ipam.assign(handle, "default", f"pod-{i}-{j}")
            out.append((handle, record.address))
        return out

    results = await asyncio.gather(*(one(i) for i in range(len(stores))))
    return [pair for part in results for pair in part]


async def assert_consistent(store: EtcdDatastore, expected: list[tuple[str, IPv4Address]]) -> None:
    state = await read_state(ResourceStore(store))
    assert set(state.handles) == {handle for handle, _ in expected}
    for handle, address in expected:  # each handle counts the block that holds its address
        assert any(address in cidr for cidr in state.handles[handle][0].blocks)
    held: dict[IPv4Address, str] = {}
    for block, _ in state.blocks.values():
        assert block.check() == []
        for ordinal, allocation in block.allocations.items():
            address = block.address(ordinal)
            assert address not in held
            held[address] = allocation.handle
    assert held == {address: handle for handle, address in expected}


def test_twenty_allocators_at_once_never_hand_out_an_address_twice(fresh_etcd_server: EtcdServer) -> None:
    # 16 blocks of 16 for 20 nodes: four nodes find no block left and must borrow; five allocators
    # share each of the last nodes' names to fight over the same blocks.
    nodes = [f"node-{i}" for i in range(15)] + ["node-shared"] * 5

    async def body(stores: list[EtcdDatastore]) -> None:
        await ResourceStore(stores[0]).apply([ippool("p", "10.250.0.0/24", 28)])
        got = await allocate_concurrently(stores, nodes, 12)
        addresses = [a for _, a in got]
        assert len(addresses) == 240
        assert len(set(addresses)) == 240, "an address was handed out twice"
        await assert_consistent(stores[0], got)

    asyncio.run(with_stores(fresh_etcd_server, 20, body))


def test_the_concurrency_test_catches_a_missing_compare_and_swap(fresh_etcd_server: EtcdServer) -> None:
    """Negative control: with the compare part of the transactions dropped, the same run hands out
    duplicates (or loses allocations), and the checks above see it."""
    nodes = ["node-shared"] * 20

    async def body(_: list[EtcdDatastore]) -> None:
        broken = [UnconditionalDatastore(fresh_etcd_server.settings()) for _ in range(20)]
        try:
            await ResourceStore(broken[0]).apply([ippool("p", "10.250.0.0/24", 28)])
            got = await allocate_concurrently(broken, nodes, 5)
            addresses = [a for _, a in got]
            with pytest.raises(AssertionError):
                assert len(set(addresses)) == len(addresses)
                await assert_consistent(broken[0], got)
        finally:
            for store in broken:
                await store.close()

    asyncio.run(with_stores(fresh_etcd_server, 1, body))


def test_assign_is_idempotent_release_frees_and_late_release_is_harmless(
    fresh_etcd_server: EtcdServer,
) -> None:
    async def body(stores: list[EtcdDatastore]) -> None:
        await ResourceStore(stores[0]).apply([ippool("p", "10.251.0.0/28", 28)])
        allocator = PoolAllocator(PoolIpam(ResourceStore(stores[0]), "n1"))
        allocator.set_ready()
        key = IpamKey("net", "abc", "eth0")
        first = await allocator.assign(key, "ns", "pod")
        assert await allocator.assign(key, "ns", "pod") == first
        assert (first.device_number, first.route_table, first.eni_id) == (-1, 254, "")
        assert str(first.subnet) == "10.251.0.0/28"
        assert await allocator.lookup(key) == first
        assert await allocator.release(key) == first
        assert await allocator.release(key) is None
        assert await allocator.lookup(key) is None
        state = await read_state(ResourceStore(stores[0]))
        ((block, _),) = state.blocks.values()
        assert block.empty and block.affinity == "n1"
        assert {n: set(claims) for n, claims in state.affinities.items()} == {"n1": {block.cidr}}

    asyncio.run(with_stores(fresh_etcd_server, 1, body))


def test_borrowing_and_strict_affinity(fresh_etcd_server: EtcdServer) -> None:
    async def body(stores: list[EtcdDatastore]) -> None:
        resources = ResourceStore(stores[0])
        await resources.apply([ippool("p", "10.252.0.0/27", 28)])  # two blocks of 16
        a, b, c = (PoolIpam(ResourceStore(stores[0]), n) for n in ("a", "b", "c"))
        await a.assign("a0")
        await b.assign("b0")
        # c finds both blocks claimed: it borrows from one of them.
        borrowed = await c.assign("c0")
        assert c.counters.borrowed == 1 and borrowed.node == "c"
        state = await read_state(ResourceStore(stores[0]))
        assert "c" not in state.affinities
        owner = state.blocks[borrowed.block][0]
        assert owner.affinity in ("a", "b") and owner.allocations[borrowed.ordinal].node == "c"
        # With strictAffinity, c gets nothing, and the error says why.
        await resources.apply([ipam_config(strictAffinity=True)])
        with pytest.raises(AddressExhausted, match="strictAffinity"):
            await c.assign("c1")
        # a fills its block (less the address c borrowed, if it was a's), then may neither claim nor borrow.
        room = 15 - (owner.affinity == "a")
        for i in range(1, 1 + room):
            await a.assign(f"a{i}")
        with pytest.raises(AddressExhausted, match="every block of the pools is claimed"):
            await a.assign("one-too-many")

    asyncio.run(with_stores(fresh_etcd_server, 1, body))


def test_node_selector_and_disabled_pools(fresh_etcd_server: EtcdServer) -> None:
    async def body(stores: list[EtcdDatastore]) -> None:
        await ResourceStore(stores[0]).apply(
            [
                ippool("zone-a", "10.253.0.0/24", 26, nodeSelector="zone == 'a'"),
                ippool("off", "10.253.1.0/24", 26, disabled=True),
            ]
        )
        in_a = PoolIpam(ResourceStore(stores[0]), "n1", {"zone": "a"})
        assert (await in_a.assign("h1")).address in IPv4Network("10.253.0.0/24")
        elsewhere = PoolIpam(ResourceStore(stores[0]), "n2", {"zone": "b"})
        with pytest.raises(AddressExhausted, match="no enabled IPPool selects this node"):
            await elsewhere.assign("h2")

    asyncio.run(with_stores(fresh_etcd_server, 1, body))
