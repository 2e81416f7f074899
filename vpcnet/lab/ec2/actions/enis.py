"""Network-interface actions: Describe/Create/Attach/Detach/DeleteNetworkInterface and
ModifyNetworkInterfaceAttribute (InterfaceType trunk and branch included; their association actions are in
the `trunking` group)."""

from __future__ import annotations

from typing import ClassVar

from vpcnet.lab.ec2.actions.answers import Answers
from vpcnet.lab.ec2.actions.common import Answer, Handler, Params, required
from vpcnet.lab.ec2.errors import Ec2Error, invalid_value
from vpcnet.lab.ec2.listing import Fields, by_ids, check_filters, matches, paginate
from vpcnet.lab.ec2.model import Eni
from vpcnet.lab.ec2.state import Cloud


class EniActions:
    FILTERS: ClassVar[frozenset[str]] = frozenset(
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
            "ipv6-addresses.ipv6-address",
            "ipv6-prefix",
            "requester-managed",
            "source-dest-check",
            "status",
            "subnet-id",
            "vpc-id",
        }
    )

    def __init__(self, cloud: Cloud, answers: Answers) -> None:
        self.cloud = cloud
        self.answers = answers

    def handlers(self) -> dict[str, Handler]:
        return {
            "DescribeNetworkInterfaces": self.describe_network_interfaces,
            "CreateNetworkInterface": self.create_network_interface,
            "AttachNetworkInterface": self.attach_network_interface,
            "DetachNetworkInterface": self.detach_network_interface,
            "DeleteNetworkInterface": self.delete_network_interface,
            "ModifyNetworkInterfaceAttribute": self.modify_network_interface_attribute,
        }

    def _fields(self, e: Eni) -> Fields:
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
            "ipv6-addresses.ipv6-address": list(e.ipv6_addresses),
            "ipv6-prefix": list(e.ipv6_prefixes),
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

    def describe_network_interfaces(self, p: Params) -> Answer:
        filters = p.get("Filters", [])
        check_filters(filters, self.FILTERS)
        ids = p.get("NetworkInterfaceIds", [])
        enis = by_ids(self.cloud.enis(), lambda e: e.id, ids, "eni")
        enis = [e for e in enis if matches(self._fields(e), e.tags, filters, self.FILTERS)]
        page, token = paginate(enis, lambda e: e.seq, p, bool(ids), "eni", (5, 1000))
        return {"NetworkInterfaces": [self.answers.eni(e) for e in page], "NextToken": token}

    def create_network_interface(self, p: Params) -> Answer:
        subnet_id = required(p, "SubnetId")
        tags: dict[str, str] = {}
        for spec in p.get("TagSpecifications", []):
            rtype = spec.get("ResourceType")
            if rtype != "network-interface":
                raise invalid_value(f"'{rtype}' is not a valid taggable resource type for this operation.")
            for t in spec.get("Tags", []):
                tags[required(t, "Key")] = t.get("Value", "")
        primary = p.get("PrivateIpAddress")
        secondaries: list[str] = []
        for item in p.get("PrivateIpAddresses", []):
            address = required(item, "PrivateIpAddress")
            if item.get("Primary"):
                if primary is not None and primary != address:
                    raise Ec2Error(
                        "InvalidParameterCombination", "Only one primary private IP address can be given"
                    )
                primary = address
            elif address != primary:
                secondaries.append(address)
        eni = self.cloud.create_network_interface(
            subnet_id,
            description=p.get("Description", ""),
            security_group_ids=p.get("Groups", []),
            tags=tags,
            private_ip=primary,
            secondary_ips=secondaries,
            secondary_count=p.get("SecondaryPrivateIpAddressCount", 0),
            prefix_count=p.get("Ipv4PrefixCount", 0),
            prefixes=[required(x, "Ipv4Prefix") for x in p.get("Ipv4Prefixes", [])],
            interface_type=str(p.get("InterfaceType", "interface")),
        )
        return {"NetworkInterface": self.answers.eni(eni), "ClientToken": p.get("ClientToken")}

    def attach_network_interface(self, p: Params) -> Answer:
        card = p.get("NetworkCardIndex", 0)
        attachment_id = self.cloud.attach_network_interface(
            required(p, "NetworkInterfaceId"), required(p, "InstanceId"), required(p, "DeviceIndex"), card
        )
        return {"AttachmentId": attachment_id, "NetworkCardIndex": card}

    def detach_network_interface(self, p: Params) -> Answer:
        self.cloud.detach_network_interface(required(p, "AttachmentId"), bool(p.get("Force", False)))
        return {}

    def delete_network_interface(self, p: Params) -> Answer:
        self.cloud.delete_network_interface(required(p, "NetworkInterfaceId"))
        return {}

    def modify_network_interface_attribute(self, p: Params) -> Answer:
        eni_id = required(p, "NetworkInterfaceId")
        sdc = p.get("SourceDestCheck")
        desc = p.get("Description")
        att = p.get("Attachment")
        self.cloud.modify_network_interface_attribute(
            eni_id,
            source_dest_check=None if sdc is None else bool(required(sdc, "Value")),
            security_group_ids=p.get("Groups"),
            description=None if desc is None else str(desc.get("Value", "")),
            attachment_id=None if att is None else att.get("AttachmentId"),
            delete_on_termination=None if att is None else att.get("DeleteOnTermination"),
        )
        return {}
