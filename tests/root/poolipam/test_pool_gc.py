"""ipam check / release --from-report / gone-node cleanup against a real etcd."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network
from typing import TypeVar

import pytest
from etcd_fixture import EtcdServer

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.poolgc import check, cleanup_gone_nodes, release_from_report
from vpcnet.ipam.poolnodes import NodeRegistration
from vpcnet.ipam.poolstore import read_state

pytestmark = pytest.mark.root
T = TypeVar("T")

POOL = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "IPPool",
    "metadata": {"name": "p"},
    "spec": {"cidr": "10.254.0.0/22", "blockSize": 27},
}


def run(server: EtcdServer, body: Callable[[EtcdDatastore], Awaitable[T]]) -> T:
    async def main() -> T:
        ds = EtcdDatastore(server.settings())
        try:
            await ResourceStore(ds).apply([POOL])
            return await asyncio.wait_for(body(ds), 120)
        finally:
            await ds.close()

    return asyncio.run(main())


def record(name: str, address: str) -> NodeRecord:
    return NodeRecord(name, IPv4Address(address), IPv4Network("10.0.1.0/24"))


def test_check_is_clean_after_heavy_churn(fresh_etcd_server: EtcdServer) -> None:
    async def body(ds: EtcdDatastore) -> None:
        regs = [NodeRegistration(ResourceStore(ds), record(f"n{i}", f"10.0.1.{10 + i}")) for i in range(3)]
        for reg in regs:
            await reg.register()
        ipams = [PoolIpam(ResourceStore(ds), f"n{i}", rng=random.Random(i)) for i in range(3)]
        rng = random.Random(7)
        live: dict[str, tuple[int, str]] = {}
        for step in range(300):
            if live and rng.random() < 0.45:
                handle = rng.choice(sorted(live))
                node, _ = live.pop(handle)
                assert await ipams[node].release(handle) is not None
            else:
                node = rng.randrange(3)
                handle = f"net.c{step}.eth0"
                await ipams[node].assign(handle, "default", f"pod{step}")
                live[handle] = (node, f"pod{step}")
        pods = {("default", pod) for _, pod in live.values()}
        report = await check(ResourceStore(ds), pods)
        assert report.clean, report.to_json()
        assert report.allocations_in_use == len(live)

    run(fresh_etcd_server, body)


def test_report_finds_leaks_and_release_frees_only_what_is_unchanged(fresh_etcd_server: EtcdServer) -> None:
    async def body(ds: EtcdDatastore) -> None:
        await NodeRegistration(ResourceStore(ds), record("n1", "10.0.1.10")).register()
        ipam = PoolIpam(ResourceStore(ds), "n1")
        kept = await ipam.assign("h-kept", "default", "kept")
        gone = await ipam.assign("h-gone", "default", "gone")
        stale = await ipam.assign("h-stale", "default", "stale")
        report = await check(ResourceStore(ds), {("default", "kept")})
        assert sorted(leak.pod for leak in report.leaked) == ["gone", "stale"]
        assert {leak.reason for leak in report.leaked} == {"pod-gone"}
        # Meanwhile h-stale is released by its CNI DEL and the address handed out again: the report is
        # stale for that address and must not free the new owner's.
        await ipam.release("h-stale")
        block = IPv4Network(str(stale.block))
        reused = None
        for i in range(40):
            got = await ipam.assign(f"h-new{i}", "default", f"new{i}")
            if got.address == stale.address:
                reused = got
                break
        assert reused is not None and reused.block == block
        result = await release_from_report(ResourceStore(ds), report.to_json())
        assert result.released == [str(gone.address)]
        assert result.skipped == [str(stale.address)]
        state = await read_state(ResourceStore(ds))
        assert "h-gone" not in state.handles and "h-kept" in state.handles
        block_now = state.blocks[stale.block][0]  # the new owner keeps it
        assert block_now.allocations[block_now.ordinal(stale.address)].handle == reused.handle
        assert kept.address != gone.address

    run(fresh_etcd_server, body)


def test_gone_node_released_after_grace_period(fresh_etcd_server: EtcdServer) -> None:
    async def body(ds: EtcdDatastore) -> None:
        clock = [1000.0]
        alive = NodeRegistration(ResourceStore(ds), record("alive", "10.0.1.10"), ttl_seconds=30)
        dying = NodeRegistration(ResourceStore(ds), record("dying", "10.0.1.11"), ttl_seconds=30)
        await alive.start()
        await dying.start()
        await PoolIpam(ResourceStore(ds), "alive").assign("a0", "default", "a0")
        for i in range(3):
            await PoolIpam(ResourceStore(ds), "dying").assign(f"d{i}", "default", f"d{i}")
        assert (await check(ResourceStore(ds), None)).clean
        await dying.stop(withdraw=True)  # the lease goes: the node is gone now
        report = await check(ResourceStore(ds), None)
        assert {leak.reason for leak in report.leaked} == {"node-gone"} and len(report.leaked) == 3
        assert [b["node"] for b in report.gone_node_blocks] == ["dying"]

        first = await cleanup_gone_nodes(ResourceStore(ds), grace_seconds=60, now=lambda: clock[0])
        assert first.marked_gone == ["dying"] and first.released_addresses == 0
        clock[0] += 30
        assert (
            await cleanup_gone_nodes(ResourceStore(ds), 60, now=lambda: clock[0])
        ).released_addresses == 0  # in grace
        clock[0] += 31
        done = await cleanup_gone_nodes(ResourceStore(ds), 60, now=lambda: clock[0])
        assert done.released_addresses == 3 and len(done.released_blocks) == 1
        state = await read_state(ResourceStore(ds))
        assert "dying" not in state.affinities and not state.gone_since
        assert (await check(ResourceStore(ds), None)).clean
        await alive.stop()

    run(fresh_etcd_server, body)


def test_node_that_comes_back_in_grace_keeps_its_blocks(fresh_etcd_server: EtcdServer) -> None:
    async def body(ds: EtcdDatastore) -> None:
        clock = [0.0]
        reg = NodeRegistration(ResourceStore(ds), record("flappy", "10.0.1.12"))
        await reg.register()
        await PoolIpam(ResourceStore(ds), "flappy").assign("f0", "default", "f0")
        await reg.stop(withdraw=True)
        assert (await cleanup_gone_nodes(ResourceStore(ds), 60, now=lambda: clock[0])).marked_gone == [
            "flappy"
        ]
        await reg.register()
        clock[0] += 1000
        again = await cleanup_gone_nodes(ResourceStore(ds), 60, now=lambda: clock[0])
        assert again.released_addresses == 0 and not again.marked_gone  # its lease replaced the tombstone
        assert "flappy" in (await read_state(ResourceStore(ds))).affinities
        await reg.stop()

    run(fresh_etcd_server, body)


def test_gone_nodes_block_with_a_borrowed_address_loses_its_affinity_then_goes(
    fresh_etcd_server: EtcdServer,
) -> None:
    async def body(ds: EtcdDatastore) -> None:
        small = dict(POOL, metadata={"name": "p"}, spec={"cidr": "10.254.0.0/27", "blockSize": 28})
        await ResourceStore(ds).apply([small])
        clock = [0.0]
        alive = NodeRegistration(ResourceStore(ds), record("alive", "10.0.1.10"))
        dying = NodeRegistration(ResourceStore(ds), record("dying", "10.0.1.11"))
        await alive.register()
        await dying.register()
        keeper, goner = PoolIpam(ResourceStore(ds), "alive"), PoolIpam(ResourceStore(ds), "dying")
        await goner.assign("d0", "default", "d0")
        for i in range(17):  # 16 fill alive's block, the 17th is borrowed from dying's
            await keeper.assign(f"a{i}", "default", f"a{i}")
        assert keeper.counters.borrowed == 1
        await dying.stop(withdraw=True)
        await cleanup_gone_nodes(ResourceStore(ds), 10, now=lambda: clock[0])
        clock[0] += 11
        done = await cleanup_gone_nodes(ResourceStore(ds), 10, now=lambda: clock[0])
        state = await read_state(ResourceStore(ds))
        (orphan,) = [b for b, _ in state.blocks.values() if b.affinity is None]
        # The claim is released; the block stays (unclaimed) while alive's borrowed address is in it.
        assert done.released_addresses == 1 and done.released_blocks == [str(orphan.cidr)]
        assert len(orphan.allocations) == 1 and "dying" not in state.affinities
        assert (await check(ResourceStore(ds), None)).clean
        await keeper.release("a16")  # the borrowed one
        last = await cleanup_gone_nodes(ResourceStore(ds), 10, now=lambda: clock[0])
        assert last.released_blocks == [str(orphan.cidr)]
        assert (await check(ResourceStore(ds), None)).clean
        await alive.stop()

    run(fresh_etcd_server, body)
