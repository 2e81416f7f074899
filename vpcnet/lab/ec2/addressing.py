"""Address arithmetic of a subnet: reserved addresses, free addresses, free /28 blocks. Pure functions over
integers (addresses as ints) so that the state can ask them under its lock cheaply."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network

PREFIX_LEN = 28
PREFIX_SIZE = 1 << (32 - PREFIX_LEN)


def reserved(net: IPv4Network) -> set[int]:
    """EC2 keeps 5 addresses of every subnet: network, +1 (router), +2 (DNS), +3 (future use), broadcast."""
    base = int(net.network_address)
    return {base, base + 1, base + 2, base + 3, int(net.broadcast_address)}


def usable_count(net: IPv4Network) -> int:
    return net.num_addresses - 5


def prefix_members(prefix: IPv4Network) -> range:
    base = int(prefix.network_address)
    return range(base, base + prefix.num_addresses)


def used_addresses(addresses: Iterable[str], prefixes: Iterable[str]) -> set[int]:
    used = {int(IPv4Address(a)) for a in addresses}
    for p in prefixes:
        used.update(prefix_members(IPv4Network(p)))
    return used


def free_addresses(net: IPv4Network, used: set[int]) -> Iterator[int]:
    """Free addresses of the subnet, lowest first (never a reserved one)."""
    taken = used | reserved(net)
    for addr in range(int(net.network_address), int(net.broadcast_address) + 1):
        if addr not in taken:
            yield addr


def free_prefixes(net: IPv4Network, used: set[int]) -> Iterator[IPv4Network]:
    """Free /28 blocks of the subnet, lowest first: aligned, no address of them used or reserved."""
    if net.prefixlen > PREFIX_LEN:
        return
    taken = used | reserved(net)
    for block in net.subnets(new_prefix=PREFIX_LEN):
        if not any(a in taken for a in prefix_members(block)):
            yield block
