"""The VPC allocator end to end (VpcAllocator: its three parts together) against the simulated EC2."""

from __future__ import annotations

import asyncio
import re
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpcnode import ec2_view, key, make_node, run, settle

from vpcnet.cloud.ec2 import TAG_CREATED_AT, TAG_INSTANCE_ID
from vpcnet.cloud.throttle import Backoff
from vpcnet.ipam.eni_target import EniTarget, EniTargets
from vpcnet.ipam.types import AddressExhausted, AddressManagerNotReady
from vpcnet.ipam.vpc import VpcAllocator, VpcSettings, capacity_for
from vpcnet.ipam.warm import ADAPTIVE_RELEASE_DELAY, WarmTargets


@pytest.mark.parametrize(
    ("itype", "targets", "pd", "enis", "total"),
    [
        ("t3.medium", WarmTargets(), False, 1, 5),  # WARM_ENI_TARGET=1: one ENI's worth free
        ("t3.medium", WarmTargets(warm_eni=2), False, 2, 10),
        ("t3.medium", WarmTargets(warm_ip=3), False, 1, 3),
        ("t3.medium", WarmTargets(warm_ip=2, minimum_ip=10), False, 2, 10),
        ("t3.medium", WarmTargets(warm_eni=0), False, 1, 5),  # 0 never stalls: keeps something to give
        ("m5.large", WarmTargets(), False, 1, 9),
        ("m5.large", WarmTargets(warm_ip=5, minimum_ip=12), False, 2, 12),
        ("m5.large", WarmTargets(warm_prefix=1), True, 1, 16),
        ("m5.large", WarmTargets(warm_prefix=2), True, 1, 32),
        ("m5.large", WarmTargets(warm_ip=20), True, 1, 32),
    ],
)
def test_pool_settles_at_the_counts_the_knobs_imply(
    itype: str, targets: WarmTargets, pd: bool, enis: int, total: int
) -> None:
    node = make_node(itype)

    async def body() -> None:
        a = node.allocator(targets, pd=pd)
        await a.start()
        await settle()
        assert a.stats().total == total
        assert ec2_view(node) == (enis, total)
        await a.stop()

    run(body)


def test_one_pod_on_warm_eni_target_brings_a_second_eni() -> None:
    node = make_node("t3.medium")

    async def body() -> None:
        a = node.allocator(WarmTargets())
        await a.start()
        await settle()
        calls = len(node.ec2.calls)
        got = await a.assign(key(1), "default", "p1")
        assert len(node.ec2.calls) == calls  # the warm path made no EC2 call
        assert got.device_number == 0 and got.route_table == 254 and got.eni_id == node.info.primary_eni_id
        await settle()
        assert ec2_view(node) == (2, 10)
        assert len(node.net.configured) == 1
        assert list(node.net.configured.values()) == [2]  # device 1 -> table 2
        await a.stop()

    run(body)


def test_the_pool_fills_right_after_start_not_a_pool_interval_later() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(), pool_interval=30.0)
        await a.start()
        await asyncio.sleep(1.0)  # one AssignPrivateIpAddresses (0.5 s simulated), far below 30 s
        assert a.stats().total == 9
        await a.stop()

    run(body)


def test_assign_and_release_are_idempotent_by_key() -> None:
    node = make_node()

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=3))
        await a.start()
        await settle()
        first = await a.assign(key(1), "ns", "p")
        assert await a.assign(key(1), "ns", "p") == first
        assert await a.lookup(key(1)) == first
        assert await a.release(key(1)) == first
        assert await a.release(key(1)) is None
        assert await a.lookup(key(1)) is None
        await a.stop()

    run(body)


def test_not_ready_before_start() -> None:
    node = make_node()

    async def body() -> None:
        a = node.allocator(WarmTargets())
        with pytest.raises(AddressManagerNotReady):
            await a.assign(key(1), "ns", "p")

    run(body)


