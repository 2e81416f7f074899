"""What the VPC address manager needs from the node, as small interfaces the agent (or a test) satisfies."""

from __future__ import annotations

from typing import Protocol

from vpcnet.ipam.eni_pool import Eni
from vpcnet.ipam.types import IpamKey


class EniNetworking(Protocol):
    """Configures a secondary ENI in the node's network namespace (link, address, route table, rule)."""

    async def setup(self, eni: Eni, mtu: int) -> None:
        """Idempotent: a second call with the same ENI changes nothing."""
        ...

    async def teardown(self, eni: Eni) -> None: ...


class PodExistence(Protocol):
    """Whether the pod behind a checkpointed assignment still exists (checked once, at start-up)."""

    async def exists(self, key: IpamKey, pod_namespace: str, pod_name: str) -> bool: ...


class NoNetworking:
    """For tests and the benchmark: remembers which ENIs are configured."""

    def __init__(self) -> None:
        self.configured: dict[str, int] = {}

    async def setup(self, eni: Eni, mtu: int) -> None:
        self.configured[eni.eni_id] = eni.route_table

    async def teardown(self, eni: Eni) -> None:
        self.configured.pop(eni.eni_id, None)


class EveryPodExists:
    async def exists(self, key: IpamKey, pod_namespace: str, pod_name: str) -> bool:
        return True
