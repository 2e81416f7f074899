"""The agent's CNI component is built from the agent's settings and the node the ipam component found."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

from vpcnet.agent.cni_component import make_component
from vpcnet.agent.config import AgentConfig, Mode
from vpcnet.agent.context import AgentContext
from vpcnet.cloud.node import NodeInfo
from vpcnet.testing.memalloc import MemoryAllocator

NODE = NodeInfo(
    instance_id="i-1",
    instance_type="m5.large",
    availability_zone="us-east-1a",
    region="us-east-1",
    primary_eni_id="eni-1",
    primary_mac="02:00:00:00:00:01",
    primary_ip=IPv4Address("10.0.1.5"),
    subnet_id="subnet-1",
    subnet_cidr=IPv4Network("10.0.1.0/24"),
    vpc_id="vpc-1",
    vpc_cidrs=(IPv4Network("10.0.0.0/16"),),
    security_groups=(),
)


def test_component_from_agent_context(tmp_path: Path) -> None:
    cfg = AgentConfig(
        agent_socket=tmp_path / "agent.sock",
        veth_prefix="abc",
        eni_mtu=1500,
        exclude_snat_cidrs=(IPv4Network("172.16.0.0/12"),),
    )
    ctx = AgentContext(config=cfg)
    service = make_component(ctx)
    assert service.name == "cni"
    assert ctx.cni is service
    assert service.socket_path == tmp_path / "agent.sock"
    assert service.handler.settings.veth_prefix == "abc" and service.handler.settings.mtu == 1500
    assert not service.ready()  # not serving yet
    ctx.node = NODE
    allocator = MemoryAllocator.from_ranges([("10.0.1.0/24", 1, 0)])
    ctx.allocator = allocator
    assert service.handler.allocator() is allocator
    assert service._host is not None
    host = service._host()
    assert host.primary_ip == IPv4Address("10.0.1.5")
    assert host.vpc_cidrs == (IPv4Network("10.0.0.0/16"),)
    assert host.excluded_snat_cidrs == (IPv4Network("172.16.0.0/12"),)
    assert host.veth_prefix == "abc" and not host.external_snat


def test_calico_mode_has_no_vpc_snat(tmp_path: Path) -> None:
    ctx = AgentContext(config=AgentConfig(agent_socket=tmp_path / "a.sock", mode=Mode.CALICO))
    assert make_component(ctx)._host is None


def test_the_fence_takes_ipv6_pods_and_each_familys_addresses(tmp_path: Path) -> None:
    cfg = AgentConfig(
        agent_socket=tmp_path / "a.sock",
        datastore_endpoints=("http://10.0.255.10:2379", "https://[fd00:10::a]:2379"),
        imds_endpoint="http://[fd00:ec2::254]",
        block_imds=True,
        enable_ipv6=True,
        enable_ipv4=False,
    )
    fence_of = make_component(AgentContext(config=cfg))._fence
    assert fence_of is not None
    fence = fence_of()
    assert fence.ipv6 and fence.families() == (4, 6)
    assert set(fence.datastore) == {(IPv4Address("10.0.255.10"), 2379), (IPv6Address("fd00:10::a"), 2379)}
    assert fence.imds_address6 == IPv6Address("fd00:ec2::254")
    assert fence.imds_address == IPv4Address("169.254.169.254")  # the other family's well-known address
    ipv4_only = make_component(AgentContext(config=AgentConfig(agent_socket=tmp_path / "b.sock")))._fence
    assert ipv4_only is not None and ipv4_only().families() == (4,)