def test_max_pods_then_a_clear_error_naming_the_limit() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets())
        await a.start()
        got = [await a.assign(key(i), "ns", f"p{i}") for i in range(27)]
        assert len({g.address for g in got}) == 27
        with pytest.raises(AddressExhausted, match=r"m5\.large allows 3 ENIs x 9 addresses = 27"):
            await a.assign(key(99), "ns", "p99")
        assert ec2_view(node) == (3, 27)
        await a.stop()

    run(body)


def test_max_eni_setting_is_named_in_the_error() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(), max_eni=1)
        await a.start()
        for i in range(9):
            await a.assign(key(i), "ns", f"p{i}")
        with pytest.raises(AddressExhausted, match=r"1 ENIs \(MAX_ENI=1\) x 9"):
            await a.assign(key(99), "ns", "p99")
        await a.stop()

    run(body)


def test_prefix_delegation_stops_at_max_pods() -> None:
    node = make_node("m5.large", subnet="10.0.0.0/20")

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_prefix=1), pd=True)
        await a.start()
        got = [await a.assign(key(i), "ns", f"p{i}") for i in range(108)]
        assert len({g.address for g in got}) == 108
        with pytest.raises(AddressExhausted, match=r"max pods reached.*max-pods is 110"):
            await a.assign(key(999), "ns", "p999")
        enis, total = ec2_view(node)
        assert total == 112 and enis == 1  # 7 prefixes on the primary ENI
        await a.stop()

    run(body)


def test_prefix_delegation_refused_on_xen_is_a_clear_ec2_error_not_a_hang() -> None:
    node = make_node("m4.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_prefix=1), pd=True, assign_wait=20.0)
        await a.start()
        with pytest.raises(
            AddressExhausted, match=r"Prefix delegation is not supported for instance type m4\.large"
        ):
            await a.assign(key(1), "ns", "p")
        await a.stop()

    run(body)


def test_cooling_addresses_do_not_count_as_available() -> None:
    node = make_node()

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=2), cooldown=30.0)
        await a.start()
        await settle()
        for i in range(2):
            await a.assign(key(i), "ns", f"p{i}")
        for i in range(2):
            await a.release(key(i))
        await asyncio.sleep(5)
        s = a.stats()
        assert (s.cooling, s.available, s.total) == (2, 2, 4)  # the VPC CNI would stay at 2 (all cooling)
        await a.stop()

    run(body)


def test_releases_are_paced_and_only_give_back_what_was_not_needed() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=2), cooldown=10.0)
        await a.start()
        for i in range(12):
            await a.assign(key(i), "ns", f"p{i}")
        await settle(20)
        assert a.stats().total == 14
        for i in range(12):
            await a.release(key(i))
        await asyncio.sleep(40)  # cooled down, surplus of 12, but not for release_delay yet
        assert a.stats().total == 14
        assert "UnassignPrivateIpAddresses" not in node.ec2.calls
        await asyncio.sleep(60)
        assert a.stats().total == 2
        assert ec2_view(node) == (1, 2)  # the emptied second ENI was freed too
        await a.stop()

    run(body)


def test_empty_pool_waits_for_ec2_instead_of_failing() -> None:
    node = make_node()

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=1))
        await a.start()
        await settle()
        got = await asyncio.gather(*(a.assign(key(i), "ns", f"p{i}") for i in range(8)))
        assert len({g.address for g in got}) == 8
        assert a.counters.waited_for_ec2 >= 1
        await a.stop()

    run(body)


def test_restart_restores_assignments_of_live_pods_and_cools_the_rest() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=2))
        await a.start()
        before = {i: await a.assign(key(i), "ns", f"p{i}") for i in range(12)}
        await settle(30)
        await a.stop()  # as after kill -9: nothing is given back on the way down
        node.pods.gone.add("p3")
        b = node.allocator(WarmTargets(warm_ip=2))
        await b.start()
        for i in range(12):
            if i == 3:
                assert await b.lookup(key(i)) is None
            else:
                assert await b.lookup(key(i)) == before[i]
        assert b.counters.restored == 11 and b.counters.dropped_stale == 1
        s = b.stats()
        assert (s.assigned, s.cooling) == (11, 1)
        fresh = await b.assign(key(50), "ns", "p50")
        assert fresh.address not in {x.address for x in before.values()}
        assert node.checkpoint.data is not None
        assert len(node.checkpoint.data.allocations) == 12
        await b.stop()

    run(body)


