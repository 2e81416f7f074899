"""The pool controller (PoolController), alone: its state filled by hand, EC2 simulated, one adjust() at
a time (no background loop, no reconciler)."""

from __future__ import annotations

import asyncio

from vpcnode import Node, adopt_primary, ec2_view, key, make_node, run

from vpcnet.cloud.ec2 import Ec2Error
from vpcnet.ipam.vpc_pool import PoolController
from vpcnet.ipam.vpc_state import SUBNET_FULL_BACKOFF_FIRST, SUBNET_FULL_BACKOFF_MAX, VpcPoolState
from vpcnet.ipam.warm import WarmTargets


def controller(node: Node, targets: WarmTargets, **kw: object) -> tuple[VpcPoolState, PoolController]:
    st = node.state(targets, **kw)  # type: ignore[arg-type]
    adopt_primary(node, st)
    return st, PoolController(st, node.ec2, node.net)


def test_grows_on_the_attached_eni_first_then_attaches_a_new_one() -> None:
    node = make_node("t3.medium")  # 3 ENIs x 5 pod addresses

    async def body() -> None:
        st, pc = controller(node, WarmTargets(warm_ip=3))
        await pc.adjust()
        assert st.stats().total == 3 and ec2_view(node) == (1, 3)
        assert "CreateNetworkInterface" not in node.ec2.calls
        st.waiters = 5  # pods waiting: the target grows with them
        assert pc.target() == 8
        await pc.adjust()
        assert st.stats().total == 8 and ec2_view(node) == (2, 8)
        new = [e for e in st.pool.enis.values() if not e.is_primary]
        assert [e.device_index for e in new] == [1]
        assert node.net.configured == {new[0].eni_id: 2}  # networking set up before use: device 1 -> table 2
        assert st.counters.enis_created == 1 and pc.in_progress == {
            "assign_private_ips": 0,
            "allocate_eni": 0,
        }

    run(body)


def test_a_surplus_goes_back_only_after_the_release_delay_and_only_what_was_never_needed() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        st, pc = controller(node, WarmTargets(warm_ip=2), release_delay=60.0, cooldown=1.0)
        st.waiters = 6
        await pc.adjust()
        assert st.stats().total == 8
        st.waiters = 0  # surplus of 6 from now on
        await pc.adjust()
        await asyncio.sleep(30)
        st.waiters = 2  # for a while only 4 of the 6 were surplus
        await pc.adjust()
        st.waiters = 0
        await asyncio.sleep(31)
        await pc.adjust()  # the surplus lasted 61 s; at least 4 of it was never needed
        assert st.stats().total == 4 and ec2_view(node) == (1, 4)
        assert node.ec2.calls.count("UnassignPrivateIpAddresses") == 1

    run(body)


def test_a_full_subnet_backs_off_and_is_remembered() -> None:
    node = make_node("t3.medium")

    async def body() -> None:
        st, pc = controller(node, WarmTargets(warm_ip=3))
        full = Ec2Error("AssignPrivateIpAddresses", "InsufficientFreeAddressesInSubnet", "full")
        node.ec2.fail_next["AssignPrivateIpAddresses"] = full
        await pc.adjust()
        assert st.stats().total == 0
        assert st.subnet_full == (st.now() + SUBNET_FULL_BACKOFF_FIRST, node.info.subnet_id)
        assert st.backoff_until > st.now() and "InsufficientFreeAddressesInSubnet" in st.last_error
        assert st.counters.ec2_errors == {"AssignPrivateIpAddresses": 1}
        calls = len(node.ec2.calls)
        await pc.adjust()  # backing off: no call
        assert len(node.ec2.calls) == calls

    run(body)


def test_a_cleared_subnet_exhaustion_recovers_within_a_bounded_backoff() -> None:
    """Issue 14, defect 11: a subnet full for a while, then freed, kept ADDs failing for 120 s."""
    node = make_node("t3.medium")

    async def body() -> None:
        st, pc = controller(node, WarmTargets(warm_ip=3))
        full = Ec2Error("AssignPrivateIpAddresses", "InsufficientFreeAddressesInSubnet", "full")
        waits = []
        for _ in range(8):  # full for minutes: the backoff doubles, up to its bound
            node.ec2.fail_next["AssignPrivateIpAddresses"] = full
            await asyncio.sleep(max(0.0, st.backoff_until - st.now()))
            await pc.adjust()
            assert st.subnet_full is not None
            waits.append(st.subnet_full[0] - st.now())
        assert waits[0] == SUBNET_FULL_BACKOFF_FIRST and waits[1] == 2 * SUBNET_FULL_BACKOFF_FIRST
        assert max(waits) == SUBNET_FULL_BACKOFF_MAX
        await asyncio.sleep(SUBNET_FULL_BACKOFF_MAX)  # freed meanwhile: the next round gets addresses
        await pc.adjust()
        assert st.stats().total >= 3 and st.subnet_full is None and st.subnet_full_streak == 0

    run(body)


def test_an_eni_that_fails_to_attach_is_deleted_not_leaked() -> None:
    node = make_node("t3.medium")

    async def body() -> None:
        st, pc = controller(node, WarmTargets(warm_ip=8))
        node.ec2.fail_next["AttachNetworkInterface"] = Ec2Error(
            "AttachNetworkInterface", "InternalError", "x", 500
        )
        await pc.adjust()
        assert st.stats().total == 5  # the primary ENI filled; the new ENI did not attach
        assert node.eni_ids() == {node.info.primary_eni_id}  # and it was deleted again
        assert len(st.pool.enis) == 1 and node.net.configured == {}

    run(body)


def test_warm_eni_target_gives_back_a_whole_idle_eni() -> None:
    node = make_node("t3.medium")

    async def body() -> None:
        st, pc = controller(node, WarmTargets(), release_delay=10.0, cooldown=1.0)
        st.ready = True
        st.waiters = 6
        await pc.adjust()
        assert ec2_view(node) == (3, 15)
        st.waiters = 0
        await pc.adjust()
        await asyncio.sleep(11)
        await pc.adjust()
        assert ec2_view(node)[0] == 2  # one ENI per round, whole
        assert "UnassignPrivateIpAddresses" not in node.ec2.calls
        assert st.counters.enis_deleted == 1
        assert key(1) not in st.pool.by_key

    run(body)
