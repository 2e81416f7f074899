"""EC2 actions: a parsed request (boto3's member names) in, an answer dict (boto3's member names) out.

The rules live in `state.Cloud`; this module maps parameters, filters, paginates and shapes answers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar, TypeVar

from vpcnet.ipam.limits import UnknownInstanceType, all_instance_types, instance_limits
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.listing import Fields, by_ids, check_filters, matches, paginate
from vpcnet.lab.ec2.model import Eni, Instance, Subnet, Vpc
from vpcnet.lab.ec2.state import Cloud

# The instance-type table is static: remember each row once (DescribeInstanceTypes walks all of them).
_limits = cache(instance_limits)

Params = dict[str, Any]
Answer = dict[str, Any]
T = TypeVar("T")

# The actions this endpoint speaks; Describe* are the "non-mutating" class for throttling.
ACTIONS = (
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeVpcs",
    "DescribeSubnets",
    "DescribeNetworkInterfaces",
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "ModifyNetworkInterfaceAttribute",
    "CreateTags",
    "DeleteTags",
)


def is_mutating(action: str) -> bool:
    return not action.startswith("Describe")


def _required(params: Params, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise Ec2Error("MissingParameter", f"The request must contain the parameter {name}")
    return value


def _tags_out(tags: Mapping[str, str]) -> list[dict[str, str]] | None:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())] or None


def _dns_name(address: str, region: str) -> str:
    return f"ip-{address.replace('.', '-')}.{region}.compute.internal"


# ---------------------------------------------------------------- shapes of answers


class Ec2Api:
    """Dispatches EC2 actions to a `Cloud`."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self._handlers: dict[str, Callable[[Params], Answer]] = {
            name: getattr(self, "_" + name) for name in ACTIONS
        }

    def call(self, action: str, params: Params) -> Answer:
        handler = self._handlers.get(action)
        if handler is None:
            raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service.")
        if params.pop("DryRun", False):
            raise Ec2Error(
                "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", status=412
            )
        return handler(params)

    # ---------------------------------------------------------- output helpers

    def _groups_out(self, group_ids: Iterable[str]) -> list[dict[str, str]]:
        out = []
        for gid in group_ids:
            try:
                name = self.cloud.security_group(gid).name
            except Ec2Error:
                name = ""
            out.append({"GroupId": gid, "GroupName": name})
        return out

    def _eni_out(self, eni: Eni) -> Answer:
        region = self.cloud.region
        out: Answer = {
            "NetworkInterfaceId": eni.id,
            "SubnetId": eni.subnet_id,
            "VpcId": eni.vpc_id,
            "AvailabilityZone": eni.az,
            "Description": eni.description,
            "Groups": self._groups_out(eni.security_group_ids),
            "InterfaceType": eni.interface_type,
            "MacAddress": eni.mac,
            "OwnerId": self.cloud.account,
            "PrivateDnsName": _dns_name(eni.primary_ip, region),
            "PrivateIpAddress": eni.primary_ip,
            "PrivateIpAddresses": [
                {
                    "Primary": a == eni.primary_ip,
                    "PrivateIpAddress": a,
                    "PrivateDnsName": _dns_name(a, region),
                }
                for a in eni.private_ips
            ],
            "Ipv4Prefixes": [{"Ipv4Prefix": p} for p in eni.prefixes] or None,
            "RequesterManaged": False,
            "SourceDestCheck": eni.source_dest_check,
            "Status": eni.status,
            "TagSet": _tags_out(eni.tags),
        }
        if eni.attachment is not None:
            att = eni.attachment
            out["Attachment"] = {
                "AttachTime": att.attach_time,
                "AttachmentId": att.id,
                "DeleteOnTermination": att.delete_on_termination,
                "DeviceIndex": att.device_index,
                "NetworkCardIndex": att.network_card_index,
                "InstanceId": att.instance_id,
                "InstanceOwnerId": self.cloud.account,
                "Status": att.status,
            }
        return out

    def _instance_eni_out(self, eni: Eni) -> Answer:
        full = self._eni_out(eni)
        att = full["Attachment"]
        return {
            "Attachment": {
                k: att[k]
                for k in (
                    "AttachTime",
                    "AttachmentId",
                    "DeleteOnTermination",
                    "DeviceIndex",
                    "NetworkCardIndex",
                    "Status",
                )
            },
            "Description": full["Description"],
            "Groups": full["Groups"],
            "MacAddress": full["MacAddress"],
            "NetworkInterfaceId": full["NetworkInterfaceId"],
            "OwnerId": full["OwnerId"],
            "PrivateDnsName": full["PrivateDnsName"],
            "PrivateIpAddress": full["PrivateIpAddress"],
            "PrivateIpAddresses": full["PrivateIpAddresses"],
            "Ipv4Prefixes": full["Ipv4Prefixes"],
            "SourceDestCheck": full["SourceDestCheck"],
            "Status": full["Status"],
            "SubnetId": full["SubnetId"],
            "VpcId": full["VpcId"],
            "InterfaceType": full["InterfaceType"],
        }

    def _instance_out(self, inst: Instance, enis: Sequence[Eni]) -> Answer:
        limits = instance_limits(inst.instance_type)
        primary = next((e for e in enis if e.id == inst.primary_eni_id), None)
        running = inst.state == "running"
        out: Answer = {
            "InstanceId": inst.id,
            "ImageId": inst.image_id,
            "State": {"Code": 16 if running else 48, "Name": inst.state},
            "InstanceType": inst.instance_type,
            "LaunchTime": inst.launch_time,
            "Placement": {"AvailabilityZone": inst.az, "Tenancy": "default"},
            "Architecture": "x86_64",
            "RootDeviceType": "ebs",
            "VirtualizationType": "hvm",
            "AmiLaunchIndex": 0,
            "Hypervisor": "xen" if limits.hypervisor == "xen" else "nitro" if limits.hypervisor else None,
            "Tags": _tags_out(inst.tags),
            "NetworkInterfaces": [self._instance_eni_out(e) for e in enis],
        }
        if running:
            out.update(
                {
                    "SubnetId": inst.subnet_id,
                    "VpcId": inst.vpc_id,
                }
            )
        if primary is not None:
            out.update(
                {
                    "PrivateIpAddress": primary.primary_ip,
                    "PrivateDnsName": _dns_name(primary.primary_ip, self.cloud.region),
                    "SourceDestCheck": primary.source_dest_check,
                    "SecurityGroups": self._groups_out(primary.security_group_ids),
                }
            )
        return out

    def _subnet_out(self, s: Subnet) -> Answer:
        return {
            "SubnetId": s.id,
            "VpcId": s.vpc_id,
            "CidrBlock": s.cidr,
            "AvailabilityZone": s.az,
            "AvailableIpAddressCount": self.cloud.available_ip_count(s.id),
            "State": "available",
            "DefaultForAz": False,
            "MapPublicIpOnLaunch": False,
            "OwnerId": self.cloud.account,
            "SubnetArn": f"arn:aws:ec2:{self.cloud.region}:{self.cloud.account}:subnet/{s.id}",
            "Tags": _tags_out(s.tags),
        }

    def _vpc_out(self, v: Vpc) -> Answer:
        return {
            "VpcId": v.id,
            "CidrBlock": v.cidr,
            "State": "available",
            "OwnerId": self.cloud.account,
            "InstanceTenancy": "default",
            "IsDefault": False,
            "DhcpOptionsId": "dopt-0vpcnetlab000000",
            "CidrBlockAssociationSet": [
                {
                    "AssociationId": v.id.replace("vpc-", "vpc-cidr-assoc-"),
                    "CidrBlock": v.cidr,
                    "CidrBlockState": {"State": "associated"},
                }
            ],
            "Tags": _tags_out(v.tags),
        }

    # ---------------------------------------------------------- describes

    _ENI_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "attachment.instance-id",
            "attachment.attachment-id",
            "attachment.status",
            "attachment.device-index",
            "attachment.delete-on-termination",
            "availability-zone",
            "description",
            "group-id",
            "interface-type",
            "mac-address",
            "network-interface-id",
            "owner-id",
            "private-ip-address",
            "addresses.private-ip-address",
            "ipv4-prefix",
            "requester-managed",
            "source-dest-check",
            "status",
            "subnet-id",
            "vpc-id",
        }
    )

    def _eni_fields(self, e: Eni) -> Fields:
        att = e.attachment
        fields: Fields = {
            "availability-zone": [e.az],
            "description": [e.description],
            "group-id": list(e.security_group_ids),
            "interface-type": [e.interface_type],
            "mac-address": [e.mac],
            "network-interface-id": [e.id],
            "owner-id": [self.cloud.account],
            "private-ip-address": list(e.private_ips),
            "addresses.private-ip-address": list(e.private_ips),
            "ipv4-prefix": list(e.prefixes),
            "requester-managed": ["false"],
            "source-dest-check": [str(e.source_dest_check).lower()],
            "status": [e.status],
            "subnet-id": [e.subnet_id],
            "vpc-id": [e.vpc_id],
        }
        if att is not None:
            fields.update(
                {
                    "attachment.instance-id": [att.instance_id],
                    "attachment.attachment-id": [att.id],
                    "attachment.status": [att.status],
                    "attachment.device-index": [str(att.device_index)],
                    "attachment.delete-on-termination": [str(att.delete_on_termination).lower()],
                }
            )
        else:
            fields["attachment.status"] = ["detached"]
        return fields

    def _DescribeNetworkInterfaces(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self._ENI_FILTERS)
        ids = p.get("NetworkInterfaceIds", [])
        enis = by_ids(self.cloud.enis(), lambda e: e.id, ids, "eni")
        enis = [e for e in enis if matches(self._eni_fields(e), e.tags, filters, self._ENI_FILTERS)]
        page, token = paginate(enis, lambda e: e.seq, p, bool(ids), "eni", (5, 1000))
        return {"NetworkInterfaces": [self._eni_out(e) for e in page], "NextToken": token}

    _INSTANCE_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "instance-id",
            "instance-state-name",
            "instance-state-code",
            "instance-type",
            "availability-zone",
            "subnet-id",
            "vpc-id",
            "private-ip-address",
            "network-interface.network-interface-id",
            "network-interface.addresses.private-ip-address",
        }
    )

    def _DescribeInstances(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self._INSTANCE_FILTERS)
        ids = p.get("InstanceIds", [])
        insts = by_ids(self.cloud.instances(), lambda i: i.id, ids, "instance")
        enis_by_instance: dict[str, list[Eni]] = {}
        for e in self.cloud.enis():
            if e.attachment is not None:
                enis_by_instance.setdefault(e.attachment.instance_id, []).append(e)
        for enis in enis_by_instance.values():
            enis.sort(
                key=lambda e: (
                    (e.attachment.network_card_index, e.attachment.device_index) if e.attachment else (0, 0)
                )
            )
        selected = []
        for inst in insts:
            enis = enis_by_instance.get(inst.id, [])
            primary = next((e for e in enis if e.id == inst.primary_eni_id), None)
            fields: Fields = {
                "instance-id": [inst.id],
                "instance-state-name": [inst.state],
                "instance-state-code": ["16" if inst.state == "running" else "48"],
                "instance-type": [inst.instance_type],
                "availability-zone": [inst.az],
                "subnet-id": [inst.subnet_id],
                "vpc-id": [inst.vpc_id],
                "private-ip-address": [primary.primary_ip] if primary else [],
                "network-interface.network-interface-id": [e.id for e in enis],
                "network-interface.addresses.private-ip-address": [a for e in enis for a in e.private_ips],
            }
            if matches(fields, inst.tags, filters, self._INSTANCE_FILTERS):
                selected.append((inst, enis))
        page, token = paginate(selected, lambda pair: pair[0].seq, p, bool(ids), "instance", (5, 1000))
        reservations = [
            {
                "ReservationId": inst.id.replace("i-", "r-"),
                "OwnerId": self.cloud.account,
                "Groups": [],
                "Instances": [self._instance_out(inst, enis)],
            }
            for inst, enis in page
        ]
        return {"Reservations": reservations, "NextToken": token}

    _SUBNET_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "subnet-id",
            "vpc-id",
            "availability-zone",
            "cidr-block",
            "cidr",
            "cidrBlock",
            "state",
            "owner-id",
        }
    )

    def _DescribeSubnets(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self._SUBNET_FILTERS)
        ids = p.get("SubnetIds", [])
        subnets = by_ids(self.cloud.subnets(), lambda s: s.id, ids, "subnet")
        selected = []
        for s in subnets:
            fields: Fields = {
                "subnet-id": [s.id],
                "vpc-id": [s.vpc_id],
                "availability-zone": [s.az],
                "cidr-block": [s.cidr],
                "cidr": [s.cidr],
                "cidrBlock": [s.cidr],
                "state": ["available"],
                "owner-id": [self.cloud.account],
            }
            if matches(fields, s.tags, filters, self._SUBNET_FILTERS):
                selected.append(s)
        page, token = paginate(selected, lambda s: s.seq, p, bool(ids), "subnet", (5, 1000))
        return {"Subnets": [self._subnet_out(s) for s in page], "NextToken": token}

    _VPC_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {"vpc-id", "cidr", "cidr-block-association.cidr-block", "state", "owner-id", "is-default"}
    )

    def _DescribeVpcs(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self._VPC_FILTERS)
        ids = p.get("VpcIds", [])
        vpcs = by_ids(self.cloud.vpcs(), lambda v: v.id, ids, "vpc")
        selected = []
        for v in vpcs:
            fields: Fields = {
                "vpc-id": [v.id],
                "cidr": [v.cidr],
                "cidr-block-association.cidr-block": [v.cidr],
                "state": ["available"],
                "owner-id": [self.cloud.account],
                "is-default": ["false"],
            }
            if matches(fields, v.tags, filters, self._VPC_FILTERS):
                selected.append(v)
        page, token = paginate(selected, lambda v: v.seq, p, bool(ids), "vpc", (5, 1000))
        return {"Vpcs": [self._vpc_out(v) for v in page], "NextToken": token}

    _TYPE_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "instance-type",
            "hypervisor",
            "bare-metal",
            "network-info.ipv4-addresses-per-interface",
            "network-info.maximum-network-interfaces",
        }
    )

    def _DescribeInstanceTypes(self, p: Params) -> Answer:
        names: list[str] = p.get("InstanceTypes", [])
        for n in names:
            try:
                _limits(n)
            except UnknownInstanceType:
                raise Ec2Error(
                    "InvalidInstanceType", f"The following supplied instance types do not exist: [{n}]"
                ) from None
        filters = p.get("Filters", [])
        check_filters(filters, self._TYPE_FILTERS)
        chosen = sorted(set(names)) if names else all_instance_types()
        numbered = []
        for number, name in enumerate(chosen, 1):
            lim = _limits(name)
            fields: Fields = {
                "instance-type": [name],
                "hypervisor": [lim.hypervisor] if lim.hypervisor else [],
                "bare-metal": [str(lim.bare_metal).lower()],
                "network-info.ipv4-addresses-per-interface": [str(lim.ipv4_per_eni)],
                "network-info.maximum-network-interfaces": [str(lim.max_enis)],
            }
            if matches(fields, {}, filters, self._TYPE_FILTERS):
                numbered.append((number, name))
        page, token = paginate(numbered, lambda pair: pair[0], p, False, "itype", (5, 100))
        return {"InstanceTypes": [_instance_type_out(name) for _, name in page], "NextToken": token}

    # ---------------------------------------------------------- network interfaces

    def _CreateNetworkInterface(self, p: Params) -> Answer:
        subnet_id = _required(p, "SubnetId")
        tags: dict[str, str] = {}
        for spec in p.get("TagSpecifications", []):
            rtype = spec.get("ResourceType")
            if rtype != "network-interface":
                raise invalid_value(f"'{rtype}' is not a valid taggable resource type for this operation.")
            for t in spec.get("Tags", []):
                tags[_required(t, "Key")] = t.get("Value", "")
        primary = p.get("PrivateIpAddress")
        secondaries: list[str] = []
        for item in p.get("PrivateIpAddresses", []):
            address = _required(item, "PrivateIpAddress")
            if item.get("Primary"):
                if primary is not None and primary != address:
                    raise Ec2Error(
                        "InvalidParameterCombination", "Only one primary private IP address can be given"
                    )
                primary = address
            elif address != primary:
                secondaries.append(address)
        if "InterfaceType" in p and p["InterfaceType"] != "interface":
            raise invalid_value(
                f"InterfaceType {p['InterfaceType']!r} is not supported by the lab (only 'interface')"
            )
        eni = self.cloud.create_network_interface(
            subnet_id,
            description=p.get("Description", ""),
            security_group_ids=p.get("Groups", []),
            tags=tags,
            private_ip=primary,
            secondary_ips=secondaries,
            secondary_count=p.get("SecondaryPrivateIpAddressCount", 0),
            prefix_count=p.get("Ipv4PrefixCount", 0),
            prefixes=[_required(x, "Ipv4Prefix") for x in p.get("Ipv4Prefixes", [])],
        )
        return {"NetworkInterface": self._eni_out(eni), "ClientToken": p.get("ClientToken")}

    def _AttachNetworkInterface(self, p: Params) -> Answer:
        card = p.get("NetworkCardIndex", 0)
        attachment_id = self.cloud.attach_network_interface(
            _required(p, "NetworkInterfaceId"), _required(p, "InstanceId"), _required(p, "DeviceIndex"), card
        )
        return {"AttachmentId": attachment_id, "NetworkCardIndex": card}

    def _DetachNetworkInterface(self, p: Params) -> Answer:
        self.cloud.detach_network_interface(_required(p, "AttachmentId"), bool(p.get("Force", False)))
        return {}

    def _DeleteNetworkInterface(self, p: Params) -> Answer:
        self.cloud.delete_network_interface(_required(p, "NetworkInterfaceId"))
        return {}

    def _AssignPrivateIpAddresses(self, p: Params) -> Answer:
        eni_id = _required(p, "NetworkInterfaceId")
        addresses, prefixes = self.cloud.assign_private_ip_addresses(
            eni_id,
            secondary_count=p.get("SecondaryPrivateIpAddressCount", 0),
            addresses=p.get("PrivateIpAddresses", []),
            prefix_count=p.get("Ipv4PrefixCount", 0),
            prefixes=p.get("Ipv4Prefixes", []),
            allow_reassignment=bool(p.get("AllowReassignment", False)),
        )
        return {
            "NetworkInterfaceId": eni_id,
            "AssignedPrivateIpAddresses": [{"PrivateIpAddress": a} for a in addresses] or None,
            "AssignedIpv4Prefixes": [{"Ipv4Prefix": x} for x in prefixes] or None,
        }

    def _UnassignPrivateIpAddresses(self, p: Params) -> Answer:
        self.cloud.unassign_private_ip_addresses(
            _required(p, "NetworkInterfaceId"),
            addresses=p.get("PrivateIpAddresses", []),
            prefixes=p.get("Ipv4Prefixes", []),
        )
        return {}

    def _ModifyNetworkInterfaceAttribute(self, p: Params) -> Answer:
        eni_id = _required(p, "NetworkInterfaceId")
        sdc = p.get("SourceDestCheck")
        desc = p.get("Description")
        att = p.get("Attachment")
        self.cloud.modify_network_interface_attribute(
            eni_id,
            source_dest_check=None if sdc is None else bool(_required(sdc, "Value")),
            security_group_ids=p.get("Groups"),
            description=None if desc is None else str(desc.get("Value", "")),
            attachment_id=None if att is None else att.get("AttachmentId"),
            delete_on_termination=None if att is None else att.get("DeleteOnTermination"),
        )
        return {}

    # ---------------------------------------------------------- tags

    def _CreateTags(self, p: Params) -> Answer:
        resources = _required(p, "Resources")
        tags = {_required(t, "Key"): t.get("Value", "") for t in _required(p, "Tags")}
        self.cloud.create_tags(resources, tags)
        return {}

    def _DeleteTags(self, p: Params) -> Answer:
        resources = _required(p, "Resources")
        tags = [(_required(t, "Key"), t.get("Value")) for t in p.get("Tags", [])]
        self.cloud.delete_tags(resources, tags)
        return {}


def _instance_type_out(name: str) -> Answer:
    lim = _limits(name)
    cards = lim.enis_per_card or (lim.max_enis,)
    out: Answer = {
        "InstanceType": name,
        "CurrentGeneration": True,
        "BareMetal": lim.bare_metal,
        "VCpuInfo": {"DefaultVCpus": lim.vcpus},
        "NetworkInfo": {
            "MaximumNetworkInterfaces": lim.max_enis,
            "Ipv4AddressesPerInterface": lim.ipv4_per_eni,
            "Ipv6AddressesPerInterface": lim.ipv4_per_eni,
            "Ipv6Supported": True,
            "MaximumNetworkCards": len(cards),
            "DefaultNetworkCardIndex": lim.default_card,
            "NetworkCards": [
                {"NetworkCardIndex": i, "MaximumNetworkInterfaces": n} for i, n in enumerate(cards)
            ],
        },
    }
    if lim.hypervisor:
        out["Hypervisor"] = lim.hypervisor
    return out
