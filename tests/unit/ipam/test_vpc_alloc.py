"""The allocator a CNI ADD/DEL sees (VpcAddressAllocator), alone: a pool filled by hand, no EC2 at all."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from typing import Any

import pytest
from vpcnode import Node, adopt_primary, key, make_node, run

from vpcnet.ipam.types import AddressExhausted, AddressManagerNotReady, AddressWaitTimedOut
from vpcnet.ipam.vpc_alloc import VpcAddressAllocator
from vpcnet.ipam.vpc_state import VpcPoolState
from vpcnet.ipam.warm import WarmTargets


def filled(node: Node, addresses: int, **kw: Any) -> VpcPoolState:
    """State with the primary ENI holding `addresses` made-up secondary addresses, ready."""
    st = node.state(WarmTargets(), **kw)
    adopt_primary(node, st)
    base = node.info.subnet_cidr.network_address + 100
    st.pool.add_addresses(node.info.primary_eni_id, [IPv4Address(int(base) + i) for i in range(addresses)])
    st.ready = True
    return st


def test_assign_release_touch_only_memory_and_the_checkpoint() -> None:
    node = make_node()

    async def body() -> None:
        st = filled(node, 3)
        alloc = VpcAddressAllocator(st)  # it has no EC2 client to call
        got = await alloc.assign(key(1), "ns", "p1")
        assert got.eni_id == node.info.primary_eni_id and got.route_table == 254
        assert st.wake.is_set()  # the pool controller is asked to look
        assert node.checkpoint.data is not None
        assert [a.address for a in node.checkpoint.data.allocations] == [got.address]
        assert await alloc.assign(key(1), "ns", "p1") == got  # idempotent by key
        assert await alloc.release(key(1)) == got
        assert node.checkpoint.data.allocations == []
        assert got.address in node.checkpoint.data.cooldown  # released: cooling down
        assert node.ec2.calls == []

    run(body)


def test_not_ready_refuses_with_its_own_error() -> None:
    node = make_node()

    async def body() -> None:
        st = filled(node, 3)
        st.ready = False
        with pytest.raises(AddressManagerNotReady):
            await VpcAddressAllocator(st).assign(key(1), "ns", "p")

    run(body)


def test_an_empty_pool_waits_for_a_notify_then_assigns() -> None:
    node = make_node()

    async def body() -> None:
        st = filled(node, 0, assign_wait=30.0)
        alloc = VpcAddressAllocator(st)
        waiting = asyncio.create_task(alloc.assign(key(1), "ns", "p"))
        await asyncio.sleep(5)
        assert not waiting.done() and st.waiters == 1
        assert st.counters.waited_for_ec2 == 1
        st.pool.add_addresses(node.info.primary_eni_id, [IPv4Address("10.0.0.200")])
        st.notify()  # what the pool controller does after growing
        got = await waiting
        assert got.address == IPv4Address("10.0.0.200") and st.waiters == 0

    run(body)


def test_waiting_past_assign_wait_names_the_last_ec2_error() -> None:
    node = make_node()

    async def body() -> None:
        st = filled(node, 0, assign_wait=10.0)
        st.last_error = "AttachNetworkInterface: AttachmentLimitExceeded: no"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(
            AddressWaitTimedOut,
            match=r"within 10s \(VPCNET_ASSIGN_WAIT\) \(last EC2 error: AttachNetworkInterface",
        ):
            await VpcAddressAllocator(st).assign(key(1), "ns", "p")
        assert loop.time() - started == pytest.approx(10.0, abs=0.1)

    run(body)


def test_a_full_subnet_with_no_slot_elsewhere_is_a_hard_limit_at_once() -> None:
    node = make_node()

    async def body() -> None:
        st = filled(node, 4)  # t3.medium: 5 slots per ENI, primary address included: the ENI is full
        st.subnet_full = (st.now() + 60, node.info.subnet_id)
        alloc = VpcAddressAllocator(st)
        for i in range(4):
            await alloc.assign(key(i), "ns", f"p{i}")
        with pytest.raises(AddressExhausted, match=r"EC2 refused: subnet exhausted .* retrying in 60 s"):
            await alloc.assign(key(9), "ns", "p9")

    run(body)


def test_a_failed_checkpoint_write_leaves_the_pool_as_it_was() -> None:
    node = make_node()

    async def body() -> None:
        st = filled(node, 2)
        alloc = VpcAddressAllocator(st)
        node.checkpoint.fail = True
        with pytest.raises(OSError):
            await alloc.assign(key(1), "ns", "p")
        s = st.stats()
        assert (s.assigned, s.available, s.cooling) == (0, 2, 0)

    run(body)