def test_checkpoint_write_failure_fails_the_assignment_and_changes_nothing() -> None:
    node = make_node()

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=3))
        await a.start()
        await settle()
        node.checkpoint.fail = True
        with pytest.raises(OSError):
            await a.assign(key(1), "ns", "p")
        assert await a.lookup(key(1)) is None
        assert a.stats().assigned == 0
        node.checkpoint.fail = False
        await a.assign(key(1), "ns", "p")
        node.checkpoint.fail = True
        with pytest.raises(OSError):
            await a.release(key(1))
        assert await a.lookup(key(1)) is not None
        await a.stop()

    run(body)


def test_foreign_enis_are_left_alone_and_ours_are_adopted() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        foreign = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id,
            description="someone else",
            security_groups=(),
            tags={},
            secondary_ip_count=3,
        )
        await node.ec2.attach_network_interface(foreign.eni_id, node.iid, 1)
        ours = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id, description=f"aws-K8S-{node.iid}", security_groups=(),
            tags={TAG_INSTANCE_ID: node.iid}, secondary_ip_count=4,
        )  # fmt: skip
        await node.ec2.attach_network_interface(ours.eni_id, node.iid, 2)
        a = node.allocator(WarmTargets(warm_ip=20))
        await a.start()
        assert set(a.pool.enis) == {node.info.primary_eni_id, ours.eni_id}
        await settle()
        # the foreign ENI took one of m5.large's three ENIs: 2 x 9 = 18 for pods
        assert a.stats().total == 18
        assert len(node.secondary(foreign.eni_id)) == 3
        await a.stop()

    run(body)


def test_leaked_enis_of_ours_are_deleted_after_the_grace_period() -> None:
    node = make_node()

    async def body() -> None:
        leaked = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id, description=f"aws-K8S-{node.iid}", security_groups=(),
            tags={TAG_INSTANCE_ID: node.iid, TAG_CREATED_AT: "2999-01-01T00:00:00Z"},
        )  # fmt: skip
        other = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id,
            description="aws-K8S-i-2",
            security_groups=(),
            tags={TAG_INSTANCE_ID: "i-2"},
        )
        a = node.allocator(WarmTargets(), leaked_eni_grace=100.0)
        await a.start()
        await asyncio.sleep(35)
        assert leaked.eni_id in node.eni_ids()  # seen, but younger than the grace period
        await asyncio.sleep(250)  # swept every max(reconcile, grace / 2) seconds
        assert leaked.eni_id not in node.eni_ids()
        assert other.eni_id in node.eni_ids()  # another node's
        assert a.counters.leaked_enis_deleted == 1
        await a.stop()

    run(body)


def test_full_subnet_is_named_in_the_error() -> None:
    node = make_node(subnet="10.0.0.0/28")  # 11 usable, the primary took one

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=1), assign_wait=5.0)
        await a.start()
        got = []
        subnet = re.escape(node.info.subnet_id)
        full = rf"EC2 refused: subnet exhausted \({subnet}, 10\.0\.0\.0/28\), retrying in \d+ s"
        with pytest.raises(AddressExhausted, match=full):
            for i in range(20):
                got.append(await a.assign(key(i), "ns", f"p{i}"))
        assert len({g.address for g in got}) == len(got) >= 8
        await a.stop()

    run(body)


def test_throttled_ec2_still_serves_every_pod_once() -> None:
    node = make_node(
        "m5.large", throttle_rate=0.5, throttle_burst=1, client_backoff=Backoff(0.2, 10.0, 8), client_rate=2.0
    )

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=1), assign_wait=300.0)
        await a.start()
        got = await asyncio.gather(*(a.assign(key(i), "ns", f"p{i}") for i in range(25)))
        assert len({g.address for g in got}) == 25
        assert "RequestLimitExceeded" in node.ec2.errors  # it was throttled, and backed off
        await settle(600)
        enis = [e for e in node.ec2.cloud.enis() if e.id not in a.pool.enis]
        assert enis == []  # no ENI leaked
        await a.stop()

    run(body)


