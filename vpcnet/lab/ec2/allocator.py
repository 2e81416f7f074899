"""Handing out addresses and /28 prefixes of one subnet within one action, with EC2's errors.

An allocator starts from what the subnet already uses; everything it hands out (explicit or chosen) is
marked used at once, so one action can never hand the same address out twice."""

from __future__ import annotations

from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError

from vpcnet.lab.ec2 import addressing
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value


class SubnetAllocator:
    def __init__(self, net: IPv4Network, used: set[int]) -> None:
        self.net = net
        self.used = set(used)
        self._reserved = addressing.reserved(net)

    def explicit_address(self, address: str) -> str:
        try:
            ip = IPv4Address(address)
        except (AddressValueError, ValueError) as e:
            raise invalid_value(f"invalid value {address!r} for an IPv4 address: {e}") from e
        net = self.net
        if ip not in net:
            raise invalid_value(f"Address {address} does not fall within the subnet's address range {net}")
        if int(ip) in self._reserved:
            raise invalid_value(
                f"Address {address} is reserved in subnet {net} (the first four and the last)"
            )
        if int(ip) in self.used:
            raise Ec2Error("InvalidIPAddress.InUse", f"Address {address} is in use in subnet {net}")
        self.used.add(int(ip))
        return str(ip)

    def addresses(self, count: int) -> list[str]:
        """`count` free addresses, lowest first."""
        if count < 0:
            raise invalid_value(f"the address count {count} must not be negative")
        taken: list[int] = []
        for addr in addressing.free_addresses(self.net, self.used):
            if len(taken) == count:
                break
            taken.append(addr)
        if len(taken) < count:
            raise Ec2Error(
                "InsufficientFreeAddressesInSubnet",
                f"The specified subnet {self.net} does not have enough free addresses "
                "to satisfy the request.",
            )
        self.used.update(taken)
        return [str(IPv4Address(a)) for a in taken]

    def explicit_prefix(self, prefix: str) -> str:
        try:
            block = IPv4Network(prefix, strict=True)
        except (AddressValueError, NetmaskValueError, ValueError) as e:
            raise invalid_value(f"Prefix {prefix!r} is not a valid aligned IPv4 CIDR block: {e}") from e
        net = self.net
        if block.prefixlen != addressing.PREFIX_LEN:
            raise invalid_value(f"Prefix {prefix} must be a /{addressing.PREFIX_LEN}")
        if not block.subnet_of(net):
            raise invalid_value(f"Prefix {prefix} does not fall within the subnet's address range {net}")
        members = set(addressing.prefix_members(block))
        if members & self._reserved:
            raise invalid_value(f"Prefix {prefix} includes addresses reserved in subnet {net}")
        if members & self.used:
            raise Ec2Error(
                "InvalidIPAddress.InUse", f"Prefix {prefix} overlaps addresses in use in subnet {net}"
            )
        self.used.update(members)
        return str(block)

    def prefixes(self, count: int) -> list[str]:
        """`count` free /28 blocks, lowest first."""
        if count < 0:
            raise invalid_value(f"the prefix count {count} must not be negative")
        taken: list[IPv4Network] = []
        for block in addressing.free_prefixes(self.net, self.used):
            if len(taken) == count:
                break
            taken.append(block)
            self.used.update(addressing.prefix_members(block))
        if len(taken) < count:
            raise Ec2Error(
                "InsufficientCidrBlocks",
                f"The specified subnet {self.net} does not have enough free cidr blocks "
                "to satisfy the request.",
            )
        return [str(b) for b in taken]
