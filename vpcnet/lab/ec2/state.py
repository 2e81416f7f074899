"""The whole emulated EC2 state and every rule EC2 enforces on it.

`Cloud` is thread-safe (one re-entrant lock), persists itself atomically to a JSON file after every change and
reloads it on start, and tells the fabric about ENI changes through `FabricHooks` before an action returns.
Every mutating method either succeeds completely or changes nothing (bad input, a broken rule, a failing
hook or a failing write all roll back) and raises `Ec2Error` with EC2's code.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from pathlib import Path
from typing import Any, TypeVar

from vpcnet.ipam.limits import UnknownInstanceType, all_instance_types, instance_limits
from vpcnet.lab.ec2 import addressing
from vpcnet.lab.ec2.allocator import SubnetAllocator
from vpcnet.lab.ec2.errors import Ec2Error, internal_error, invalid_value, not_found
from vpcnet.lab.ec2.hooks import FabricHooks, NullHooks
from vpcnet.lab.ec2.ids import make_id, make_mac
from vpcnet.lab.ec2.jsonfile import write_json_atomic
from vpcnet.lab.ec2.model import (
    Attachment,
    Eni,
    Instance,
    SecurityGroup,
    Subnet,
    Vpc,
    eni_from_dict,
    to_dict,
)

STATE_VERSION = 1
T = TypeVar("T")
DEFAULT_REGION = "us-west-2"
DEFAULT_ACCOUNT = "123456789012"
MAX_TAGS = 50


@cache
def _max_slots_unattached() -> int:
    """An ENI that is not attached may hold as many addresses as the largest instance type allows; the
    instance type's own limit is checked when it is attached."""
    return max(instance_limits(t).ipv4_per_eni for t in all_instance_types())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_cidr(cidr: str, what: str) -> IPv4Network:
    try:
        return IPv4Network(cidr, strict=True)
    except (AddressValueError, NetmaskValueError, ValueError) as e:
        raise Ec2Error("InvalidParameterValue", f"{what} {cidr!r} is not a valid IPv4 CIDR block: {e}") from e


