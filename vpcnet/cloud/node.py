"""What the agent knows about the instance it runs on (read from IMDS at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network


@dataclass(frozen=True)
class NodeInfo:
    instance_id: str
    instance_type: str
    availability_zone: str
    region: str
    primary_eni_id: str
    primary_mac: str
    primary_ip: IPv4Address
    subnet_id: str
    subnet_cidr: IPv4Network
    vpc_id: str
    vpc_cidrs: tuple[IPv4Network, ...]
    security_groups: tuple[str, ...]
    # The primary ENI's first IPv6 address and its subnet's /64 (a dual-stack subnet); None in IPv4 only.
    primary_ip6: IPv6Address | None = None
    subnet6_cidr: IPv6Network | None = None
