"""The whole emulated EC2 state and every rule EC2 enforces on it, behind one object.

`Cloud` is thread-safe (one re-entrant lock), persists itself atomically to a JSON file after every change and
reloads it on start, and tells the fabric about ENI changes through `FabricHooks` before an action returns.
Every mutating method either succeeds completely or changes nothing (bad input, a broken rule, a failing
hook or a failing write all roll back) and raises `Ec2Error` with EC2's code.

`Cloud` is the facade: it wires the engine's parts (`vpcnet.lab.ec2.engine`, one concern each) and hands out
copies, so no caller holds a live record. A new area (IPv6 addresses, security-group rules, trunk ENIs) is a
part in the engine with its methods exposed here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vpcnet.lab.ec2.engine.addresses import AddressAssignment
from vpcnet.lab.ec2.engine.addresses6 import Ipv6Assignment
from vpcnet.lab.ec2.engine.enis import EniLifecycle
from vpcnet.lab.ec2.engine.security_groups import SecurityGroups
from vpcnet.lab.ec2.engine.store import Store, dump
from vpcnet.lab.ec2.engine.tables import Tables, attachment_of
from vpcnet.lab.ec2.engine.tagging import Tagging
from vpcnet.lab.ec2.engine.topology import Topology
from vpcnet.lab.ec2.engine.trunking import Trunking
from vpcnet.lab.ec2.hooks import FabricHooks
from vpcnet.lab.ec2.model import Eni, Instance, SecurityGroup, SgRule, Subnet, Vpc

DEFAULT_REGION = "us-west-2"
DEFAULT_ACCOUNT = "123456789012"


class Cloud:
    """The emulated EC2 state of one account in one region."""

    def __init__(
        self,
        state_file: Path | str | None = None,
        hooks: FabricHooks | None = None,
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._tables = Tables(region, account)
        self._store = Store(self._tables, Path(state_file) if state_file is not None else None, hooks)
        self._lock = self._store.lock
        self._tagging = Tagging(self._store)
        self._groups = SecurityGroups(self._store)
        self._addresses = AddressAssignment(self._store)
        self._enis = EniLifecycle(self._store, self._addresses, self._groups)
        self._addresses6 = Ipv6Assignment(self._store)
        self._topology = Topology(self._store, self._groups, self._enis, self._addresses6)
        self._trunking = Trunking(self._store)

    @property
    def region(self) -> str:
        return self._tables.region

    @property
    def account(self) -> str:
        return self._tables.account

    @property
    def hooks(self) -> FabricHooks:
        return self._store.hooks

    @hooks.setter
    def hooks(self, hooks: FabricHooks) -> None:
        """Set after loading, once the fabric exists (the lab daemon loads the state, then hooks in)."""
        self._store.hooks = hooks

    # ---------------------------------------------------------------- lookups (copies)

    def vpc(self, vpc_id: str) -> Vpc:
        with self._lock:
            return copy.deepcopy(self._tables.vpc(vpc_id))

    def subnet(self, subnet_id: str) -> Subnet:
        with self._lock:
            return copy.deepcopy(self._tables.subnet(subnet_id))

    def instance(self, instance_id: str) -> Instance:
        with self._lock:
            return copy.deepcopy(self._tables.instance(instance_id))

    def eni(self, eni_id: str) -> Eni:
        with self._lock:
            return copy.deepcopy(self._tables.eni(eni_id))

    def security_group(self, group_id: str) -> SecurityGroup:
        with self._lock:
            return copy.deepcopy(self._tables.group(group_id))

    def vpcs(self) -> list[Vpc]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._tables.vpcs.values())), key=lambda v: v.seq)

    def subnets(self) -> list[Subnet]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._tables.subnets.values())), key=lambda s: s.seq)

    def security_groups(self) -> list[SecurityGroup]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._tables.groups.values())), key=lambda g: g.seq)

    def instances(self) -> list[Instance]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._tables.instances.values())), key=lambda i: i.seq)

    def enis(self) -> list[Eni]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._tables.enis.values())), key=lambda e: e.seq)

    def enis_of(self, instance_id: str) -> list[Eni]:
        """The ENIs attached to an instance, by (network card, device index)."""
        with self._lock:
            self._tables.instance(instance_id)
            found = [copy.deepcopy(e) for e in self._tables.attached_to(instance_id)]
        return sorted(
            found, key=lambda e: (attachment_of(e).network_card_index, attachment_of(e).device_index)
        )

    def instance_by_address(self, address: str) -> Instance | None:
        """The running instance one of whose ENIs holds `address` (as an address or inside a prefix)."""
        with self._lock:
            return copy.deepcopy(self._tables.instance_by_address(address))

    def default_security_group(self, vpc_id: str) -> SecurityGroup:
        with self._lock:
            return copy.deepcopy(self._groups.default_of(vpc_id))

    def available_ip_count(self, subnet_id: str) -> int:
        return self._addresses.available_ip_count(subnet_id)

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data (for `lab status` and GET /lab/state)."""
        with self._lock:
            state = dump(self._tables)
            for s in state["subnets"]:
                s["available_ip_count"] = self.available_ip_count(s["id"])
            for e in state["network_interfaces"]:
                e["status"] = self._tables.enis[e["id"]].status
            return state

    # ---------------------------------------------------------------- lab-side API

    def create_vpc(
        self, cidr: str, tags: Mapping[str, str] | None = None, ipv6_cidr: str | None = None
    ) -> Vpc:
        with self._lock:
            return copy.deepcopy(self._topology.create_vpc(cidr, tags, ipv6_cidr))

    def create_security_group(
        self, vpc_id: str, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> SecurityGroup:
        """CreateSecurityGroup (also the lab's own node group)."""
        with self._lock:
            return copy.deepcopy(self._groups.create(vpc_id, name, description or name, tags))

    def create_subnet(
        self,
        vpc_id: str,
        cidr: str,
        az: str,
        tags: Mapping[str, str] | None = None,
        ipv6_cidr: str | None = None,
    ) -> Subnet:
        with self._lock:
            return copy.deepcopy(self._topology.create_subnet(vpc_id, cidr, az, tags, ipv6_cidr))

    def launch_instance(
        self,
        instance_type: str,
        subnet_id: str,
        security_group_ids: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        private_ip: str | None = None,
    ) -> Instance:
        """A running instance with its primary ENI attached at device index 0 (DeleteOnTermination)."""
        with self._lock:
            inst = self._topology.launch_instance(
                instance_type, subnet_id, security_group_ids, tags, private_ip
            )
            return copy.deepcopy(inst)

    def terminate_instance(self, instance_id: str) -> None:
        """Detach every ENI; delete those with DeleteOnTermination (as EC2 does)."""
        self._topology.terminate_instance(instance_id)

    # ---------------------------------------------------------------- EC2 actions

    def create_network_interface(
        self,
        subnet_id: str,
        *,
        description: str = "",
        security_group_ids: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        private_ip: str | None = None,
        secondary_ips: Sequence[str] = (),
        secondary_count: int = 0,
        prefix_count: int = 0,
        prefixes: Sequence[str] = (),
        interface_type: str = "interface",
    ) -> Eni:
        with self._lock:
            eni = self._enis.create(
                subnet_id,
                description=description,
                security_group_ids=security_group_ids,
                tags=tags,
                private_ip=private_ip,
                secondary_ips=secondary_ips,
                secondary_count=secondary_count,
                prefix_count=prefix_count,
                prefixes=prefixes,
                interface_type=interface_type,
            )
            return copy.deepcopy(eni)

    def attach_network_interface(
        self, eni_id: str, instance_id: str, device_index: int, network_card_index: int = 0
    ) -> str:
        """Attach; returns the attachment ID."""
        return self._enis.attach(eni_id, instance_id, device_index, network_card_index)

    def detach_network_interface(self, attachment_id: str, force: bool = False) -> None:
        self._enis.detach(attachment_id, force)

    def delete_network_interface(self, eni_id: str) -> None:
        self._enis.delete(eni_id)

    def assign_private_ip_addresses(
        self,
        eni_id: str,
        *,
        secondary_count: int = 0,
        addresses: Sequence[str] = (),
        prefix_count: int = 0,
        prefixes: Sequence[str] = (),
        allow_reassignment: bool = False,
    ) -> tuple[list[str], list[str]]:
        """Returns only what was added: (addresses, prefixes)."""
        return self._addresses.assign(
            eni_id,
            secondary_count=secondary_count,
            addresses=addresses,
            prefix_count=prefix_count,
            prefixes=prefixes,
            allow_reassignment=allow_reassignment,
        )

    def unassign_private_ip_addresses(
        self, eni_id: str, *, addresses: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        self._addresses.unassign(eni_id, addresses=addresses, prefixes=prefixes)

    def assign_ipv6_addresses(
        self,
        eni_id: str,
        *,
        address_count: int = 0,
        addresses: Sequence[str] = (),
        prefix_count: int = 0,
        prefixes: Sequence[str] = (),
    ) -> tuple[list[str], list[str]]:
        """AssignIpv6Addresses; returns only what was added: (addresses, /80 prefixes)."""
        return self._addresses6.assign(
            eni_id,
            address_count=address_count,
            addresses=addresses,
            prefix_count=prefix_count,
            prefixes=prefixes,
        )

    def unassign_ipv6_addresses(
        self, eni_id: str, *, addresses: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> tuple[list[str], list[str]]:
        """UnassignIpv6Addresses; returns what was removed."""
        return self._addresses6.unassign(eni_id, addresses=addresses, prefixes=prefixes)

    def modify_network_interface_attribute(
        self,
        eni_id: str,
        *,
        source_dest_check: bool | None = None,
        security_group_ids: Sequence[str] | None = None,
        description: str | None = None,
        attachment_id: str | None = None,
        delete_on_termination: bool | None = None,
    ) -> None:
        """One attribute per call, as in EC2."""
        self._enis.modify_attribute(
            eni_id,
            source_dest_check=source_dest_check,
            security_group_ids=security_group_ids,
            description=description,
            attachment_id=attachment_id,
            delete_on_termination=delete_on_termination,
        )

    def associate_trunk_interface(
        self, branch_id: str, trunk_id: str, vlan_id: int | None, gre_key: int | None = None
    ) -> Eni:
        """AssociateTrunkInterface; returns the branch with its trunk_association."""
        with self._lock:
            return copy.deepcopy(self._trunking.associate(branch_id, trunk_id, vlan_id, gre_key))

    def disassociate_trunk_interface(self, association_id: str) -> None:
        self._trunking.disassociate(association_id)

    def trunk_associations(self) -> list[Eni]:
        """Every associated branch ENI (DescribeTrunkInterfaceAssociations), by creation order."""
        with self._lock:
            return copy.deepcopy(self._trunking.associated())

    def delete_security_group(self, group_id: str) -> None:
        self._groups.delete(group_id)

    def authorize_security_group(
        self, group_id: str, permissions: Sequence[Mapping[str, Any]], *, egress: bool
    ) -> list[SgRule]:
        """AuthorizeSecurityGroupIngress/Egress; returns the rules added."""
        with self._lock:
            return copy.deepcopy(self._groups.authorize(group_id, egress, permissions))

    def revoke_security_group(
        self,
        group_id: str,
        *,
        egress: bool,
        permissions: Sequence[Mapping[str, Any]] = (),
        rule_ids: Sequence[str] = (),
    ) -> list[SgRule]:
        """RevokeSecurityGroupIngress/Egress; returns the rules removed."""
        with self._lock:
            return copy.deepcopy(self._groups.revoke(group_id, egress, permissions, rule_ids))

    def create_tags(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        self._tagging.create_tags(resource_ids, tags)

    def delete_tags(self, resource_ids: Sequence[str], tags: Sequence[tuple[str, str | None]] = ()) -> None:
        """Remove tags; a None value removes the key whatever its value, no tags given removes all."""
        self._tagging.delete_tags(resource_ids, tags)