class Cloud:
    """The emulated EC2 state of one account in one region."""

    def __init__(
        self,
        state_file: Path | str | None = None,
        hooks: FabricHooks | None = None,
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._lock = threading.RLock()
        self._hooks: FabricHooks = hooks if hooks is not None else NullHooks()
        self._file = Path(state_file) if state_file is not None else None
        self.region = region
        self.account = account
        self._seq = 0
        self._vpcs: dict[str, Vpc] = {}
        self._subnets: dict[str, Subnet] = {}
        self._groups: dict[str, SecurityGroup] = {}
        self._instances: dict[str, Instance] = {}
        self._enis: dict[str, Eni] = {}
        if self._file is not None and self._file.exists():
            try:
                self._restore(json.loads(self._file.read_text()))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{self._file}: not a usable EC2 lab state ({type(e).__name__}: {e})") from e

    @property
    def hooks(self) -> FabricHooks:
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: FabricHooks) -> None:
        """Set after loading, once the fabric exists (the lab daemon loads the state, then hooks in)."""
        with self._lock:
            self._hooks = hooks

    # ---------------------------------------------------------------- persistence

    def _dump(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "region": self.region,
            "account": self.account,
            "seq": self._seq,
            "vpcs": [to_dict(v) for v in self._vpcs.values()],
            "subnets": [to_dict(s) for s in self._subnets.values()],
            "security_groups": [to_dict(g) for g in self._groups.values()],
            "instances": [to_dict(i) for i in self._instances.values()],
            "network_interfaces": [to_dict(e) for e in self._enis.values()],
        }

    def _restore(self, raw: Mapping[str, Any]) -> None:
        if raw.get("version") != STATE_VERSION:
            where = self._file or "the state"
            raise ValueError(f"{where}: state version {raw.get('version')!r}, expected {STATE_VERSION}")
        self.region = str(raw["region"])
        self.account = str(raw["account"])
        self._seq = int(raw["seq"])
        self._vpcs = {v["id"]: Vpc(**v) for v in raw["vpcs"]}
        self._subnets = {s["id"]: Subnet(**s) for s in raw["subnets"]}
        self._groups = {g["id"]: SecurityGroup(**g) for g in raw["security_groups"]}
        self._instances = {i["id"]: Instance(**i) for i in raw["instances"]}
        self._enis = {e["id"]: eni_from_dict(e) for e in raw["network_interfaces"]}

    def _persist(self) -> None:
        if self._file is not None:
            write_json_atomic(self._file, self._dump())

    @contextmanager
    def _mutation(self) -> Iterator[None]:
        """All or nothing: on any error the state is put back as it was (and not written)."""
        with self._lock:
            saved = self._dump()
            try:
                yield
                self._persist()
            except Ec2Error:
                self._restore(saved)
                raise
            except Exception as e:
                self._restore(saved)
                raise internal_error(f"the lab failed to apply the change: {e}") from e

    def _hook(self, name: str, *args: Any) -> None:
        copies = [copy.deepcopy(a) for a in args]
        try:
            getattr(self._hooks, name)(*copies)
        except Exception as e:
            raise internal_error(f"the lab fabric failed ({name}): {type(e).__name__}: {e}") from e

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # ---------------------------------------------------------------- lookups (copies)

    def _get_vpc(self, vpc_id: str) -> Vpc:
        return _lookup(self._vpcs, "vpc", vpc_id)

    def _get_subnet(self, subnet_id: str) -> Subnet:
        return _lookup(self._subnets, "subnet", subnet_id)

    def _get_instance(self, instance_id: str) -> Instance:
        return _lookup(self._instances, "instance", instance_id)

    def _get_eni(self, eni_id: str) -> Eni:
        return _lookup(self._enis, "eni", eni_id)

    def vpc(self, vpc_id: str) -> Vpc:
        with self._lock:
            return copy.deepcopy(self._get_vpc(vpc_id))

    def subnet(self, subnet_id: str) -> Subnet:
        with self._lock:
            return copy.deepcopy(self._get_subnet(subnet_id))

    def instance(self, instance_id: str) -> Instance:
        with self._lock:
            return copy.deepcopy(self._get_instance(instance_id))

    def eni(self, eni_id: str) -> Eni:
        with self._lock:
            return copy.deepcopy(self._get_eni(eni_id))

    def security_group(self, group_id: str) -> SecurityGroup:
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                raise not_found("sg", group_id)
            return copy.deepcopy(group)

    def vpcs(self) -> list[Vpc]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._vpcs.values())), key=lambda v: v.seq)

    def subnets(self) -> list[Subnet]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._subnets.values())), key=lambda s: s.seq)

    def security_groups(self) -> list[SecurityGroup]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._groups.values())), key=lambda g: g.seq)

    def instances(self) -> list[Instance]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._instances.values())), key=lambda i: i.seq)

    def enis(self) -> list[Eni]:
        with self._lock:
            return sorted(copy.deepcopy(list(self._enis.values())), key=lambda e: e.seq)

    def enis_of(self, instance_id: str) -> list[Eni]:
        """The ENIs attached to an instance, by (network card, device index)."""
        with self._lock:
            self._get_instance(instance_id)
            found = [copy.deepcopy(e) for e in self._attached_to(instance_id)]
        return sorted(found, key=lambda e: (_att(e).network_card_index, _att(e).device_index))

    def instance_by_address(self, address: str) -> Instance | None:
        """The running instance one of whose ENIs holds `address` (as an address or inside a prefix)."""
        try:
            ip = IPv4Address(address)
        except (AddressValueError, ValueError):
            return None
        with self._lock:
            for eni in self._enis.values():
                if eni.attachment is None:
                    continue
                inst = self._instances.get(eni.attachment.instance_id)
                if inst is None or inst.state != "running":
                    continue
                if address in eni.private_ips or any(ip in IPv4Network(p) for p in eni.prefixes):
                    return copy.deepcopy(inst)
        return None

    def default_security_group(self, vpc_id: str) -> SecurityGroup:
        with self._lock:
            self._get_vpc(vpc_id)
            for group in self._groups.values():
                if group.vpc_id == vpc_id and group.name == "default":
                    return copy.deepcopy(group)
        raise not_found("sg", f"default (in {vpc_id})")

    def available_ip_count(self, subnet_id: str) -> int:
        with self._lock:
            subnet = self._get_subnet(subnet_id)
            net = IPv4Network(subnet.cidr)
            return addressing.usable_count(net) - len(self._used_in_subnet(subnet_id))

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data (for `lab status` and GET /lab/state)."""
        with self._lock:
            state = self._dump()
            for s in state["subnets"]:
                s["available_ip_count"] = self.available_ip_count(s["id"])
            for e in state["network_interfaces"]:
                e["status"] = self._enis[e["id"]].status
            return state

    # ---------------------------------------------------------------- helpers

    def _attached_to(self, instance_id: str) -> list[Eni]:
        return [e for e in self._enis.values() if e.attachment and e.attachment.instance_id == instance_id]

    def _used_in_subnet(self, subnet_id: str) -> set[int]:
        addresses: list[str] = []
        prefixes: list[str] = []
        for eni in self._enis.values():
            if eni.subnet_id == subnet_id:
                addresses.extend(eni.private_ips)
                prefixes.extend(eni.prefixes)
        return addressing.used_addresses(addresses, prefixes)

    def _check_groups(self, vpc_id: str, group_ids: Iterable[str]) -> list[str]:
        result: list[str] = []
        for gid in group_ids:
            group = self._groups.get(gid)
            if group is None:
                raise not_found("sg", gid)
            if group.vpc_id != vpc_id:
                raise Ec2Error(
                    "InvalidGroup.NotFound", f"The security group '{gid}' does not exist in VPC '{vpc_id}'"
                )
            if gid not in result:
                result.append(gid)
        return result

    def _slot_limit(self, eni: Eni) -> tuple[int, str]:
        if eni.attachment is None:
            return _max_slots_unattached(), "an unattached network interface"
        itype = self._instances[eni.attachment.instance_id].instance_type
        return instance_limits(itype).ipv4_per_eni, f"instance type {itype}"

    def _check_slots(self, eni: Eni, extra: int) -> None:
        limit, what = self._slot_limit(eni)
        if eni.address_slots + extra > limit:
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of private addresses will exceed limit: {eni.id} would hold "
                f"{eni.address_slots + extra} addresses and prefixes, {what} allows {limit} per interface.",
            )

    def _check_prefix_support(self, eni: Eni) -> None:
        if eni.attachment is None:
            return
        itype = self._instances[eni.attachment.instance_id].instance_type
        if not instance_limits(itype).is_nitro:
            raise invalid_value(
                f"Prefix delegation is not supported for instance type {itype} (only Nitro-based types)"
            )

    @staticmethod
    def _check_tags(tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            if not key or len(key) > 128:
                raise invalid_value(f"Tag key {key!r} must be 1 to 128 characters")
            if key.lower().startswith("aws:"):
                raise invalid_value(f"Tag key {key!r} may not start with 'aws:' (reserved)")
            if len(value) > 256:
                raise invalid_value(f"Tag value for key {key!r} must be at most 256 characters")

    def _add_tags(self, target: dict[str, str], tags: Mapping[str, str], ident: str) -> None:
        self._check_tags(tags)
        merged = {**target, **tags}
        if len(merged) > MAX_TAGS:
            raise Ec2Error(
                "TagLimitExceeded", f"The maximum number of tags ({MAX_TAGS}) for {ident} is exceeded"
            )
        target.clear()
        target.update(merged)

    # ---------------------------------------------------------------- lab-side API

    def create_vpc(self, cidr: str, tags: Mapping[str, str] | None = None) -> Vpc:
        net = _parse_cidr(cidr, "VPC CIDR block")
        if not 16 <= net.prefixlen <= 28:
            raise invalid_value(f"VPC CIDR block {cidr} must be between /16 and /28")
        with self._mutation():
            vpc = Vpc(id=make_id("vpc", self._next_seq()), cidr=str(net), seq=self._seq)
            self._add_tags(vpc.tags, tags or {}, vpc.id)
            self._vpcs[vpc.id] = vpc
            seq = self._next_seq()
            group = SecurityGroup(
                id=make_id("sg", seq),
                vpc_id=vpc.id,
                name="default",
                description="default VPC security group",
                seq=seq,
            )
            self._groups[group.id] = group
            return copy.deepcopy(vpc)

    def create_security_group(self, vpc_id: str, name: str, description: str = "") -> SecurityGroup:
        with self._mutation():
            self._get_vpc(vpc_id)
            if any(g.vpc_id == vpc_id and g.name == name for g in self._groups.values()):
                raise Ec2Error(
                    "InvalidGroup.Duplicate", f"The security group '{name}' already exists in {vpc_id}"
                )
            seq = self._next_seq()
            group = SecurityGroup(
                id=make_id("sg", seq), vpc_id=vpc_id, name=name, description=description, seq=seq
            )
            self._groups[group.id] = group
            return copy.deepcopy(group)

    def create_subnet(self, vpc_id: str, cidr: str, az: str, tags: Mapping[str, str] | None = None) -> Subnet:
        net = _parse_cidr(cidr, "subnet CIDR block")
        with self._mutation():
            vpc = self._get_vpc(vpc_id)
            if not net.subnet_of(IPv4Network(vpc.cidr)) or not 16 <= net.prefixlen <= 28:
                raise Ec2Error("InvalidSubnet.Range", f"The CIDR '{cidr}' is invalid for VPC {vpc.cidr}")
            for other in self._subnets.values():
                if other.vpc_id == vpc_id and IPv4Network(other.cidr).overlaps(net):
                    raise Ec2Error("InvalidSubnet.Conflict", f"The CIDR '{cidr}' conflicts with {other.id}")
            if not az.startswith(self.region):
                raise invalid_value(f"Availability zone {az!r} is not in region {self.region}")
            subnet = Subnet(
                id=make_id("subnet", self._next_seq()), vpc_id=vpc_id, cidr=str(net), az=az, seq=self._seq
            )
            self._add_tags(subnet.tags, tags or {}, subnet.id)
            self._subnets[subnet.id] = subnet
            return copy.deepcopy(subnet)

    def launch_instance(
        self,
        instance_type: str,
        subnet_id: str,
        security_group_ids: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        private_ip: str | None = None,
    ) -> Instance:
        """A running instance with its primary ENI attached at device index 0 (DeleteOnTermination)."""
        try:
            instance_limits(instance_type)
        except UnknownInstanceType as e:
            raise Ec2Error(
                "InvalidInstanceType", f"The instance type '{instance_type}' does not exist"
            ) from e
        with self._mutation():
            subnet = self._get_subnet(subnet_id)
            seq = self._next_seq()
            inst = Instance(
                id=make_id("i", seq),
                instance_type=instance_type,
                subnet_id=subnet_id,
                vpc_id=subnet.vpc_id,
                az=subnet.az,
                launch_time=_now(),
                seq=seq,
            )
            self._add_tags(inst.tags, tags or {}, inst.id)
            self._instances[inst.id] = inst
            eni = self._new_eni(
                subnet,
                description="Primary network interface",
                security_group_ids=security_group_ids,
                private_ip=private_ip,
            )
            inst.primary_eni_id = eni.id
            eni.attachment = Attachment(
                id=make_id("eni-attach", self._next_seq()),
                instance_id=inst.id,
                device_index=0,
                network_card_index=0,
                delete_on_termination=True,
                attach_time=_now(),
            )
            self._check_slots(eni, 0)
            self._hook("eni_attached", eni, inst)
            return copy.deepcopy(inst)

    def terminate_instance(self, instance_id: str) -> None:
        """Detach every ENI; delete those with DeleteOnTermination (as EC2 does)."""
        with self._mutation():
            inst = self._get_instance(instance_id)
            if inst.state == "terminated":
                return
            attached = sorted(self._attached_to(instance_id), key=lambda e: -_att(e).device_index)
            for eni in attached:
                delete = _att(eni).delete_on_termination
                eni.attachment = None
                self._hook("eni_detached", eni, instance_id)
                if delete:
                    del self._enis[eni.id]
                    self._hook("eni_deleted", eni)
            inst.state = "terminated"

    # ---------------------------------------------------------------- EC2 actions

    def _new_eni(
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
    ) -> Eni:
        """Create an ENI in the state (caller holds a mutation)."""
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
        groups = self._check_groups(
            subnet.vpc_id, security_group_ids or [self.default_security_group(subnet.vpc_id).id]
        )
        slots = 1 + len(secondary_ips) + secondary_count + len(prefixes) + prefix_count
        if slots > _max_slots_unattached():
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of private addresses will exceed limit: {slots} requested, at most "
                f"{_max_slots_unattached()} per network interface",
            )
        alloc = SubnetAllocator(IPv4Network(subnet.cidr), self._used_in_subnet(subnet.id))
        # Explicit addresses and prefixes first, so that the automatic ones go around them.
        primary = alloc.explicit_address(private_ip) if private_ip else None
        explicit = [alloc.explicit_address(a) for a in secondary_ips]
        explicit_prefixes = [alloc.explicit_prefix(p) for p in prefixes]
        if primary is None:
            primary = alloc.addresses(1)[0]
        seconds = explicit + alloc.addresses(secondary_count)
        blocks = explicit_prefixes + alloc.prefixes(prefix_count)
        seq = self._next_seq()
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
        )
        self._add_tags(eni.tags, tags or {}, eni.id)
        self._enis[eni.id] = eni
        return eni

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
    ) -> Eni:
        with self._mutation():
            subnet = self._get_subnet(subnet_id)
            eni = self._new_eni(
                subnet,
                description=description,
                security_group_ids=security_group_ids,
                tags=tags,
                private_ip=private_ip,
                secondary_ips=secondary_ips,
                secondary_count=secondary_count,
                prefix_count=prefix_count,
                prefixes=prefixes,
            )
            return copy.deepcopy(eni)

    def attach_network_interface(
        self, eni_id: str, instance_id: str, device_index: int, network_card_index: int = 0
    ) -> str:
        """Attach; returns the attachment ID."""
        with self._mutation():
            eni = self._get_eni(eni_id)
            inst = self._get_instance(instance_id)
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
                e for e in self._attached_to(instance_id) if _att(e).network_card_index == network_card_index
            ]
            if any(_att(e).device_index == device_index for e in on_card):
                raise invalid_value(
                    f"Instance '{instance_id}' already has an interface attached at device index "
                    f"'{device_index}'."
                )
            if len(on_card) >= cards[network_card_index]:
                raise Ec2Error(
                    "AttachmentLimitExceeded",
                    f"Interface count {len(on_card) + 1} exceeds the limit for {inst.instance_type} "
                    f"(network card {network_card_index} takes {cards[network_card_index]})",
                )
            eni.attachment = Attachment(
                id=make_id("eni-attach", self._next_seq()),
                instance_id=instance_id,
                device_index=device_index,
                network_card_index=network_card_index,
                delete_on_termination=False,
                attach_time=_now(),
            )
            self._check_slots(eni, 0)
            if eni.prefixes:
                self._check_prefix_support(eni)
            self._hook("eni_attached", eni, inst)
            return eni.attachment.id

    def _eni_by_attachment(self, attachment_id: str) -> Eni:
        for eni in self._enis.values():
            if eni.attachment is not None and eni.attachment.id == attachment_id:
                return eni
        raise not_found("attachment", attachment_id)

    def detach_network_interface(self, attachment_id: str, force: bool = False) -> None:
        with self._mutation():
            eni = self._eni_by_attachment(attachment_id)
            att = _att(eni)
            if att.device_index == 0 and att.network_card_index == 0:
                raise Ec2Error(
                    "OperationNotPermitted",
                    f"The network interface at device index 0 cannot be detached ({eni.id}).",
                )
            eni.attachment = None
            self._hook("eni_detached", eni, att.instance_id)

    def delete_network_interface(self, eni_id: str) -> None:
        with self._mutation():
            eni = self._get_eni(eni_id)
            if eni.attachment is not None:
                raise Ec2Error(
                    "InvalidNetworkInterface.InUse",
                    f"The network interface '{eni_id}' is currently in use "
                    f"(attached to {eni.attachment.instance_id}).",
                )
            del self._enis[eni_id]
            self._hook("eni_deleted", eni)

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
        with self._mutation():
            eni = self._get_eni(eni_id)
            subnet = self._subnets[eni.subnet_id]
            if prefix_count or prefixes:
                self._check_prefix_support(eni)
            self._check_slots(eni, secondary_count + len(addresses) + prefix_count + len(prefixes))
            changed_others: list[Eni] = []
            if allow_reassignment and addresses:
                changed_others = self._take_back(eni, addresses)
            alloc = SubnetAllocator(IPv4Network(subnet.cidr), self._used_in_subnet(subnet.id))
            new_addresses = [alloc.explicit_address(a) for a in addresses] + alloc.addresses(secondary_count)
            new_prefixes = [alloc.explicit_prefix(p) for p in prefixes] + alloc.prefixes(prefix_count)
            eni.secondary_ips.extend(new_addresses)
            eni.prefixes.extend(new_prefixes)
            for other in changed_others:
                self._hook("eni_changed", other)
            self._hook("eni_changed", eni)
            return new_addresses, new_prefixes

    def _take_back(self, eni: Eni, addresses: Sequence[str]) -> list[Eni]:
        """AllowReassignment: move secondary addresses held by other ENIs of the subnet to `eni`."""
        changed: list[Eni] = []
        for other in self._enis.values():
            if other.id == eni.id or other.subnet_id != eni.subnet_id:
                continue
            moved = [a for a in addresses if a in other.secondary_ips]
            if moved:
                other.secondary_ips = [a for a in other.secondary_ips if a not in moved]
                changed.append(other)
        return changed

    def unassign_private_ip_addresses(
        self, eni_id: str, *, addresses: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        if not addresses and not prefixes:
            raise Ec2Error("MissingParameter", "Specify PrivateIpAddress or Ipv4Prefix")
        with self._mutation():
            eni = self._get_eni(eni_id)
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
            self._hook("eni_changed", eni)

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
        with self._mutation():
            eni = self._get_eni(eni_id)
            if source_dest_check is not None:
                eni.source_dest_check = source_dest_check
            elif security_group_ids is not None:
                if not security_group_ids:
                    raise Ec2Error("MissingParameter", "SecurityGroupId needs at least one group")
                eni.security_group_ids = self._check_groups(eni.vpc_id, security_group_ids)
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
            self._hook("eni_changed", eni)

    def _taggable(self, resource_id: str) -> tuple[dict[str, str], str]:
        kind = resource_id.split("-", 1)[0]
        stores: dict[str, tuple[Mapping[str, Any], str]] = {
            "vpc": (self._vpcs, "vpc"),
            "subnet": (self._subnets, "subnet"),
            "sg": (self._groups, "sg"),
            "i": (self._instances, "instance"),
            "eni": (self._enis, "eni"),
        }
        if kind not in stores or "-" not in resource_id:
            raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")
        store, name = stores[kind]
        obj = store.get(resource_id)
        if obj is None:
            raise not_found(name, resource_id)
        tags: dict[str, str] = obj.tags
        return tags, kind

    def create_tags(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        if not resource_ids:
            raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
        with self._mutation():
            for rid in resource_ids:
                target, _ = self._taggable(rid)
                self._add_tags(target, tags, rid)

    def delete_tags(self, resource_ids: Sequence[str], tags: Sequence[tuple[str, str | None]] = ()) -> None:
        """Remove tags; a None value removes the key whatever its value, no tags given removes all."""
        if not resource_ids:
            raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
        with self._mutation():
            for rid in resource_ids:
                target, _ = self._taggable(rid)
                if not tags:
                    target.clear()
                for key, value in tags:
                    if key in target and (value is None or target[key] == value):
                        del target[key]


def _att(eni: Eni) -> Attachment:
    assert eni.attachment is not None
    return eni.attachment


def _lookup(table: dict[str, T], kind: str, key: str) -> T:
    """One object by id, or EC2's NotFound error for its kind."""
    found = table.get(key)
    if found is None:
        raise not_found(kind, key)
    return found
