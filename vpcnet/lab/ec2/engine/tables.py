"""The records of the emulated EC2 state of one account in one region, and lookups over them.

Plain mutable tables: the parts of the engine change them inside a `Store.mutation()`, readers hold the
store's lock. Lookups return the stored object itself (callers that hand it out copy it)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import TypeVar

from vpcnet.lab.ec2.errors import not_found
from vpcnet.lab.ec2.model import Attachment, Eni, Instance, SecurityGroup, Subnet, Vpc

T = TypeVar("T")


class Tables:
    def __init__(self, region: str, account: str) -> None:
        self.region = region
        self.account = account
        self.seq = 0  # the last sequence number handed out: creation order, IDs and MACs
        self.vpcs: dict[str, Vpc] = {}
        self.subnets: dict[str, Subnet] = {}
        self.groups: dict[str, SecurityGroup] = {}
        self.instances: dict[str, Instance] = {}
        self.enis: dict[str, Eni] = {}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def vpc(self, vpc_id: str) -> Vpc:
        return _lookup(self.vpcs, "vpc", vpc_id)

    def subnet(self, subnet_id: str) -> Subnet:
        return _lookup(self.subnets, "subnet", subnet_id)

    def group(self, group_id: str) -> SecurityGroup:
        return _lookup(self.groups, "sg", group_id)

    def instance(self, instance_id: str) -> Instance:
        return _lookup(self.instances, "instance", instance_id)

    def eni(self, eni_id: str) -> Eni:
        return _lookup(self.enis, "eni", eni_id)

    def attached_to(self, instance_id: str) -> list[Eni]:
        return [e for e in self.enis.values() if e.attachment and e.attachment.instance_id == instance_id]

    def eni_by_attachment(self, attachment_id: str) -> Eni:
        for eni in self.enis.values():
            if eni.attachment is not None and eni.attachment.id == attachment_id:
                return eni
        raise not_found("attachment", attachment_id)

    def instance_by_address(self, address: str) -> Instance | None:
        """The running instance one of whose ENIs holds `address` (as an address or inside a prefix)."""
        try:
            ip = ip_address(address)
        except ValueError:
            return None
        for eni in self.enis.values():
            if eni.attachment is None:
                continue
            inst = self.instances.get(eni.attachment.instance_id)
            if inst is None or inst.state != "running":
                continue
            if ip.version == 4:
                held = str(ip) in eni.private_ips or any(ip in ip_network(p) for p in eni.prefixes)
            else:
                held = str(ip) in eni.ipv6_addresses or any(ip in ip_network(p) for p in eni.ipv6_prefixes)
            if held:
                return inst
        return None


def attachment_of(eni: Eni) -> Attachment:
    """The attachment of an ENI known to be attached."""
    assert eni.attachment is not None
    return eni.attachment


def _lookup(table: dict[str, T], kind: str, key: str) -> T:
    """One object by id, or EC2's NotFound error for its kind."""
    found = table.get(key)
    if found is None:
        raise not_found(kind, key)
    return found
