"""A node for the VPC allocator's tests: the simulated EC2 (the lab's engine in-process), one instance, and
the allocator's other inputs held in memory. Everything runs on a virtual clock (exact and fast)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.checkpoint import MemoryCheckpoint
from vpcnet.ipam.eni_pool import Eni
from vpcnet.ipam.interfaces import NoNetworking
from vpcnet.ipam.limits import instance_limits
from vpcnet.ipam.types import IpamKey
from vpcnet.ipam.vpc import VpcAllocator, VpcSettings, capacity_for
from vpcnet.ipam.vpc_state import VpcPoolState
from vpcnet.ipam.warm import Capacity, WarmTargets
from vpcnet.testing.simulated_ec2 import SimulatedEc2
from vpcnet.testing.virtual_time import run_virtual

MAX_PODS = {"t3.medium": 17, "m5.large": 29, "m4.large": 20}


class Pods:
    def __init__(self) -> None:
        self.gone: set[str] = set()

    async def exists(self, key: IpamKey, pod_namespace: str, pod_name: str) -> bool:
        return pod_name not in self.gone


@dataclass
class Node:
    ec2: SimulatedEc2
    info: NodeInfo
    checkpoint: MemoryCheckpoint = field(default_factory=MemoryCheckpoint)
    net: NoNetworking = field(default_factory=NoNetworking)
    pods: Pods = field(default_factory=Pods)
    instance_type: str = "t3.medium"

    @property
    def iid(self) -> str:
        return self.info.instance_id

    def capacity(self, pd: bool = False, max_eni: int | None = None, custom: bool = False) -> Capacity:
        t = instance_limits(self.instance_type)
        return capacity_for(
            instance_type=t.name, type_max_enis=t.enis_on_default_card, ipv4_per_eni=t.ipv4_per_eni,
            max_pods=110 if pd else MAX_PODS[self.instance_type], prefix_delegation=pd,
            custom_networking=custom, max_eni=max_eni,
        )  # fmt: skip

    def settings(self, targets: WarmTargets, **kw: Any) -> VpcSettings:
        kw = {"pool_interval": 1.0, "release_delay": 60.0, "reconcile_interval": 30.0, **kw}
        return VpcSettings(targets=targets, **kw)

    def allocator(self, targets: WarmTargets, pd: bool = False, **kw: Any) -> VpcAllocator:
        cap = self.capacity(pd, kw.pop("max_eni", None))
        return VpcAllocator(
            ec2=self.ec2, node=self.info, capacity=cap, settings=self.settings(targets, **kw),
            networking=self.net, checkpoint=self.checkpoint, pods=self.pods,
        )  # fmt: skip

    def state(self, targets: WarmTargets, pd: bool = False, **kw: Any) -> VpcPoolState:
        """The shared state alone (needs a running loop), for testing one part of the allocator."""
        cap = self.capacity(pd, kw.pop("max_eni", None))
        return VpcPoolState(
            node=self.info, capacity=cap, settings=self.settings(targets, **kw), checkpoint=self.checkpoint
        )

    def secondary(self, eni_id: str) -> list[str]:
        return self.ec2.cloud.eni(eni_id).secondary_ips

    def eni_ids(self) -> set[str]:
        return {e.id for e in self.ec2.cloud.enis()}


def make_node(instance_type: str = "t3.medium", subnet: str = "10.0.0.0/24", **sim: Any) -> Node:
    ec2 = SimulatedEc2(**sim)
    s = ec2.add_subnet(subnet)
    inst = ec2.launch(instance_type, s.id)
    return Node(ec2, ec2.node_info(inst.id), instance_type=instance_type)


def key(i: int) -> IpamKey:
    return IpamKey("aws-cni", f"c{i:04d}", "eth0")


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await body()

    run_virtual(main())


async def settle(seconds: float = 120.0) -> None:
    await asyncio.sleep(seconds)


def ec2_view(node: Node) -> tuple[int, int]:
    """(ENIs attached to the instance, addresses for pods on them) as EC2 sees it."""
    enis = node.ec2.cloud.enis_of(node.iid)
    return len(enis), sum(len(e.secondary_ips) + 16 * len(e.prefixes) for e in enis)


def adopt_primary(node: Node, st: VpcPoolState) -> None:
    """Put the instance's primary ENI in the pool, with no secondary address, as start-up adoption would."""
    i = node.info
    st.pool.add_eni(Eni(i.primary_eni_id, i.primary_mac, 0, i.primary_ip, i.subnet_id, i.subnet_cidr, True))
