"""vpcnet's EC2 and IMDS clients (boto3 underneath) against the lab's EC2 endpoint and IMDS on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from vpcnet.cloud.boto_ec2 import Boto3Ec2
from vpcnet.cloud.ec2 import TAG_INSTANCE_ID, Ec2Error
from vpcnet.cloud.imds import Imds
from vpcnet.cloud.throttle import Backoff
from vpcnet.ipam.checkpoint import MemoryCheckpoint
from vpcnet.ipam.interfaces import EveryPodExists, NoNetworking
from vpcnet.ipam.types import IpamKey
from vpcnet.ipam.vpc import VpcAllocator, VpcSettings, capacity_for
from vpcnet.ipam.warm import WarmTargets
from vpcnet.lab.ec2.auth import LAB_CREDENTIALS
from vpcnet.lab.ec2.local import LocalCloud


@pytest.fixture(autouse=True)
def lab_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's endpoint checks signatures: sign with its credentials, as the lab's agents do."""
    for name, value in LAB_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def cloud() -> Iterator[LocalCloud]:
    with LocalCloud() as lc:
        yield lc


def client(lc: LocalCloud, **kw: Any) -> Boto3Ec2:
    return Boto3Ec2(lc.cloud.region, endpoint_url=lc.ec2_url, rate_limit=kw.pop("rate_limit", 200.0), **kw)


def test_imds_node_info_matches_ec2(cloud: LocalCloud) -> None:
    inst = cloud.launch("m5.large")

    async def body() -> None:
        node = await Imds(cloud.imds_url(inst.id)).node_info()
        assert node.instance_id == inst.id
        assert node.instance_type == "m5.large"
        assert node.primary_eni_id == inst.primary_eni_id
        assert node.subnet_cidr == IPv4Network(str(cloud.subnets[0].cidr))
        assert IPv4Network("10.0.0.0/16") in node.vpc_cidrs
        ec2 = client(cloud)
        enis = await ec2.describe_network_interfaces(filters={"attachment.instance-id": [inst.id]})
        assert [e.eni_id for e in enis] == [node.primary_eni_id]
        assert enis[0].mac == node.primary_mac and enis[0].primary_ip == node.primary_ip

    asyncio.run(body())


def test_eni_lifecycle_addresses_and_prefixes(cloud: LocalCloud) -> None:
    inst = cloud.launch("m5.large")
    subnet = cloud.subnets[0].id

    async def body() -> None:
        ec2 = client(cloud)
        t = await ec2.describe_instance_type("m5.large")
        assert (t.max_enis, t.ipv4_per_eni, t.hypervisor) == (3, 10, "nitro")
        eni = await ec2.create_network_interface(
            subnet_id=subnet, description="aws-K8S-x", security_groups=(), tags={TAG_INSTANCE_ID: inst.id},
            secondary_ip_count=3,
        )  # fmt: skip
        assert len(eni.secondary_ips) == 3 and eni.tags[TAG_INSTANCE_ID] == inst.id
        att = await ec2.attach_network_interface(eni.eni_id, inst.id, 1)
        await ec2.set_delete_on_termination(eni.eni_id, att)
        addrs, _ = await ec2.assign_private_ips(eni.eni_id, count=2)
        _, prefixes = await ec2.assign_private_ips(eni.eni_id, prefix_count=1)
        assert len(addrs) == 2 and prefixes[0].prefixlen == 28
        [seen] = await ec2.describe_network_interfaces(eni_ids=[eni.eni_id])
        assert seen.attachment is not None and seen.attachment.device_index == 1
        assert set(addrs) <= set(seen.secondary_ips) and seen.prefixes == tuple(prefixes)
        await ec2.unassign_private_ips(eni.eni_id, addresses=addrs, prefixes=prefixes)
        with pytest.raises(Ec2Error) as err:
            await ec2.delete_network_interface(eni.eni_id)
        assert not err.value.retryable
        await ec2.detach_network_interface(att)
        for _ in range(50):
            try:
                await ec2.delete_network_interface(eni.eni_id)
                break
            except Ec2Error:
                await asyncio.sleep(0.1)
        assert await ec2.describe_network_interfaces(filters={"network-interface-id": [eni.eni_id]}) == []

    asyncio.run(body())


