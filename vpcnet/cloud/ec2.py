"""The EC2 operations the agent needs, as a Protocol with plain types, and EC2's errors.

`Boto3Ec2` (boto3, the real client) and `vpcnet.testing.simulated_ec2.SimulatedEc2` (the lab's EC2
engine in-process, for the engine's tests and the benchmark) implement it. Everything above this layer sees
only these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

# Tags the VPC CNI puts on the ENIs it creates; vpcnet uses the same so that the two recognise each other's.
TAG_INSTANCE_ID = "node.k8s.amazonaws.com/instance_id"
TAG_CREATED_AT = "node.k8s.amazonaws.com/createdAt"
TAG_CLUSTER = "cluster.k8s.amazonaws.com/name"
TAG_NO_MANAGE = "node.k8s.amazonaws.com/no_manage"
DESCRIPTION_PREFIX = "aws-K8S-"

THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "SlowDown",
    }
)
SUBNET_FULL_CODES = frozenset({"InsufficientFreeAddressesInSubnet", "InsufficientCidrBlocks"})


class Ec2Error(Exception):
    """An error answer from EC2 (or the transport): code as EC2 names it."""

    def __init__(self, api: str, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{api}: {code}: {message}")
        self.api = api
        self.code = code
        self.message = message
        self.status = status

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLE_CODES

    @property
    def retryable(self) -> bool:
        """Throttling, server-side errors and transport failures are retried; client errors are not."""
        return self.throttled or self.status >= 500 or self.code in ("RequestTimeout", "ConnectionError")


@dataclass(frozen=True)
class Attachment:
    attachment_id: str
    instance_id: str
    device_index: int
    status: str = "attached"
    network_card_index: int = 0


@dataclass(frozen=True)
class NetworkInterface:
    eni_id: str
    mac: str
    subnet_id: str
    vpc_id: str
    availability_zone: str
    status: str  # available | in-use | attaching | detaching
    primary_ip: IPv4Address
    secondary_ips: tuple[IPv4Address, ...] = ()
    prefixes: tuple[IPv4Network, ...] = ()
    ipv6_addresses: tuple[IPv6Address, ...] = ()
    ipv6_prefixes: tuple[IPv6Network, ...] = ()  # /80 prefixes (the VPC CNI's IPv6 mode)
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    attachment: Attachment | None = None
    security_groups: tuple[str, ...] = ()
    interface_type: str = "interface"  # "trunk" or "branch" for security groups for pods


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    cidr: IPv4Network
    availability_zone: str
    vpc_id: str
    available_ips: int


@dataclass(frozen=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    max_enis: int  # all network cards
    ipv4_per_eni: int  # primary included
    hypervisor: str
    bare_metal: bool
    enis_per_card: tuple[int, ...] = ()


class Ec2Api(Protocol):
    async def describe_instance_type(self, instance_type: str) -> InstanceTypeInfo: ...

    async def describe_subnet(self, subnet_id: str) -> Subnet: ...

    async def describe_network_interfaces(
        self, *, eni_ids: Sequence[str] = (), filters: Mapping[str, Sequence[str]] | None = None
    ) -> list[NetworkInterface]: ...

    async def create_network_interface(
        self,
        *,
        subnet_id: str,
        description: str,
        security_groups: Sequence[str],
        tags: Mapping[str, str],
        secondary_ip_count: int = 0,
        prefix_count: int = 0,
    ) -> NetworkInterface: ...

    async def attach_network_interface(self, eni_id: str, instance_id: str, device_index: int) -> str:
        """Returns the attachment id."""
        ...

    async def set_delete_on_termination(self, eni_id: str, attachment_id: str) -> None: ...

    async def detach_network_interface(self, attachment_id: str, *, force: bool = False) -> None: ...

    async def delete_network_interface(self, eni_id: str) -> None: ...

    async def assign_private_ips(
        self, eni_id: str, *, count: int = 0, prefix_count: int = 0
    ) -> tuple[list[IPv4Address], list[IPv4Network]]:
        """Assign count secondary addresses or prefix_count /28 prefixes; returns what EC2 assigned."""
        ...

    async def unassign_private_ips(
        self, eni_id: str, *, addresses: Sequence[IPv4Address] = (), prefixes: Sequence[IPv4Network] = ()
    ) -> None: ...

    async def assign_ipv6(
        self, eni_id: str, *, count: int = 0, prefix_count: int = 0
    ) -> tuple[list[IPv6Address], list[IPv6Network]]:
        """AssignIpv6Addresses: count addresses or prefix_count /80 prefixes; returns what EC2 assigned."""
        ...

    async def unassign_ipv6(
        self, eni_id: str, *, addresses: Sequence[IPv6Address] = (), prefixes: Sequence[IPv6Network] = ()
    ) -> None: ...

    async def create_tags(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None: ...
