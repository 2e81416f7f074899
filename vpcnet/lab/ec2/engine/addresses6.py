"""IPv6 addresses and /80 prefixes of ENIs: what a subnet's /64 uses, the per-ENI IPv6 limit (each address
and each /80 is one slot, counted apart from IPv4, from the instance type's Ipv6AddressesPerInterface),
prefixes only on Nitro types, the address a launch gives the primary ENI, and Assign/UnassignIpv6Addresses.

The arithmetic (reserved addresses, free addresses and /80s without enumerating them) and handing out within
one action are `vpcnet.lab.ec2.addressing6`."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from ipaddress import AddressValueError, IPv6Address, IPv6Network

from vpcnet.ipam.limits import all_instance_types, instance_limits
from vpcnet.lab.ec2.addressing6 import PREFIX_LEN, Subnet6Allocator, Used6, parse_network
from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.model import Eni, Subnet


@cache
def max_ipv6_unattached() -> int:
    """An unattached ENI may hold as many IPv6 slots as the largest instance type allows (as for IPv4)."""
    return max(instance_limits(t).ipv6_per_eni for t in all_instance_types())


class Ipv6Assignment:
    def __init__(self, store: Store) -> None:
        self._store = store

    def used_in_subnet(self, subnet_id: str) -> Used6:
        addresses: list[str] = []
        prefixes: list[str] = []
        for eni in self._store.tables.enis.values():
            if eni.subnet_id == subnet_id:
                addresses.extend(eni.ipv6_addresses)
                prefixes.extend(eni.ipv6_prefixes)
        return Used6.of(addresses, prefixes)

    def allocator(self, subnet: Subnet) -> Subnet6Allocator:
        if not subnet.ipv6_cidr:
            raise invalid_value(
                f"Subnet {subnet.id} has no IPv6 CIDR block: IPv6 addresses cannot be assigned"
            )
        return Subnet6Allocator(IPv6Network(subnet.ipv6_cidr), self.used_in_subnet(subnet.id))

    def _limit(self, eni: Eni) -> tuple[int, str]:
        if eni.attachment is None:
            return max_ipv6_unattached(), "an unattached network interface"
        itype = self._store.tables.instances[eni.attachment.instance_id].instance_type
        return instance_limits(itype).ipv6_per_eni, f"instance type {itype}"

    def check_slots(self, eni: Eni, extra: int) -> None:
        """`eni` may hold `extra` more IPv6 slots (also checked at attach: a full ENI may not move to a
        smaller type)."""
        if eni.ipv6_slots + extra == 0:
            return
        limit, what = self._limit(eni)
        if limit == 0:
            raise invalid_value(f"IPv6 is not supported by {what} ({eni.id})")
        if eni.ipv6_slots + extra > limit:
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of IPv6 addresses will exceed limit: {eni.id} would hold {eni.ipv6_slots + extra} "
                f"IPv6 addresses and prefixes, {what} allows {limit} per interface.",
            )

    def _check_prefix_support(self, eni: Eni) -> None:
        if eni.attachment is None:
            return
        itype = self._store.tables.instances[eni.attachment.instance_id].instance_type
        if not instance_limits(itype).is_nitro:
            raise invalid_value(
                f"Prefix delegation is not supported for instance type {itype} (only Nitro-based types)"
            )

    def give_launch_address(self, eni: Eni, subnet: Subnet, instance_type: str) -> None:
        """A launch in a subnet with an IPv6 block gives the primary ENI one address (the subnet's
        AssignIpv6AddressOnCreation, which EKS IPv6 node groups need); caller holds a mutation."""
        if not subnet.ipv6_cidr:
            return
        if instance_limits(instance_type).ipv6_per_eni < 1:
            raise invalid_value(
                f"IPv6 is not supported by instance type {instance_type}; subnet {subnet.id} assigns "
                "an IPv6 address on launch"
            )
        eni.ipv6_addresses.extend(self.allocator(subnet).addresses(1))

    def assign(
        self,
        eni_id: str,
        *,
        address_count: int = 0,
        addresses: Sequence[str] = (),
        prefix_count: int = 0,
        prefixes: Sequence[str] = (),
    ) -> tuple[list[str], list[str]]:
        """AssignIpv6Addresses; returns only what was added: (addresses, prefixes)."""
        given = [bool(address_count), bool(addresses), bool(prefix_count), bool(prefixes)]
        if sum(given) == 0:
            raise Ec2Error(
                "MissingParameter", "Specify Ipv6AddressCount, Ipv6Addresses, Ipv6PrefixCount or Ipv6Prefixes"
            )
        if sum(given) > 1:
            raise Ec2Error(
                "InvalidParameterCombination",
                "Only one of Ipv6AddressCount, Ipv6Addresses, Ipv6PrefixCount, Ipv6Prefixes may be given",
            )
        if address_count < 0 or prefix_count < 0:
            raise invalid_value("counts must not be negative")
        t = self._store.tables
        with self._store.mutation():
            eni = t.eni(eni_id)
            subnet = t.subnets[eni.subnet_id]
            alloc = self.allocator(subnet)
            if prefix_count or prefixes:
                self._check_prefix_support(eni)
            self.check_slots(eni, address_count + len(addresses) + prefix_count + len(prefixes))
            new_addresses = [alloc.explicit_address(a) for a in addresses] + alloc.addresses(address_count)
            new_prefixes = [alloc.explicit_prefix(p) for p in prefixes] + alloc.prefixes(prefix_count)
            eni.ipv6_addresses.extend(new_addresses)
            eni.ipv6_prefixes.extend(new_prefixes)
            self._store.hook("eni_changed", eni)
            return new_addresses, new_prefixes

    def unassign(
        self, eni_id: str, *, addresses: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> tuple[list[str], list[str]]:
        """UnassignIpv6Addresses; returns what was removed (in EC2's normalized spelling)."""
        if not addresses and not prefixes:
            raise Ec2Error("MissingParameter", "Specify Ipv6Addresses or Ipv6Prefixes")
        norm_addresses: list[str] = []
        for a in addresses:
            try:
                norm_addresses.append(str(IPv6Address(a)))
            except (AddressValueError, ValueError) as e:
                raise invalid_value(f"invalid value {a!r} for an IPv6 address: {e}") from e
        norm_prefixes = [str(parse_network(p, PREFIX_LEN, "Prefix")) for p in prefixes]
        with self._store.mutation():
            eni = self._store.tables.eni(eni_id)
            missing = [a for a in norm_addresses if a not in eni.ipv6_addresses]
            missing += [p for p in norm_prefixes if p not in eni.ipv6_prefixes]
            if missing:
                raise invalid_value(
                    f"Some of the specified IPv6 addresses or prefixes are not assigned to interface "
                    f"{eni_id}: {', '.join(missing)}"
                )
            eni.ipv6_addresses = [a for a in eni.ipv6_addresses if a not in set(norm_addresses)]
            eni.ipv6_prefixes = [p for p in eni.ipv6_prefixes if p not in set(norm_prefixes)]
            self._store.hook("eni_changed", eni)
            return norm_addresses, norm_prefixes
