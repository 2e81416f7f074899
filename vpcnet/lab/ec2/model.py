"""The emulated EC2 objects. Plain data (addresses as strings) so the state is JSON as it is."""

from __future__ import annotations

from collections.abc import Callable
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
class SgRule:
    """One security-group rule as EC2 counts and lists it: one peer (a CIDR or a group) per rule."""

    id: str  # sgr-...
    egress: bool
    protocol: str  # "-1" (all), "tcp", "udp", "icmp", "icmpv6" or another protocol number as text
    from_port: int  # tcp/udp: first port; icmp: type; -1 where it does not apply
    to_port: int  # tcp/udp: last port; icmp: code; -1 where it does not apply
    cidr: str = ""  # exactly one of cidr and group_id is set
    group_id: str = ""
    description: str = ""

    def key(self) -> tuple[bool, str, int, int, str, str]:
        """What makes two rules the same rule (InvalidPermission.Duplicate / .NotFound)."""
        return (self.egress, self.protocol, self.from_port, self.to_port, self.cidr, self.group_id)


@dataclass
class SecurityGroup:
    id: str
    vpc_id: str
    name: str
    description: str
    seq: int
    tags: dict[str, str] = field(default_factory=dict)
    rules: list[SgRule] = field(default_factory=list)  # ingress and egress, in creation order


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
class TrunkAssociation:
    """A branch ENI's association with a trunk ENI (AssociateTrunkInterface), kept on the branch."""

    id: str  # trunk-assoc-...
    trunk_eni_id: str
    vlan_id: int  # 1..4094: the 802.1Q tag the branch's frames carry on the trunk's wire


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
    trunk_association: TrunkAssociation | None = None  # a branch ENI's trunk, while associated

    @property
    def status(self) -> str:
        in_use = self.attachment is not None or self.trunk_association is not None
        return "in-use" if in_use else "available"

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


def group_from_dict(raw: dict[str, Any]) -> SecurityGroup:
    data = dict(raw)
    rules = data.pop("rules", None)
    group = SecurityGroup(**data)
    if rules is None:
        # A state written before groups had rules: the rules EC2 gives a group when it creates it.
        group.rules = initial_rules(group, lambda n: f"sgr-{group.id[4:]}{n}")
    else:
        group.rules = [SgRule(**r) for r in rules]
    return group


def initial_rules(group: SecurityGroup, new_id: Callable[[int], str]) -> list[SgRule]:
    """EC2's rules of a new VPC group: all egress to 0.0.0.0/0; the default group also takes all traffic
    from its own members."""
    rules = [SgRule(id=new_id(0), egress=True, protocol="-1", from_port=-1, to_port=-1, cidr="0.0.0.0/0")]
    if group.name == "default":
        rules.insert(
            0, SgRule(id=new_id(1), egress=False, protocol="-1", from_port=-1, to_port=-1, group_id=group.id)
        )
    return rules


def eni_from_dict(raw: dict[str, Any]) -> Eni:
    data = dict(raw)
    att = data.pop("attachment", None)
    trunk = data.pop("trunk_association", None)
    eni = Eni(**data)
    eni.attachment = Attachment(**att) if att is not None else None
    eni.trunk_association = TrunkAssociation(**trunk) if trunk is not None else None
    return eni
