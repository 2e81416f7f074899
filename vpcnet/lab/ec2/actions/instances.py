"""Describe actions over instances, instance types, VPCs and subnets: filters and pagination."""

from __future__ import annotations

from typing import ClassVar

from vpcnet.ipam.limits import UnknownInstanceType, all_instance_types
from vpcnet.lab.ec2.actions.answers import Answers, instance_type_out, limits
from vpcnet.lab.ec2.actions.common import Answer, Handler, Params
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.listing import Fields, by_ids, check_filters, matches, paginate
from vpcnet.lab.ec2.model import Eni
from vpcnet.lab.ec2.state import Cloud


class InstanceActions:
    INSTANCE_FILTERS: ClassVar[frozenset[str]] = frozenset(
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
    SUBNET_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "subnet-id",
            "vpc-id",
            "availability-zone",
            "cidr-block",
            "cidr",
            "cidrBlock",
            "ipv6-cidr-block-association.ipv6-cidr-block",
            "state",
            "owner-id",
        }
    )
    VPC_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {"vpc-id", "cidr", "cidr-block-association.cidr-block", "state", "owner-id", "is-default"}
    )
    TYPE_FILTERS: ClassVar[frozenset[str]] = frozenset(
        {
            "instance-type",
            "hypervisor",
            "bare-metal",
            "network-info.ipv4-addresses-per-interface",
            "network-info.maximum-network-interfaces",
        }
    )

    def __init__(self, cloud: Cloud, answers: Answers) -> None:
        self.cloud = cloud
        self.answers = answers

    def handlers(self) -> dict[str, Handler]:
        return {
            "DescribeInstances": self.describe_instances,
            "DescribeInstanceTypes": self.describe_instance_types,
            "DescribeVpcs": self.describe_vpcs,
            "DescribeSubnets": self.describe_subnets,
        }

    def _enis_by_instance(self) -> dict[str, list[Eni]]:
        """Attached ENIs per instance, by (network card, device index)."""
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
        return enis_by_instance

    def describe_instances(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.INSTANCE_FILTERS)
        ids = p.get("InstanceIds", [])
        insts = by_ids(self.cloud.instances(), lambda i: i.id, ids, "instance")
        enis_by_instance = self._enis_by_instance()
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
            if matches(fields, inst.tags, filters, self.INSTANCE_FILTERS):
                selected.append((inst, enis))
        page, token = paginate(selected, lambda pair: pair[0].seq, p, bool(ids), "instance", (5, 1000))
        reservations = [
            {
                "ReservationId": inst.id.replace("i-", "r-"),
                "OwnerId": self.cloud.account,
                "Groups": [],
                "Instances": [self.answers.instance(inst, enis)],
            }
            for inst, enis in page
        ]
        return {"Reservations": reservations, "NextToken": token}

    def describe_subnets(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.SUBNET_FILTERS)
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
                "ipv6-cidr-block-association.ipv6-cidr-block": [s.ipv6_cidr] if s.ipv6_cidr else [],
                "state": ["available"],
                "owner-id": [self.cloud.account],
            }
            if matches(fields, s.tags, filters, self.SUBNET_FILTERS):
                selected.append(s)
        page, token = paginate(selected, lambda s: s.seq, p, bool(ids), "subnet", (5, 1000))
        return {"Subnets": [self.answers.subnet(s) for s in page], "NextToken": token}

    def describe_vpcs(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.VPC_FILTERS)
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
            if matches(fields, v.tags, filters, self.VPC_FILTERS):
                selected.append(v)
        page, token = paginate(selected, lambda v: v.seq, p, bool(ids), "vpc", (5, 1000))
        return {"Vpcs": [self.answers.vpc(v) for v in page], "NextToken": token}

    def describe_instance_types(self, p: Params) -> Answer:
        names: list[str] = p.get("InstanceTypes", [])
        for n in names:
            try:
                limits(n)
            except UnknownInstanceType:
                raise Ec2Error(
                    "InvalidInstanceType", f"The following supplied instance types do not exist: [{n}]"
                ) from None
        filters = p.get("Filters", [])
        check_filters(filters, self.TYPE_FILTERS)
        chosen = sorted(set(names)) if names else all_instance_types()
        numbered = []
        for number, name in enumerate(chosen, 1):
            lim = limits(name)
            fields: Fields = {
                "instance-type": [name],
                "hypervisor": [lim.hypervisor] if lim.hypervisor else [],
                "bare-metal": [str(lim.bare_metal).lower()],
                "network-info.ipv4-addresses-per-interface": [str(lim.ipv4_per_eni)],
                "network-info.maximum-network-interfaces": [str(lim.max_enis)],
            }
            if matches(fields, {}, filters, self.TYPE_FILTERS):
                numbered.append((number, name))
        page, token = paginate(numbered, lambda pair: pair[0], p, False, "itype", (5, 100))
        return {"InstanceTypes": [instance_type_out(name) for _, name in page], "NextToken": token}
