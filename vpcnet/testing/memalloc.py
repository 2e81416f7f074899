"""A fixed-pool Allocator held in memory (test and benchmark support): for the CNI's own tests and its
latency benchmark, where the address manager is not what is measured. Addresses are given lowest first and
keyed like the VPC CNI's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from vpcnet.ipam.types import MAIN_ROUTE_TABLE, AddressExhausted, Assignment, IpamKey, PodAddress


@dataclass(frozen=True)
class PoolSlice:
    """Addresses of one ENI: device 0 routes by table main, device d by table d + 1."""

    subnet: IPv4Network | IPv6Network
    addresses: tuple[IPv4Address | IPv6Address, ...]
    device_number: int = 0
    eni_id: str = "eni-0"

    @property
    def route_table(self) -> int:
        return MAIN_ROUTE_TABLE if self.device_number == 0 else self.device_number + 1


@dataclass
class MemoryAllocator:
    slices: list[PoolSlice]
    is_ready: bool = True
    assigned: dict[IpamKey, Assignment] = field(default_factory=dict)

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[str, int, int]]) -> MemoryAllocator:
        """ranges: (cidr, how many addresses from its .10 (or ::a), device number); IPv4 or IPv6."""
        slices = []
        for cidr, count, device in ranges:
            net = ip_network(cidr)
            first = net.network_address + 10
            slices.append(PoolSlice(net, tuple(first + i for i in range(count)), device, f"eni-{device}"))
        return cls(slices)

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        have = self.assigned.get(key)
        if have is not None:
            return have
        used = {a.address for a in self.assigned.values()}
        for s in self.slices:
            for address in s.addresses:
                if address not in used:
                    a = Assignment(
                        address=address,
                        device_number=s.device_number,
                        route_table=s.route_table,
                        eni_id=s.eni_id,
                        subnet=s.subnet,
                        pod_namespace=pod_namespace,
                        pod_name=pod_name,
                    )
                    self.assigned[key] = a
                    return a
        raise AddressExhausted(f"all {sum(len(s.addresses) for s in self.slices)} addresses are assigned")

    async def release(self, key: IpamKey) -> Assignment | None:
        return self.assigned.pop(key, None)

    async def lookup(self, key: IpamKey) -> Assignment | None:
        return self.assigned.get(key)

    async def holds(self, address: PodAddress) -> bool:
        return any(a.address == address for a in self.assigned.values())

    def ready(self) -> bool:
        return self.is_ready
