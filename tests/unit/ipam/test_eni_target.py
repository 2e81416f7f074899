"""Custom networking in the allocator: the ENIConfig's subnet and groups for new ENIs, nothing made while it
is missing, and a change of ENIConfig applies to new ENIs only (against the simulated EC2, virtual time)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from vpcnode import Node, key, make_node, run, settle

from vpcnet.ipam.eni_target import EniTarget, EniTargets, EniTargetUnavailable
from vpcnet.ipam.types import AddressExhausted
from vpcnet.ipam.vpc import VpcAllocator, capacity_for
from vpcnet.ipam.warm import WarmTargets


def custom_allocator(node: Node, targets: EniTargets) -> VpcAllocator:
    cap = capacity_for(
        instance_type="m5.large", type_max_enis=3, ipv4_per_eni=10, max_pods=20,
        prefix_delegation=False, custom_networking=True, max_eni=None,
    )  # fmt: skip
    return VpcAllocator(
        ec2=node.ec2, node=node.info, capacity=cap, networking=node.net,
        settings=node.settings(WarmTargets(warm_ip=2), assign_wait=5), checkpoint=node.checkpoint,
        pods=node.pods, eni_targets=targets,
    )  # fmt: skip


def test_without_custom_networking_new_enis_go_with_the_primary_eni() -> None:
    node = make_node("m5.large")
    t = EniTargets().for_new_eni(node.info)
    assert (t.subnet_id, t.security_groups) == (node.info.subnet_id, node.info.security_groups)
    assert EniTargets().problem == ""


def test_an_eniconfig_without_groups_takes_the_primary_enis() -> None:
    node = make_node("m5.large")
    targets = EniTargets(custom_networking=True)
    with pytest.raises(EniTargetUnavailable, match="not been read yet"):
        targets.for_new_eni(node.info)
    targets.use(EniTarget("subnet-0aaaaaaa", (), "ENIConfig x"))
    assert targets.for_new_eni(node.info).security_groups == node.info.security_groups


def test_a_missing_eniconfig_makes_no_eni_and_pods_are_told_why() -> None:
    node = make_node("m5.large")
    targets = EniTargets(custom_networking=True)
    targets.unavailable("ENIConfig 'us-east-1z' (label k8s.amazonaws.com/eniConfig) does not exist")

    async def body() -> None:
        a = custom_allocator(node, targets)
        await a.start()
        await settle(30)
        assert len(node.ec2.cloud.enis_of(node.iid)) == 1  # the primary alone: nothing in the node subnet
        with pytest.raises(AddressExhausted, match=r"us-east-1z.*does not exist"):
            await a.assign(key(1), "ns", "p1")
        assert "us-east-1z" in str(a.describe()["lastError"])
        assert node.secondary(node.info.primary_eni_id) == []
        await a.stop()

    run(body)


def test_the_eniconfig_appearing_wakes_the_pool_and_a_waiting_pod() -> None:
    node = make_node("m5.large")
    pods = node.ec2.add_subnet("10.0.64.0/24")
    targets = EniTargets(custom_networking=True)

    async def body() -> None:
        import asyncio

        a = custom_allocator(node, targets)
        a.state.settings = node.settings(WarmTargets(warm_ip=2), assign_wait=60, pool_interval=1000.0)
        await a.start()
        waiting = asyncio.create_task(a.assign(key(1), "ns", "p1"))
        await asyncio.sleep(0.1)
        targets.use(EniTarget(pods.id, (), "ENIConfig pods"))  # before assign_wait: the pool wakes
        got = await waiting
        assert got.address in IPv4Network("10.0.64.0/24")
        await a.stop()

    run(body)


def test_a_new_eniconfig_applies_to_new_enis_only() -> None:
    node = make_node("m5.large")
    first = node.ec2.add_subnet("10.0.64.0/24")
    second = node.ec2.add_subnet("10.0.80.0/24")
    group = node.ec2.add_security_group("second")
    targets = EniTargets(custom_networking=True)
    targets.use(EniTarget(first.id, (), "ENIConfig first"))

    async def body() -> None:
        a = custom_allocator(node, targets)
        await a.start()
        got = [await a.assign(key(i), "ns", f"p{i}") for i in range(5)]
        assert all(g.address in IPv4Network("10.0.64.0/24") for g in got)
        targets.use(EniTarget(second.id, (group,), "ENIConfig second"))
        got += [await a.assign(key(i), "ns", f"p{i}") for i in range(5, 15)]  # past the first ENI's 9
        in_first = [g for g in got if g.address in IPv4Network("10.0.64.0/24")]
        in_second = [g for g in got if g.address in IPv4Network("10.0.80.0/24")]
        assert len(in_first) == 9 and len(in_second) == 6  # the first ENI filled, then a new one
        enis = {e.subnet_id: e for e in node.ec2.cloud.enis_of(node.iid)}
        assert set(enis) == {node.info.subnet_id, first.id, second.id}
        assert tuple(enis[second.id].security_group_ids) == (group,)
        assert tuple(enis[first.id].security_group_ids) == node.info.security_groups
        assert a.describe()["eniTarget"]["subnet"] == second.id  # type: ignore[index]
        await a.stop()

    run(body)