def test_reconcile_drops_addresses_taken_away_behind_our_back() -> None:
    node = make_node()

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=3))
        await a.start()
        await settle()
        got = await a.assign(key(1), "ns", "p")
        await settle()  # refilled: the pool loop has nothing to ask EC2 for
        eni = node.info.primary_eni_id
        await node.ec2.unassign_private_ips(eni, addresses=[got.address])
        await a.reconcile()
        assert await a.lookup(key(1)) is None
        assert a.counters.force_removed_ips == 1
        assert IPv4Address(got.address) not in a.pool.slots
        await a.stop()

    run(body)


def test_adaptive_mode_sizes_the_pool_from_recent_bursts_and_keeps_an_eni_ahead() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(adaptive=True), cooldown=5.0, release_delay=20.0)
        await a.start()
        await settle(60)
        # cold start: one ENI's worth free, as WARM_ENI_TARGET=1, and a batch of half that more
        assert a.controller.band() == (9, 13)
        assert a.stats().total == 13
        n = 0
        for _ in range(8):  # a burst of 3 pods every two minutes, each living a minute
            got = await asyncio.gather(*(a.assign(key(n + i), "ns", f"p{n + i}") for i in range(3)))
            await asyncio.sleep(60)
            for i in range(3):
                await a.release(key(n + i))
            n += 3
            await asyncio.sleep(60)
            assert len({g.address for g in got}) == 3
        assert a.counters.waited_for_ec2 == 0
        # past the cold start the cold floor's surplus is given back, lazily (after ADAPTIVE_RELEASE_DELAY),
        # down to the worst burst (3) plus one, not a whole ENI, and a batch more (24 arrivals in ~1,400 s:
        # 3 in the next 120 s) that serves the next pods without an EC2 call each
        assert a.controller.band() == (4, 7)
        assert a.stats().total > 7
        # surplus windows, one EC2 call (one ENI's addresses) in each, until what is left is not worth one
        await settle(4 * ADAPTIVE_RELEASE_DELAY + 60)
        low, high = a.controller.band()
        assert low == 4
        assert high <= a.stats().total <= 7  # given back to the top, or left with less than a batch over it
        # the next burst of 4 is served from the pool, and it refills
        await asyncio.gather(*(a.assign(key(100 + i), "ns", f"q{i}") for i in range(4)))
        assert a.counters.waited_for_ec2 == 0
        await a.stop()

    run(body)


def test_adaptive_mode_serves_steady_churn_with_few_ec2_calls() -> None:
    """A pod every 30 s, each living 5 minutes: the pool grows in batches and gives back lazily, so the
    hour costs a few assign/unassign calls, not one or two per pod (120 pods)."""
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(adaptive=True), cooldown=5.0)
        await a.start()
        await settle(60)

        async def pod(i: int) -> None:
            await asyncio.sleep(30 * i)
            await a.assign(key(i), "ns", f"p{i}")
            await asyncio.sleep(300)
            await a.release(key(i))

        await asyncio.gather(*(pod(i) for i in range(40)))  # the cold start (15 min): history builds up
        before = len([c for c in node.ec2.calls if c.endswith("PrivateIpAddresses")])
        await asyncio.gather(*(pod(100 + i) for i in range(120)))
        calls = len([c for c in node.ec2.calls if c.endswith("PrivateIpAddresses")]) - before
        assert a.counters.waited_for_ec2 == 0
        assert calls <= 12
        await a.stop()

    run(body)


def test_adaptive_mode_attaches_an_empty_eni_ahead_of_need() -> None:
    node = make_node("t3.medium")

    async def body() -> None:
        a = node.allocator(WarmTargets(adaptive=True), cooldown=5.0)
        await a.start()
        await settle(30)
        for i in range(4):  # 4 of the primary's 5 slots taken: a burst of 5 needs the next ENI
            await a.assign(key(i), "ns", f"p{i}")
        await settle(30)
        # 4 used + 5 free for a burst + a cold-start batch of 2 = 11 > 2 ENIs x 5: all 3 ENIs attached,
        # and the slots left cover a burst of 5 without waiting for an attach
        assert len(a.pool.enis) == 3
        assert a.slot_headroom() >= 6
        await a.stop()

    run(body)


