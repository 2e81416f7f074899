"""IPv6 address arithmetic of a subnet's /64 and handing out within one action, with EC2's errors.

A /64 holds 2^64 addresses and a /80 prefix 2^48, so nothing here enumerates a prefix: what a subnet uses
is a set of single addresses plus a list of /80 blocks, and the searches walk candidates in order, skipping
what is taken. EC2 keeps the first four and the last address of an IPv6 subnet as it does for IPv4 (the
router answers at base + 1). EC2 picks IPv6 addresses at random; the lab hands out the lowest free address
and the lowest free /80 instead, so runs are reproducible (clients must not depend on either)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv6Address, IPv6Network, NetmaskValueError

from vpcnet.lab.ec2.errors import Ec2Error, invalid_value

SUBNET_PREFIX_LEN = 64  # EC2's IPv6 subnets are always /64
VPC_PREFIX_LEN = 56  # an Amazon-provided VPC block
PREFIX_LEN = 80  # prefix delegation hands out /80s
PREFIX_BITS = 128 - PREFIX_LEN
RESERVED_LOW = 4  # the first four addresses (network, router, DNS, future use); and the last one


def parse_network(text: str, prefix_len: int, what: str) -> IPv6Network:
    """An aligned IPv6 block of exactly `prefix_len`, or InvalidParameterValue naming `what`."""
    try:
        net = IPv6Network(text, strict=True)
    except (AddressValueError, NetmaskValueError, ValueError) as e:
        raise invalid_value(f"{what} {text!r} is not a valid aligned IPv6 CIDR block: {e}") from e
    if net.prefixlen != prefix_len:
        raise invalid_value(f"{what} {text} must be a /{prefix_len}")
    return net


def reserved(net: IPv6Network) -> set[int]:
    base = int(net.network_address)
    return {*(base + i for i in range(RESERVED_LOW)), int(net.broadcast_address)}


@dataclass
class Used6:
    """What a subnet's ENIs hold: single addresses (ints) and /80 blocks."""

    addresses: set[int] = field(default_factory=set)
    prefixes: list[IPv6Network] = field(default_factory=list)

    @classmethod
    def of(cls, addresses: Iterable[str], prefixes: Iterable[str]) -> Used6:
        return cls({int(IPv6Address(a)) for a in addresses}, [IPv6Network(p) for p in prefixes])

    def holds(self, addr: int) -> bool:
        return addr in self.addresses or any(
            int(p.network_address) <= addr <= int(p.broadcast_address) for p in self.prefixes
        )

    def overlaps(self, block: IPv6Network) -> bool:
        lo, hi = int(block.network_address), int(block.broadcast_address)
        return any(lo <= a <= hi for a in self.addresses) or any(block.overlaps(p) for p in self.prefixes)


def free_addresses(net: IPv6Network, used: Used6) -> Iterator[int]:
    """Free addresses of the subnet, lowest first (never a reserved one, never inside a used prefix)."""
    taken = used.addresses | reserved(net)
    addr, last = int(net.network_address), int(net.broadcast_address)
    while addr <= last:
        block = next(
            (p for p in used.prefixes if int(p.network_address) <= addr <= int(p.broadcast_address)), None
        )
        if block is not None:
            addr = int(block.broadcast_address) + 1
            continue
        if addr not in taken:
            yield addr
        addr += 1


def free_prefixes(net: IPv6Network, used: Used6) -> Iterator[IPv6Network]:
    """Free /80 blocks of the subnet, lowest first: no used or reserved address inside, no overlap."""
    res = Used6(used.addresses | reserved(net), used.prefixes)
    base = int(net.network_address)
    for index in range(1 << (PREFIX_LEN - net.prefixlen)):
        block = IPv6Network((base + (index << PREFIX_BITS), PREFIX_LEN))
        if not res.overlaps(block):
            yield block


class Subnet6Allocator:
    """Hands out addresses and /80s of one subnet's /64 within one action (each is used at once)."""

    def __init__(self, net: IPv6Network, used: Used6) -> None:
        self.net = net
        self.used = Used6(set(used.addresses), list(used.prefixes))
        self._reserved = reserved(net)

    def explicit_address(self, address: str) -> str:
        try:
            ip = IPv6Address(address)
        except (AddressValueError, ValueError) as e:
            raise invalid_value(f"invalid value {address!r} for an IPv6 address: {e}") from e
        if ip not in self.net:
            raise invalid_value(
                f"Address {address} does not fall within the subnet's IPv6 address range {self.net}"
            )
        if int(ip) in self._reserved:
            raise invalid_value(
                f"Address {address} is reserved in subnet {self.net} (the first four and the last)"
            )
        if self.used.holds(int(ip)):
            raise Ec2Error("InvalidIPAddress.InUse", f"Address {ip} is in use in subnet {self.net}")
        self.used.addresses.add(int(ip))
        return str(ip)

    def addresses(self, count: int) -> list[str]:
        taken: list[int] = []
        for addr in free_addresses(self.net, self.used):
            if len(taken) == count:
                break
            taken.append(addr)
        if len(taken) < count:
            raise Ec2Error(
                "InsufficientFreeAddressesInSubnet",
                f"The specified subnet {self.net} does not have enough free IPv6 addresses.",
            )
        self.used.addresses.update(taken)
        return [str(IPv6Address(a)) for a in taken]

    def explicit_prefix(self, prefix: str) -> str:
        block = parse_network(prefix, PREFIX_LEN, "Prefix")
        if not block.subnet_of(self.net):
            raise invalid_value(f"Prefix {prefix} does not fall within the subnet's IPv6 range {self.net}")
        lo, hi = int(block.network_address), int(block.broadcast_address)
        if any(lo <= r <= hi for r in self._reserved):
            raise invalid_value(f"Prefix {prefix} includes addresses reserved in subnet {self.net}")
        if self.used.overlaps(block):
            raise Ec2Error(
                "InvalidIPAddress.InUse", f"Prefix {block} overlaps addresses in use in {self.net}"
            )
        self.used.prefixes.append(block)
        return str(block)

    def prefixes(self, count: int) -> list[str]:
        taken: list[IPv6Network] = []
        for block in free_prefixes(self.net, self.used):
            if len(taken) == count:
                break
            taken.append(block)
        if len(taken) < count:
            raise Ec2Error(
                "InsufficientCidrBlocks",
                f"The specified subnet {self.net} does not have enough free cidr blocks "
                "to satisfy the request.",
            )
        self.used.prefixes.extend(taken)
        return [str(b) for b in taken]
