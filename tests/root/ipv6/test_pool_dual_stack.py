"""Pool IPAM in both families against a real etcd: IPv6 pools cut into /122 blocks, dual-stack pods with
one address of each family under one handle, concurrent IPv6 allocators that never hand out an address
twice, and a pod that cannot get both families gets neither."""

from __future__ import annotations

import asyncio
import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from etcd_fixture import EtcdServer

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam, handle_id
from vpcnet.ipam.poolstore import read_state
from vpcnet.ipam.types import AddressExhausted, IpamKey

pytestmark = pytest.mark.root


def ippool(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec},
    }


def run(server: EtcdServer, body: Any) -> None:
    async def go() -> None:
        store = EtcdDatastore(server.settings())
        try:
            await asyncio.wait_for(body(store), 120)
        finally:
            await store.close()

    asyncio.run(go())


def test_dual_stack_pod_gets_one_address_of_each_family(fresh_etcd_server: EtcdServer) -> None:
    async def body(store: EtcdDatastore) -> None:
        resources = ResourceStore(store)
        await resources.apply([ippool("v4", "10.254.0.0/24"), ippool("v6", "fd00:10:254::/64")])
        allocator = PoolAllocator(PoolIpam(resources, "n1"), versions=(4, 6))
        allocator.set_ready()
        key = IpamKey("net", "c1", "eth0")
        got = await allocator.assign(key, "ns", "web")
        assert isinstance(got.address, IPv4Address) and got.address in IPv4Network("10.254.0.0/24")
        assert got.address6 is not None and got.address6 in IPv6Network("fd00:10:254::/64")
        assert got.addresses == (got.address, got.address6)
        assert await allocator.assign(key, "ns", "web") == got  # a repeated ADD: the same two
        assert await allocator.lookup(key) == got
        state = await read_state(resources)
        v6_blocks = [c for c in state.blocks if c.version == 6]
        assert [c.prefixlen for c in v6_blocks] == [122]  # Calico's default IPv6 block size
        assert got.address6 in v6_blocks[0]
        (handle, _) = state.handles[handle_id(key)]
        assert sorted(c.version for c in handle.blocks) == [4, 6]  # one handle counts both
        assert await allocator.release(key) == got
        state = await read_state(resources)
        assert all(block.empty for block, _ in state.blocks.values())
        assert handle_id(key) not in state.handles

    run(fresh_etcd_server, body)


def test_ipv6_only_and_no_half_dual_stack_pod(fresh_etcd_server: EtcdServer) -> None:
    async def body(store: EtcdDatastore) -> None:
        resources = ResourceStore(store)
        await resources.apply([ippool("v4", "10.254.1.0/24")])
        v6_only = PoolAllocator(PoolIpam(resources, "n1"), versions=(6,))
        v6_only.set_ready()
        with pytest.raises(AddressExhausted, match=r"no enabled IPPool selects this node \(IPv6\)"):
            await v6_only.assign(IpamKey("net", "c6", "eth0"), "ns", "p")
        dual = PoolAllocator(PoolIpam(resources, "n1"), versions=(4, 6))
        dual.set_ready()
        with pytest.raises(AddressExhausted):
            await dual.assign(IpamKey("net", "c46", "eth0"), "ns", "p")
        state = await read_state(resources)  # the IPv4 address it got first was given back
        assert all(block.empty for block, _ in state.blocks.values()) and not state.handles
        await resources.apply([ippool("v6", "fd00:10:254:1::/120", blockSize=124)])
        got = await v6_only.assign(IpamKey("net", "c6", "eth0"), "ns", "p")
        assert isinstance(got.address, IPv6Address) and got.address6 is None
        assert got.subnet.prefixlen == 124

    run(fresh_etcd_server, body)


def test_concurrent_ipv6_allocators_never_share_an_address(fresh_etcd_server: EtcdServer) -> None:
    # Four /124 blocks of 16 for six nodes: two find no block and borrow.
    async def body(store: EtcdDatastore) -> None:
        resources = ResourceStore(store)
        await resources.apply([ippool("v6", "fd00:10:254:2::/122", blockSize=124)])
        stores = [EtcdDatastore(fresh_etcd_server.settings()) for _ in range(6)]
        try:

            async def one(i: int) -> list[IPv6Address]:
                ipam = PoolIpam(ResourceStore(stores[i]), f"node-{i}", rng=random.Random(i))
                out = []
                for j in range(10):
                    record = await ipam.assign(f"net.c{i}-{j}.eth0", "default", f"p{i}-{j}", 6)
                    assert isinstance(record.address, IPv6Address)
                    out.append(record.address)
                return out

            got = [a for part in await asyncio.gather(*(one(i) for i in range(6))) for a in part]
        finally:
            for extra in stores:
                await extra.close()
        assert len(got) == 60 and len(set(got)) == 60, "an IPv6 address was handed out twice"
        state = await read_state(resources)
        for block, _ in state.blocks.values():
            assert block.check() == []
        assert sum(len(b.allocations) for b, _ in state.blocks.values()) == 60

    run(fresh_etcd_server, body)
