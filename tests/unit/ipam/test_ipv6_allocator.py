"""The IPv6 address manager (ENABLE_IPv6) against the simulated EC2 (the lab's engine in-process): one /80
on the primary ENI, pods from it with a node-local IPv4 each, no ENI growth, the checkpoint kept across a
restart and reconciled with what IMDS shows."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest
from vpcnode import Pods, key, run

from vpcnet.cloud.ec2 import Ec2Error
from vpcnet.ipam.checkpoint import CheckpointData, MemoryCheckpoint
from vpcnet.ipam.ipv6 import EGRESS_V4_CIDR, Ipv6Allocator, Ipv6SetupError
from vpcnet.ipam.types import AddressManagerNotReady, Allocator
from vpcnet.testing.simulated_ec2 import SimulatedEc2

VPC6 = "2001:db8:1f14:8c00::/56"
SUBNET6 = "2001:db8:1f14:8c01::/64"


class Ipv6Node:
    def __init__(self) -> None:
        self.ec2 = SimulatedEc2(vpc_ipv6_cidr=VPC6)
        subnet = self.ec2.add_subnet("10.0.0.0/24", ipv6_cidr=SUBNET6)
        self.info = self.ec2.node_info(self.ec2.launch("m5.large", subnet.id).id)
        self.checkpoint = MemoryCheckpoint()
        self.pods = Pods()

    async def imds_prefixes(self) -> list[IPv6Network]:
        """What IMDS shows under ipv6-prefix of the primary MAC: the engine's state of that ENI."""
        return [IPv6Network(p) for p in self.ec2.cloud.eni(self.info.primary_eni_id).ipv6_prefixes]

    def prefixes(self) -> list[str]:
        return list(self.ec2.cloud.eni(self.info.primary_eni_id).ipv6_prefixes)

    def allocator(self) -> Ipv6Allocator:
        return Ipv6Allocator(
            ec2=self.ec2,
            node=self.info,
            checkpoint=self.checkpoint,
            pods=self.pods,
            imds_prefixes=self.imds_prefixes,
        )


def test_start_assigns_one_80_on_the_primary_eni_and_pods_get_addresses_from_it() -> None:
    node = Ipv6Node()

    async def body() -> None:
        alloc = node.allocator()
        assert not alloc.ready()
        with pytest.raises(AddressManagerNotReady):
            await alloc.assign(key(0), "default", "p0")
        await alloc.start()
        assert alloc.ready() and alloc.assigned_prefix
        (prefix,) = node.prefixes()
        assert IPv6Network(prefix).prefixlen == 80 and IPv6Network(prefix).subnet_of(IPv6Network(SUBNET6))
        enis_before = len(node.ec2.cloud.enis())
        calls_before = len(node.ec2.calls)
        got = [await alloc.assign(key(i), "default", f"p{i}") for i in range(50)]
        # no warm pool, no ENI growth: 50 pods cost no EC2 call at all
        assert len(node.ec2.calls) == calls_before and len(node.ec2.cloud.enis()) == enis_before
        addresses = [a.address for a in got]
        assert len(set(addresses)) == 50
        assert all(isinstance(a, IPv6Address) and a in IPv6Network(prefix) for a in addresses)
        assert all(a.eni_id == node.info.primary_eni_id and a.route_table == 254 for a in got)
        egress = [a.egress_v4 for a in got]
        assert len(set(egress)) == 50 and all(e is not None and e in EGRESS_V4_CIDR for e in egress)
        # idempotent per key
        assert await alloc.assign(key(3), "default", "p3") == got[3]
        assert await alloc.holds(got[3].address) and await alloc.holds(IPv4Address(str(got[3].egress_v4)))
        assert not await alloc.holds(IPv6Network(prefix).network_address + 100000)

    run(body)


def test_a_prefix_already_on_the_eni_is_used_not_a_second_one() -> None:
    node = Ipv6Node()

    async def body() -> None:
        _, (existing,) = await node.ec2.assign_ipv6(node.info.primary_eni_id, prefix_count=1)
        alloc = node.allocator()
        await alloc.start()
        assert alloc.prefix == existing and not alloc.assigned_prefix
        assert node.prefixes() == [str(existing)]
        assert "AssignIpv6Addresses" not in node.ec2.calls[1:]

    run(body)


def test_release_frees_and_a_freed_address_is_not_handed_out_again_at_once() -> None:
    node = Ipv6Node()

    async def body() -> None:
        alloc = node.allocator()
        await alloc.start()
        a = await alloc.assign(key(1), "default", "a")
        assert await alloc.release(key(1)) == a
        assert await alloc.release(key(1)) is None
        assert not await alloc.holds(a.address)
        b = await alloc.assign(key(2), "default", "b")
        assert b.address != a.address
        assert await alloc.lookup(key(2)) == b and await alloc.lookup(key(1)) is None

    run(body)


