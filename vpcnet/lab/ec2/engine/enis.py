"""The ENI lifecycle: create (addresses, prefixes, groups, tags), attach (instance state, same AZ, device
index and the limit per network card), detach (never device 0), delete (never while attached), attributes,
and what an instance's launch and termination do to its ENIs.

The interface types' own rules (a branch is never attached, one trunk per trunking-compatible instance, a
trunk keeps its branches) live in `trunking`; this module calls them where an ENI is attached, detached,
deleted or released."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vpcnet.ipam.limits import instance_limits
from vpcnet.lab.ec2.engine.addresses import AddressAssignment
from vpcnet.lab.ec2.engine.security_groups import SecurityGroups
from vpcnet.lab.ec2.engine.store import Store
from vpcnet.lab.ec2.engine.tables import attachment_of
from vpcnet.lab.ec2.engine.tagging import add_tags
from vpcnet.lab.ec2.engine.trunking import (
    branches_of,
    check_attachable,
    check_detachable,
    check_interface_type,
    drop_association,
)
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value, not_found
from vpcnet.lab.ec2.ids import make_id, make_mac
from vpcnet.lab.ec2.model import Attachment, Eni, Instance, Subnet, timestamp


class EniLifecycle:
    def __init__(self, store: Store, addresses: AddressAssignment, groups: SecurityGroups) -> None:
        self._store = store
        self._addresses = addresses
        self._groups = groups

    def new_eni(
        self,
        subnet: Subnet,
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
        """Create an ENI in the tables (caller holds a mutation)."""
        check_interface_type(interface_type)
        if secondary_ips and secondary_count:
            raise Ec2Error(
                "InvalidParameterCombination",
                "SecondaryPrivateIpAddressCount cannot be combined with explicit secondary addresses",
            )
        if prefixes and prefix_count:
            raise Ec2Error(
                "InvalidParameterCombination", "Ipv4PrefixCount cannot be combined with Ipv4Prefixes"
            )
        if (prefixes or prefix_count) and (secondary_ips or secondary_count):
            raise Ec2Error(
                "InvalidParameterCombination",
                "IPv4 prefixes cannot be combined with secondary private IPv4 addresses or their count",
            )
        groups = self._groups.check_members(
            subnet.vpc_id, security_group_ids or [self._groups.default_of(subnet.vpc_id).id]
        )
        self._addresses.check_request_size(
            1 + len(secondary_ips) + secondary_count + len(prefixes) + prefix_count
        )
        alloc = self._addresses.allocator(subnet)
        # Explicit addresses and prefixes first, so that the automatic ones go around them.
        primary = alloc.explicit_address(private_ip) if private_ip else None
        explicit = [alloc.explicit_address(a) for a in secondary_ips]
        explicit_prefixes = [alloc.explicit_prefix(p) for p in prefixes]
        if primary is None:
            primary = alloc.addresses(1)[0]
        seconds = explicit + alloc.addresses(secondary_count)
        blocks = explicit_prefixes + alloc.prefixes(prefix_count)
        seq = self._store.tables.next_seq()
        eni = Eni(
            id=make_id("eni", seq),
            subnet_id=subnet.id,
            vpc_id=subnet.vpc_id,
            az=subnet.az,
            mac=make_mac(seq),
            description=description,
            primary_ip=primary,
            seq=seq,
            secondary_ips=seconds,
            prefixes=blocks,
            security_group_ids=groups,
            interface_type=interface_type,
        )
        add_tags(eni.tags, tags or {}, eni.id)
        self._store.tables.enis[eni.id] = eni
        return eni

    def create(
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
        """CreateNetworkInterface."""
        with self._store.mutation():
            return self.new_eni(
                self._store.tables.subnet(subnet_id),
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

    def attach_primary(self, eni: Eni, inst: Instance) -> None:
        """A launching instance's primary ENI, at device index 0 of card 0, deleted on termination (caller
        holds a mutation)."""
        eni.attachment = Attachment(
            id=make_id("eni-attach", self._store.tables.next_seq()),
            instance_id=inst.id,
            device_index=0,
            network_card_index=0,
            delete_on_termination=True,
            attach_time=timestamp(),
        )
        self._addresses.check_slots(eni, 0)
        self._store.hook("eni_attached", eni, inst)

    def attach(self, eni_id: str, instance_id: str, device_index: int, network_card_index: int = 0) -> str:
        """AttachNetworkInterface; returns the attachment ID."""
        t = self._store.tables
        with self._store.mutation():
            eni = t.eni(eni_id)
            inst = t.instance(instance_id)
            if inst.state != "running":
                raise Ec2Error(
                    "IncorrectInstanceState",
                    f"The instance '{instance_id}' is not in a valid state ({inst.state})",
                )
            if eni.attachment is not None:
                raise Ec2Error(
                    "InvalidNetworkInterface.InUse",
                    f"Interface: {eni_id} in use (attached to {eni.attachment.instance_id})",
                )
            if eni.az != inst.az or eni.vpc_id != inst.vpc_id:
                raise invalid_value(
                    f"You may not attach a network interface to an instance if they are not in the same "
                    f"availability zone ({eni_id} is in {eni.az}, {instance_id} in {inst.az})"
                )
            check_attachable(t, eni, inst)
            self._check_device(inst, device_index, network_card_index)
            eni.attachment = Attachment(
                id=make_id("eni-attach", t.next_seq()),
                instance_id=instance_id,
                device_index=device_index,
                network_card_index=network_card_index,
                delete_on_termination=False,
                attach_time=timestamp(),
            )
            self._addresses.check_slots(eni, 0)
            if eni.prefixes:
                self._addresses.check_prefix_support(eni)
            self._store.hook("eni_attached", eni, inst)
            return eni.attachment.id

    def _check_device(self, inst: Instance, device_index: int, network_card_index: int) -> None:
        """The card exists on the instance type, the device index is free on it and the card has room."""
        limits = instance_limits(inst.instance_type)
        cards = limits.enis_per_card or (limits.max_enis,)
        if not 0 <= network_card_index < len(cards):
            raise invalid_value(
                f"Network card index {network_card_index} is invalid for {inst.instance_type} "
                f"(it has {len(cards)} network card(s))"
            )
        if device_index < 0:
            raise invalid_value(f"Device index {device_index} must not be negative")
        on_card = [
            e
            for e in self._store.tables.attached_to(inst.id)
            if attachment_of(e).network_card_index == network_card_index
        ]
        if any(attachment_of(e).device_index == device_index for e in on_card):
            raise invalid_value(
                f"Instance '{inst.id}' already has an interface attached at device index '{device_index}'."
            )
        if len(on_card) >= cards[network_card_index]:
            raise Ec2Error(
                "AttachmentLimitExceeded",
                f"Interface count {len(on_card) + 1} exceeds the limit for {inst.instance_type} "
                f"(network card {network_card_index} takes {cards[network_card_index]})",
            )

    def detach(self, attachment_id: str, force: bool = False) -> None:
        """DetachNetworkInterface (`force` is accepted and changes nothing in the lab)."""
        with self._store.mutation():
            eni = self._store.tables.eni_by_attachment(attachment_id)
            att = attachment_of(eni)
            if att.device_index == 0 and att.network_card_index == 0:
                raise Ec2Error(
                    "OperationNotPermitted",
                    f"The network interface at device index 0 cannot be detached ({eni.id}).",
                )
            check_detachable(self._store.tables, eni)
            eni.attachment = None
            self._store.hook("eni_detached", eni, att.instance_id)

    def delete(self, eni_id: str) -> None:
        """DeleteNetworkInterface."""
        t = self._store.tables
        with self._store.mutation():
            eni = t.eni(eni_id)
            if eni.attachment is not None:
                raise Ec2Error(
                    "InvalidNetworkInterface.InUse",
                    f"The network interface '{eni_id}' is currently in use "
                    f"(attached to {eni.attachment.instance_id}).",
                )
            if eni.trunk_association is not None:
                drop_association(self._store, eni)
            del t.enis[eni_id]
            self._store.hook("eni_deleted", eni)

    def release_all(self, instance_id: str) -> None:
        """Instance termination: detach every ENI (highest device first) and delete those with
        DeleteOnTermination, as EC2 does (caller holds a mutation)."""
        t = self._store.tables
        for eni in sorted(t.attached_to(instance_id), key=lambda e: -attachment_of(e).device_index):
            for branch in branches_of(t, eni.id):
                drop_association(self._store, branch)
            delete = attachment_of(eni).delete_on_termination
            eni.attachment = None
            self._store.hook("eni_detached", eni, instance_id)
            if delete:
                del t.enis[eni.id]
                self._store.hook("eni_deleted", eni)

    def modify_attribute(
        self,
        eni_id: str,
        *,
        source_dest_check: bool | None = None,
        security_group_ids: Sequence[str] | None = None,
        description: str | None = None,
        attachment_id: str | None = None,
        delete_on_termination: bool | None = None,
    ) -> None:
        """ModifyNetworkInterfaceAttribute: one attribute per call, as in EC2."""
        given = [
            source_dest_check is not None,
            security_group_ids is not None,
            description is not None,
            delete_on_termination is not None,
        ]
        if sum(given) != 1:
            raise Ec2Error(
                "InvalidParameterCombination",
                "Specify exactly one of SourceDestCheck, SecurityGroupId, Description, Attachment",
            )
        with self._store.mutation():
            eni = self._store.tables.eni(eni_id)
            if source_dest_check is not None:
                eni.source_dest_check = source_dest_check
            elif security_group_ids is not None:
                if not security_group_ids:
                    raise Ec2Error("MissingParameter", "SecurityGroupId needs at least one group")
                eni.security_group_ids = self._groups.check_members(eni.vpc_id, security_group_ids)
            elif description is not None:
                eni.description = description
                return
            else:
                if attachment_id is None:
                    raise Ec2Error(
                        "MissingParameter", "Attachment.AttachmentId is required with DeleteOnTermination"
                    )
                if eni.attachment is None or eni.attachment.id != attachment_id:
                    raise not_found("attachment", attachment_id)
                eni.attachment.delete_on_termination = bool(delete_on_termination)
                return
            self._store.hook("eni_changed", eni)