def test_warm_eni_target_gives_back_whole_enis_one_per_round() -> None:
    node = make_node("t3.medium")

    async def body() -> None:
        a = node.allocator(WarmTargets(), cooldown=10.0)
        await a.start()
        for i in range(6):
            await a.assign(key(i), "ns", f"p{i}")
        await settle(30)
        assert ec2_view(node) == (3, 15)
        for i in range(6):
            await a.release(key(i))
        await asyncio.sleep(75)  # cooled, surplus held for the release delay: one ENI goes
        assert ec2_view(node)[0] == 2
        await asyncio.sleep(75)
        assert ec2_view(node) == (1, 5)
        assert "UnassignPrivateIpAddresses" not in node.ec2.calls  # whole ENIs only, as the VPC CNI
        await a.stop()

    run(body)


def test_custom_networking_puts_pods_on_the_eniconfig_subnet_not_the_primary_eni() -> None:
    node = make_node("m5.large")
    pods_subnet = node.ec2.add_subnet("10.0.64.0/24")
    pods_group = node.ec2.add_security_group("pods")

    async def body() -> None:
        cap = capacity_for(
            instance_type="m5.large", type_max_enis=3, ipv4_per_eni=10, max_pods=20,
            prefix_delegation=False, custom_networking=True, max_eni=None,
        )  # fmt: skip
        settings = VpcSettings(targets=WarmTargets(), pool_interval=1.0)
        targets = EniTargets(custom_networking=True)
        targets.use(EniTarget(pods_subnet.id, (pods_group,), "ENIConfig test"))
        a = VpcAllocator(
            ec2=node.ec2, node=node.info, capacity=cap, settings=settings, networking=node.net,
            checkpoint=node.checkpoint, pods=node.pods, eni_targets=targets,
        )  # fmt: skip
        await a.start()
        got = [await a.assign(key(i), "ns", f"p{i}") for i in range(18)]
        assert all(g.address in IPv4Network("10.0.64.0/24") for g in got)
        assert {g.route_table for g in got} == {2, 3}
        assert node.secondary(node.info.primary_eni_id) == []
        with pytest.raises(AddressExhausted, match=r"2 for pods \(custom networking.* = 18 pod addresses"):
            await a.assign(key(99), "ns", "p99")
        groups = {tuple(e.security_group_ids) for e in node.ec2.cloud.enis() if e.subnet_id == pods_subnet.id}
        assert groups == {(pods_group,)}
        await a.stop()

    run(body)


def test_reconcile_adopts_our_enis_attached_later_and_leaves_foreign_ones_alone() -> None:
    node = make_node("m5.large")

    async def body() -> None:
        a = node.allocator(WarmTargets(warm_ip=1))
        await a.start()
        await settle()
        ours = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id, description=f"aws-K8S-{node.iid}", security_groups=(),
            tags={TAG_INSTANCE_ID: node.iid}, secondary_ip_count=2,
        )  # fmt: skip
        await node.ec2.attach_network_interface(ours.eni_id, node.iid, 1)
        foreign = await node.ec2.create_network_interface(
            subnet_id=node.info.subnet_id,
            description="someone else",
            security_groups=(),
            tags={},
            secondary_ip_count=3,
        )
        await node.ec2.attach_network_interface(foreign.eni_id, node.iid, 2)
        await a.reconcile()
        assert set(a.pool.enis) == {node.info.primary_eni_id, ours.eni_id}
        assert node.net.configured == {ours.eni_id: 2}  # device 1 -> table 2; the foreign one untouched
        # growing past what the two hold must not take the foreign ENI's device index, nor its addresses
        got = [await a.assign(key(i), "ns", f"p{i}") for i in range(18)]
        assert len({g.address for g in got}) == 18
        assert {g.eni_id for g in got} == {node.info.primary_eni_id, ours.eni_id}
        assert len(node.secondary(foreign.eni_id)) == 3
        assert node.ec2.cloud.eni(foreign.eni_id).attachment is not None
        await a.stop()

    run(body)