def test_restart_keeps_assignments_of_live_pods_and_drops_the_rest() -> None:
    node = Ipv6Node()

    async def body() -> None:
        first = node.allocator()
        await first.start()
        held = {i: await first.assign(key(i), "default", f"p{i}") for i in range(4)}
        node.pods.gone.add("p2")
        second = node.allocator()
        await second.start()
        assert second.prefix == first.prefix
        assert node.prefixes() == [str(first.prefix)]  # no second /80
        for i in (0, 1, 3):
            assert await second.lookup(key(i)) == held[i]
        assert await second.lookup(key(2)) is None and not await second.holds(held[2].address)
        new = await second.assign(key(9), "default", "p9")
        assert new.address not in {h.address for h in held.values()}
        data = node.checkpoint.load()
        assert data is not None and len(data.allocations) == 4
        raw = data.to_json()["allocations"]
        assert all("ipv6" in a and "ipv4" not in a and "egressIPv4" in a for a in raw)

    run(body)


def test_checkpointed_address_outside_the_enis_prefix_is_dropped() -> None:
    node = Ipv6Node()

    async def body() -> None:
        first = node.allocator()
        await first.start()
        a = await first.assign(key(1), "default", "p1")
        assert first.prefix is not None
        # while the agent was down, the ENI's /80 was replaced by another (IMDS now shows only that one)
        _, (other,) = await node.ec2.assign_ipv6(node.info.primary_eni_id, prefix_count=1)
        await node.ec2.unassign_ipv6(node.info.primary_eni_id, prefixes=[first.prefix])
        second = node.allocator()
        await second.start()
        assert second.prefix == other and not second.assigned_prefix
        assert await second.lookup(key(1)) is None and not await second.holds(a.address)

    run(body)


def test_a_failed_checkpoint_write_unwinds_the_assignment() -> None:
    node = Ipv6Node()

    async def body() -> None:
        alloc = node.allocator()
        await alloc.start()
        node.checkpoint.fail = True
        with pytest.raises(OSError):
            await alloc.assign(key(1), "default", "p1")
        assert await alloc.lookup(key(1)) is None
        node.checkpoint.fail = False
        a = await alloc.assign(key(1), "default", "p1")
        assert await alloc.lookup(key(1)) == a

    run(body)


def test_ec2_refusing_the_prefix_fails_start_with_its_error() -> None:
    node = Ipv6Node()

    async def body() -> None:
        node.ec2.fail_next["AssignIpv6Addresses"] = Ec2Error(
            "AssignIpv6Addresses", "UnauthorizedOperation", "not allowed"
        )
        alloc = node.allocator()
        with pytest.raises(Ec2Error, match="UnauthorizedOperation"):
            await alloc.start()
        assert not alloc.ready()

    run(body)


def test_a_subnet_without_ipv6_gives_a_clear_error() -> None:
    node = Ipv6Node()
    plain = node.ec2.add_subnet("10.0.1.0/24")
    node.info = node.ec2.node_info(node.ec2.launch("m5.large", plain.id).id)

    async def body() -> None:
        with pytest.raises((Ec2Error, Ipv6SetupError)):
            await node.allocator().start()

    run(body)


def test_it_is_an_allocator() -> None:
    node = Ipv6Node()
    alloc: Allocator = node.allocator()
    assert not alloc.ready()


def test_checkpoint_round_trips_both_families() -> None:
    data = CheckpointData.from_json(
        {
            "version": "vpcnet-ipam/1",
            "allocations": [
                {"networkName": "n", "containerID": "c", "ifName": "eth0", "ipv6": "2001:db8::5",
                 "egressIPv4": "169.254.172.9"},
                {"networkName": "n", "containerID": "d", "ifName": "eth0", "ipv4": "10.0.0.5"},
            ],
        },
        "test",
    )  # fmt: skip
    a6, a4 = data.allocations
    assert a6.address == IPv6Address("2001:db8::5") and a6.egress_v4 == IPv4Address("169.254.172.9")
    assert a4.address == IPv4Address("10.0.0.5") and a4.egress_v4 is None
    assert CheckpointData.from_json(data.to_json(), "again").allocations == data.allocations


def test_a_pods_egress_ipv4_is_found_by_its_ipv6_address() -> None:
    node = Ipv6Node()

    async def body() -> None:
        alloc = node.allocator()
        await alloc.start()
        a = await alloc.assign(key(1), "default", "a")
        b = await alloc.assign(key(2), "default", "b")
        assert alloc.egress_v4_of(a.address) == a.egress_v4 and alloc.egress_v4_of(b.address) == b.egress_v4
        assert a.egress_v4 is not None and alloc.egress_v4_of(a.egress_v4) is None  # not by the IPv4 itself
        await alloc.release(key(1))
        assert alloc.egress_v4_of(a.address) is None

    run(body)
