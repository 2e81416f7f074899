"""The reconciler (Reconciler), alone: start-up adoption and checkpoint restore, reconcile against EC2, the
leaked-ENI sweep; no pool controller runs, so EC2 changes only when the test says so."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from vpcnode import Node, key, make_node, run

from vpcnet.cloud.ec2 import TAG_CREATED_AT, TAG_INSTANCE_ID, TAG_NO_MANAGE
from vpcnet.ipam.checkpoint import Allocation, CheckpointData
from vpcnet.ipam.vpc_reconcile import Reconciler, created_age
from vpcnet.ipam.vpc_state import VpcPoolState
from vpcnet.ipam.warm import WarmTargets


def reconciler(node: Node, **kw: object) -> tuple[VpcPoolState, Reconciler]:
    st = node.state(WarmTargets(), **kw)  # type: ignore[arg-type]
    return st, Reconciler(st, node.ec2, node.net, node.pods)


async def attach_eni(node: Node, device: int, tags: dict[str, str], addresses: int) -> str:
    ni = await node.ec2.create_network_interface(
        subnet_id=node.info.subnet_id, description=f"aws-K8S-{node.iid}", security_groups=(), tags=tags,
        secondary_ip_count=addresses,
    )  # fmt: skip
    await node.ec2.attach_network_interface(ni.eni_id, node.iid, device)
    return ni.eni_id


def test_adopts_the_primary_and_ours_and_keeps_foreign_devices_free() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        await node.ec2.assign_private_ips(node.info.primary_eni_id, count=2)
        ours = await attach_eni(node, 1, {TAG_INSTANCE_ID: node.iid}, 3)
        unmanaged = await attach_eni(node, 2, {TAG_INSTANCE_ID: node.iid, TAG_NO_MANAGE: "true"}, 1)
        st, rc = reconciler(node)
        await rc.adopt_enis()
        assert set(st.pool.enis) == {node.info.primary_eni_id, ours}
        assert unmanaged not in st.pool.enis and st.foreign_devices == {2}
        assert st.stats().total == 5
        assert node.net.configured == {ours: 2}  # the primary ENI needs no set-up

    run(body)


def test_restore_keeps_live_pods_cools_gone_ones_and_drops_addresses_no_longer_ours() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        added, _ = await node.ec2.assign_private_ips(node.info.primary_eni_id, count=2)
        st, rc = reconciler(node)
        wall = st.wall()
        eni = node.info.primary_eni_id
        node.checkpoint.data = CheckpointData(
            instance_id=node.iid,
            allocations=[
                Allocation(key(1), added[0], eni, "ns", "live", wall - 100),
                Allocation(key(2), added[1], eni, "ns", "gone", wall - 100),
                Allocation(key(3), IPv4Address("10.0.0.250"), eni, "ns", "elsewhere", wall - 100),
            ],
        )
        node.pods.gone.add("gone")
        await rc.adopt_enis()
        await rc.restore()
        assert st.pool.by_key.keys() == {key(1)}
        assert st.counters.restored == 1 and st.counters.dropped_stale == 2
        s = st.stats()
        assert (s.assigned, s.cooling) == (1, 1)
        assert node.checkpoint.data is not None
        assert [a.key for a in node.checkpoint.data.allocations] == [key(1)]  # written back as it now is

    run(body)


def test_reconcile_follows_ec2_and_force_removes_what_was_taken() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        added, _ = await node.ec2.assign_private_ips(node.info.primary_eni_id, count=2)
        st, rc = reconciler(node)
        await rc.adopt_enis()
        st.pool.assign(st.pool.slots[added[0]], key(1), "ns", "p", st.now())
        await node.ec2.unassign_private_ips(node.info.primary_eni_id, addresses=[added[0]])
        later = await attach_eni(node, 1, {TAG_INSTANCE_ID: node.iid}, 2)
        changed = st.changed
        await rc.reconcile()
        assert key(1) not in st.pool.by_key and st.counters.force_removed_ips == 1
        assert added[0] not in st.pool.slots
        assert later in st.pool.enis and st.stats().total == 3
        assert changed.is_set()  # waiting pods look again

    run(body)


def test_sweep_deletes_only_our_enis_unattached_beyond_the_grace_period() -> None:
    node = make_node()

    async def body() -> None:
        st, rc = reconciler(node, leaked_eni_grace=100.0)
        old = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id, description=f"aws-K8S-{node.iid}", security_groups=(),
            tags={TAG_INSTANCE_ID: node.iid, TAG_CREATED_AT: "2000-01-01T00:00:00Z"},
        )  # fmt: skip
        young = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id, description=f"aws-K8S-{node.iid}", security_groups=(),
            tags={TAG_INSTANCE_ID: node.iid},
        )  # fmt: skip
        hand_made = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id, description="by hand", security_groups=(),
            tags={TAG_INSTANCE_ID: node.iid, TAG_CREATED_AT: "2000-01-01T00:00:00Z"},
        )  # fmt: skip
        await rc.sweep_leaked_enis()
        assert old.eni_id not in node.eni_ids()  # its tag says it is decades old
        assert {young.eni_id, hand_made.eni_id} <= node.eni_ids()
        await asyncio.sleep(101)
        await rc.sweep_leaked_enis()  # no createdAt: counted from when it was first seen
        assert young.eni_id not in node.eni_ids() and hand_made.eni_id in node.eni_ids()
        assert st.counters.leaked_enis_deleted == 2

    run(body)


def test_created_age_reads_the_tag_and_ignores_a_bad_one() -> None:
    assert created_age("1970-01-01T00:01:40Z", 1000.0) == 900.0
    assert created_age(None, 1000.0) is None
    assert created_age("yesterday", 1000.0) is None


def test_sweep_never_deletes_an_eni_the_pool_controller_is_attaching() -> None:
    """An ENI of ours is 'available' between CreateNetworkInterface and the end of its attach. A sweep that
    ran beside the controller (it took no lock) deleted it once its age passed the grace period (the lab
    test: grace 3 s, attach 2 s plus load, createdAt truncated to the second): the attach then failed
    and the controller backed off. The sweep waits for the controller's EC2 work instead."""
    from vpcnet.ipam.eni_pool import Eni
    from vpcnet.ipam.vpc_pool import PoolController

    node = make_node("m5.large", latency={"AttachNetworkInterface": 10.0})

    async def body() -> None:
        st, rc = reconciler(node, leaked_eni_grace=5.0)
        await rc.adopt_enis()
        controller = PoolController(st, node.ec2, node.net)

        async def grow() -> Eni:
            async with st.ec2_lock:  # as the controller's _grow and _ensure_eni_headroom call it
                return await controller._new_eni(2)

        growing = asyncio.create_task(grow())
        await asyncio.sleep(1.0)  # created, attach under way
        await rc.sweep_leaked_enis()  # seen unattached for the first time (if it does not wait)
        await asyncio.sleep(6.0)
        await rc.sweep_leaked_enis()  # 6 s > grace since first seen: deleted, unless it waits
        eni = await growing
        assert eni.eni_id in st.pool.enis and eni.eni_id in node.eni_ids()
        assert st.counters.leaked_enis_deleted == 0

    run(body)


def test_addresses_a_dead_agent_asked_for_are_adopted_by_the_next_reconcile() -> None:
    """kill -9 during AssignPrivateIpAddresses: EC2 completes the call after the restarted agent adopted
    its ENIs. The next reconcile takes the addresses in (free, for pods), so EC2 and the pool agree."""
    node = make_node("m5.large")

    async def body() -> None:
        st, rc = reconciler(node)
        await rc.adopt_enis()
        ours = await attach_eni(node, 1, {TAG_INSTANCE_ID: node.iid}, 2)
        await rc.reconcile()
        late, _ = await node.ec2.assign_private_ips(ours, count=3)  # the dead agent's call lands now
        await rc.reconcile()
        assert set(late) <= set(st.pool.slots) and all(st.pool.slots[a].key is None for a in late)
        on_ec2 = {IPv4Address(a) for e in node.ec2.cloud.enis_of(node.iid) for a in e.secondary_ips}
        assert on_ec2 == set(st.pool.slots)

    run(body)
