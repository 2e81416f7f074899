"""IPv4 address assignment of ENIs: what a subnet uses, the per-ENI limit (each address and each /28 prefix
is one slot), prefix delegation only on Nitro types, and Assign/UnassignPrivateIpAddresses.

The subnet arithmetic (reserved addresses, free addresses and blocks) is `vpcnet.lab.ec2.addressing`; handing
out within one action is `vpcnet.lab.ec2.allocator.SubnetAllocator`. IPv6 (AssignIpv6Addresses, /80
prefixes) belongs in a sibling part, `addresses6`, with the same shape."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from ipaddress import AddressValueError, IPv4Network, NetmaskValueError

from vpcnet.ipam.limits import all_instance_types, instance_limits
from vpcnet.lab.ec2 import addressing
from vpcnet.lab.ec2.allocator import SubnetAllocator
from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.model import Eni, Subnet


@cache
def max_slots_unattached() -> int:
    """An ENI that is not attached may hold as many addresses as the largest instance type allows; the
    instance type's own limit is checked when it is attached."""
    return max(instance_limits(t).ipv4_per_eni for t in all_instance_types())


class AddressAssignment:
    def __init__(self, store: Store) -> None:
        self._store = store

    def used_in_subnet(self, subnet_id: str) -> set[int]:
        addresses: list[str] = []
        prefixes: list[str] = []
        for eni in self._store.tables.enis.values():
            if eni.subnet_id == subnet_id:
                addresses.extend(eni.private_ips)
                prefixes.extend(eni.prefixes)
        return addressing.used_addresses(addresses, prefixes)

    def allocator(self, subnet: Subnet) -> SubnetAllocator:
        """Hands out the subnet's free addresses and blocks for one action (caller holds a mutation)."""
        return SubnetAllocator(IPv4Network(subnet.cidr), self.used_in_subnet(subnet.id))

    def available_ip_count(self, subnet_id: str) -> int:
        with self._store.lock:
            subnet = self._store.tables.subnet(subnet_id)
            return addressing.usable_count(IPv4Network(subnet.cidr)) - len(self.used_in_subnet(subnet_id))

    def check_request_size(self, slots: int) -> None:
        """A new ENI may not ask for more slots than any instance type allows."""
        if slots > max_slots_unattached():
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of private addresses will exceed limit: {slots} requested, at most "
                f"{max_slots_unattached()} per network interface",
            )

    def _slot_limit(self, eni: Eni) -> tuple[int, str]:
        if eni.attachment is None:
            return max_slots_unattached(), "an unattached network interface"
        itype = self._store.tables.instances[eni.attachment.instance_id].instance_type
        return instance_limits(itype).ipv4_per_eni, f"instance type {itype}"

    def check_slots(self, eni: Eni, extra: int) -> None:
        """`eni` may take `extra` more slots under the limit of its instance type (or any, unattached)."""
        limit, what = self._slot_limit(eni)
        if eni.address_slots + extra > limit:
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of private addresses will exceed limit: {eni.id} would hold "
                f"{eni.address_slots + extra} addresses and prefixes, {what} allows {limit} per interface.",
            )

    def check_prefix_support(self, eni: Eni) -> None:
        if eni.attachment is None:
            return
        itype = self._store.tables.instances[eni.attachment.instance_id].instance_type
        if not instance_limits(itype).is_nitro:
            raise invalid_value(
                f"Prefix delegation is not supported for instance type {itype} (only Nitro-based types)"
            )

    def assign(
        self,
        eni_id: str,
        *,
        secondary_count: int = 0,
        addresses: Sequence[str] = (),
        prefix_count: int = 0,
        prefixes: Sequence[str] = (),
        allow_reassignment: bool = False,
    ) -> tuple[list[str], list[str]]:
        """AssignPrivateIpAddresses; returns only what was added: (addresses, prefixes)."""
        given = [bool(secondary_count), bool(addresses), bool(prefix_count), bool(prefixes)]
        if sum(given) == 0:
            raise Ec2Error(
                "MissingParameter",
                "Specify SecondaryPrivateIpAddressCount, PrivateIpAddress, Ipv4PrefixCount or Ipv4Prefix",
            )
        if sum(given) > 1:
            raise Ec2Error(
                "InvalidParameterCombination",
                "Only one of SecondaryPrivateIpAddressCount, PrivateIpAddress, Ipv4PrefixCount, Ipv4Prefix "
                "may be given",
            )
        if secondary_count < 0 or prefix_count < 0:
            raise invalid_value("counts must not be negative")
        t = self._store.tables
        with self._store.mutation():
            eni = t.eni(eni_id)
            subnet = t.subnets[eni.subnet_id]
            if prefix_count or prefixes:
                self.check_prefix_support(eni)
            self.check_slots(eni, secondary_count + len(addresses) + prefix_count + len(prefixes))
            changed_others: list[Eni] = []
            if allow_reassignment and addresses:
                changed_others = self._take_back(eni, addresses)
            alloc = self.allocator(subnet)
            new_addresses = [alloc.explicit_address(a) for a in addresses] + alloc.addresses(secondary_count)
            new_prefixes = [alloc.explicit_prefix(p) for p in prefixes] + alloc.prefixes(prefix_count)
            eni.secondary_ips.extend(new_addresses)
            eni.prefixes.extend(new_prefixes)
            for other in changed_others:
                self._store.hook("eni_changed", other)
            self._store.hook("eni_changed", eni)
            return new_addresses, new_prefixes

    def _take_back(self, eni: Eni, addresses: Sequence[str]) -> list[Eni]:
        """AllowReassignment: move secondary addresses held by other ENIs of the subnet to `eni`."""
        changed: list[Eni] = []
        for other in self._store.tables.enis.values():
            if other.id == eni.id or other.subnet_id != eni.subnet_id:
                continue
            moved = [a for a in addresses if a in other.secondary_ips]
            if moved:
                other.secondary_ips = [a for a in other.secondary_ips if a not in moved]
                changed.append(other)
        return changed

    def unassign(self, eni_id: str, *, addresses: Sequence[str] = (), prefixes: Sequence[str] = ()) -> None:
        """UnassignPrivateIpAddresses: secondary addresses and prefixes (never the primary address)."""
        if not addresses and not prefixes:
            raise Ec2Error("MissingParameter", "Specify PrivateIpAddress or Ipv4Prefix")
        with self._store.mutation():
            eni = self._store.tables.eni(eni_id)
            for a in addresses:
                if a == eni.primary_ip:
                    raise invalid_value(f"The primary address {a} of {eni_id} cannot be unassigned")
            missing = [a for a in addresses if a not in eni.secondary_ips]
            if missing:
                raise invalid_value(
                    f"Some of the specified addresses are not assigned to interface {eni_id}: "
                    f"{', '.join(missing)}"
                )
            normalized = []
            for p in prefixes:
                try:
                    normalized.append(str(IPv4Network(p, strict=True)))
                except (AddressValueError, NetmaskValueError, ValueError) as e:
                    raise invalid_value(f"Prefix {p!r} is not a valid IPv4 CIDR block: {e}") from e
            missing = [p for p in normalized if p not in eni.prefixes]
            if missing:
                raise invalid_value(
                    f"Some of the specified prefixes are not assigned to interface {eni_id}: "
                    f"{', '.join(missing)}"
                )
            eni.secondary_ips = [a for a in eni.secondary_ips if a not in set(addresses)]
            eni.prefixes = [p for p in eni.prefixes if p not in set(normalized)]
            self._store.hook("eni_changed", eni)