def test_pagination_returns_every_eni(cloud: LocalCloud) -> None:
    inst = cloud.launch("m5.large")

    async def body() -> None:
        ec2 = client(cloud)
        for _ in range(7):
            await ec2.create_network_interface(
                subnet_id=cloud.subnets[0].id, description="aws-K8S-p", security_groups=(),
                tags={TAG_INSTANCE_ID: inst.id},
            )  # fmt: skip
        import vpcnet.cloud.ec2_query as mod

        old = mod.PAGE_SIZE
        mod.PAGE_SIZE = 5  # EC2's minimum page: forces two pages
        try:
            found = await ec2.describe_network_interfaces(filters={f"tag:{TAG_INSTANCE_ID}": [inst.id]})
        finally:
            mod.PAGE_SIZE = old
        assert len(found) == 7 and len({e.eni_id for e in found}) == 7

    asyncio.run(body())


def test_throttling_is_retried_with_backoff(cloud: LocalCloud) -> None:
    cloud.launch("m5.large")
    cloud.faults.update({"throttle": {"describe": {"capacity": 2, "refill_per_second": 20}}})
    seen: list[tuple[str, str | None]] = []

    async def body() -> None:
        ec2 = client(cloud, backoff=Backoff(0.05, 1.0, 10), observer=lambda a, s, e, st: seen.append((a, e)))
        for _ in range(8):
            await ec2.describe_subnet(cloud.subnets[0].id)

    asyncio.run(body())
    assert ("DescribeSubnets", "RequestLimitExceeded") in seen
    assert sum(1 for _, e in seen if e is None) == 8


def test_non_retryable_errors_surface_at_once(cloud: LocalCloud) -> None:
    seen: list[str | None] = []

    async def body() -> None:
        ec2 = client(cloud, observer=lambda a, s, e, st: seen.append(e))
        with pytest.raises(Ec2Error) as err:
            await ec2.describe_subnet("subnet-00000000")
        assert "NotFound" in err.value.code

    asyncio.run(body())
    assert len(seen) == 1


def test_client_rate_limit_spaces_requests(cloud: LocalCloud) -> None:
    async def body() -> float:
        ec2 = client(cloud, rate_limit=20.0)  # burst 40, then 20/s
        loop = asyncio.get_running_loop()
        t = loop.time()
        await asyncio.gather(*(ec2.describe_subnet(cloud.subnets[0].id) for _ in range(50)))
        return loop.time() - t

    assert asyncio.run(body()) >= 0.45  # 10 requests beyond the burst at 20/s


def test_allocator_through_boto3_on_the_lab_endpoint(cloud: LocalCloud) -> None:
    inst = cloud.launch("t3.medium")
    cloud.faults.update({"latency": {"AttachNetworkInterface": 0.2}})

    async def body() -> None:
        node = await Imds(cloud.imds_url(inst.id)).node_info()
        ec2 = client(cloud)
        cap = capacity_for(
            instance_type="t3.medium", type_max_enis=3, ipv4_per_eni=6, max_pods=17,
            prefix_delegation=False, custom_networking=False, max_eni=None,
        )  # fmt: skip
        net = NoNetworking()
        a = VpcAllocator(
            ec2=ec2, node=node, capacity=cap, settings=VpcSettings(WarmTargets(), pool_interval=0.2),
            networking=net, checkpoint=MemoryCheckpoint(), pods=EveryPodExists(),
        )  # fmt: skip
        await a.start()
        got = [await a.assign(IpamKey("n", f"c{i}", "eth0"), "ns", f"p{i}") for i in range(15)]
        assert len({g.address for g in got}) == 15
        enis = await ec2.describe_network_interfaces(filters={"attachment.instance-id": [inst.id]})
        on_ec2 = {ip for e in enis for ip in e.secondary_ips}
        assert {g.address for g in got} == on_ec2
        assert {g.route_table for g in got} == {254, 2, 3}
        assert len(net.configured) == 2
        assert all(isinstance(g.address, IPv4Address) for g in got)
        await a.stop()

    asyncio.run(body())


def test_without_credentials_the_client_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in LAB_CREDENTIALS:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(Ec2Error, match="MissingAuthenticationToken: no AWS credentials"):
        Boto3Ec2("us-west-2", endpoint_url="http://127.0.0.1:1")
