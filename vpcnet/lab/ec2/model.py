"""The emulated EC2 objects. Plain data (addresses as strings) so the state is JSON as it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Vpc:
    id: str
    cidr: str
    seq: int  # creation order: stable listing order and pagination
    tags: dict[str, str] = field(default_factory=dict)
    ipv6_cidr: str = ""  # the Amazon-provided /56, if one is associated


@dataclass
class Subnet:
    id: str
    vpc_id: str
    cidr: str
    az: str
    seq: int
    tags: dict[str, str] = field(default_factory=dict)
    ipv6_cidr: str = ""  # a /64 of the VPC's /56; its ENIs get one IPv6 address at launch when set


@dataclass
class SecurityGroup:
    id: str
    vpc_id: str
    name: str
    description: str
    seq: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Attachment:
    id: str  # eni-attach-...
    instance_id: str
    device_index: int
    network_card_index: int
    delete_on_termination: bool
    attach_time: str
    status: str = "attached"


@dataclass
class Eni:
    id: str
    subnet_id: str
    vpc_id: str
    az: str
    mac: str
    description: str
    primary_ip: str
    seq: int
    secondary_ips: list[str] = field(default_factory=list)  # in assignment order
    prefixes: list[str] = field(default_factory=list)  # "10.0.1.16/28", in assignment order
    security_group_ids: list[str] = field(default_factory=list)
    source_dest_check: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    attachment: Attachment | None = None
    interface_type: str = "interface"
    ipv6_addresses: list[str] = field(default_factory=list)  # in assignment order
    ipv6_prefixes: list[str] = field(default_factory=list)  # /80 blocks, in assignment order

    @property
    def status(self) -> str:
        return "in-use" if self.attachment is not None else "available"

    @property
    def private_ips(self) -> list[str]:
        """Primary first, then the secondary addresses."""
        return [self.primary_ip, *self.secondary_ips]

    @property
    def ipv6_slots(self) -> int:
        """What counts against the per-ENI IPv6 limit (apart from IPv4): each address and each /80 prefix."""
        return len(self.ipv6_addresses) + len(self.ipv6_prefixes)

    @property
    def address_slots(self) -> int:
        """What counts against the per-ENI IPv4 limit: each address, and each /28 prefix as one."""
        return 1 + len(self.secondary_ips) + len(self.prefixes)


@dataclass
class Instance:
    id: str
    instance_type: str
    subnet_id: str
    vpc_id: str
    az: str
    launch_time: str
    seq: int
    state: str = "running"  # running | terminated
    tags: dict[str, str] = field(default_factory=dict)
    primary_eni_id: str = ""
    image_id: str = "ami-0vpcnetlab0000000"


def timestamp() -> str:
    """Now, as EC2 writes launch and attach times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def to_dict(obj: Vpc | Subnet | SecurityGroup | Eni | Instance) -> dict[str, Any]:
    return asdict(obj)


def eni_from_dict(raw: dict[str, Any]) -> Eni:
    data = dict(raw)
    att = data.pop("attachment", None)
    eni = Eni(**data)
    eni.attachment = Attachment(**att) if att is not None else None
    return eni
