"""The EC2 operations of `Ec2Api` as EC2 Query actions: request parameters out, answers parsed in.

One home for how vpcnet speaks EC2 (boto3's member names, paging, the answer shapes), whatever carries the
request: `Boto3Ec2` sends it over HTTP with boto3; the simulated cloud of `vpcnet.testing` hands it to the
lab's EC2 engine in-process. A subclass supplies `_call`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from vpcnet.cloud.ec2 import Attachment, Ec2Error, InstanceTypeInfo, NetworkInterface, Subnet

PAGE_SIZE = 100


class Ec2QueryClient(ABC):
    """Implements `Ec2Api` over `_call(action, **params) -> answer` (boto3's member names both ways)."""

    @abstractmethod
    async def _call(self, api: str, **params: Any) -> dict[str, Any]:
        """Run one EC2 action (with the subclass's retries); raise Ec2Error on an error answer."""

    async def call(self, api: str, **params: Any) -> dict[str, Any]:
        """One action by name, for callers that speak an area of EC2 of their own (cloud/branch_ec2.py)."""
        return await self._call(api, **params)

    # --- reads ---

    async def describe_instance_type(self, instance_type: str) -> InstanceTypeInfo:
        out = await self._call("DescribeInstanceTypes", InstanceTypes=[instance_type])
        rows = out.get("InstanceTypes", [])
        if not rows:
            raise Ec2Error("DescribeInstanceTypes", "InvalidInstanceType", f"unknown type {instance_type}")
        row = rows[0]
        net = row.get("NetworkInfo", {})
        cards = [int(c.get("MaximumNetworkInterfaces", 0)) for c in net.get("NetworkCards", [])]
        return InstanceTypeInfo(
            name=instance_type,
            vcpus=int(row.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
            max_enis=int(net["MaximumNetworkInterfaces"]),
            ipv4_per_eni=int(net["Ipv4AddressesPerInterface"]),
            hypervisor=str(row.get("Hypervisor", "")),
            bare_metal=bool(row.get("BareMetal", False)),
            enis_per_card=tuple(cards),
        )

    async def describe_subnet(self, subnet_id: str) -> Subnet:
        out = await self._call("DescribeSubnets", SubnetIds=[subnet_id])
        rows = out.get("Subnets", [])
        if not rows:
            raise Ec2Error("DescribeSubnets", "InvalidSubnetID.NotFound", f"no subnet {subnet_id}")
        s = rows[0]
        return Subnet(
            subnet_id=s["SubnetId"],
            cidr=IPv4Network(s["CidrBlock"]),
            availability_zone=s.get("AvailabilityZone", ""),
            vpc_id=s.get("VpcId", ""),
            available_ips=int(s.get("AvailableIpAddressCount", 0)),
        )

    async def describe_network_interfaces(
        self, *, eni_ids: Sequence[str] = (), filters: Mapping[str, Sequence[str]] | None = None
    ) -> list[NetworkInterface]:
        params: dict[str, Any] = {}
        if eni_ids:
            params["NetworkInterfaceIds"] = list(eni_ids)
        else:
            params["MaxResults"] = PAGE_SIZE  # pages are only allowed without explicit ids
        if filters:
            params["Filters"] = [{"Name": k, "Values": list(v)} for k, v in filters.items()]
        out: list[NetworkInterface] = []
        while True:
            page = await self._call("DescribeNetworkInterfaces", **params)
            out.extend(eni_from_answer(row) for row in page.get("NetworkInterfaces", []))
            token = page.get("NextToken")
            if not token:
                return out
            params["NextToken"] = token

    # --- writes ---

    async def create_network_interface(
        self,
        *,
        subnet_id: str,
        description: str,
        security_groups: Sequence[str],
        tags: Mapping[str, str],
        secondary_ip_count: int = 0,
        prefix_count: int = 0,
    ) -> NetworkInterface:
        params: dict[str, Any] = {
            "SubnetId": subnet_id,
            "Description": description,
            "TagSpecifications": [
                {
                    "ResourceType": "network-interface",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        }
        if security_groups:
            params["Groups"] = list(security_groups)
        if secondary_ip_count:
            params["SecondaryPrivateIpAddressCount"] = secondary_ip_count
        if prefix_count:
            params["Ipv4PrefixCount"] = prefix_count
        out = await self._call("CreateNetworkInterface", **params)
        return eni_from_answer(out["NetworkInterface"])

    async def attach_network_interface(self, eni_id: str, instance_id: str, device_index: int) -> str:
        out = await self._call(
            "AttachNetworkInterface",
            NetworkInterfaceId=eni_id,
            InstanceId=instance_id,
            DeviceIndex=device_index,
        )
        return str(out["AttachmentId"])

    async def set_delete_on_termination(self, eni_id: str, attachment_id: str) -> None:
        await self._call(
            "ModifyNetworkInterfaceAttribute",
            NetworkInterfaceId=eni_id,
            Attachment={"AttachmentId": attachment_id, "DeleteOnTermination": True},
        )

    async def disable_source_dest_check(self, eni_id: str) -> None:
        """Let the ENI send and receive addresses it does not own (Calico mode's pod addresses)."""
        await self._call(
            "ModifyNetworkInterfaceAttribute", NetworkInterfaceId=eni_id, SourceDestCheck={"Value": False}
        )

    async def detach_network_interface(self, attachment_id: str, *, force: bool = False) -> None:
        await self._call("DetachNetworkInterface", AttachmentId=attachment_id, Force=force)

    async def delete_network_interface(self, eni_id: str) -> None:
        await self._call("DeleteNetworkInterface", NetworkInterfaceId=eni_id)

    async def assign_private_ips(
        self, eni_id: str, *, count: int = 0, prefix_count: int = 0
    ) -> tuple[list[IPv4Address], list[IPv4Network]]:
        params: dict[str, Any] = {"NetworkInterfaceId": eni_id}
        if count:
            params["SecondaryPrivateIpAddressCount"] = count
        if prefix_count:
            params["Ipv4PrefixCount"] = prefix_count
        out = await self._call("AssignPrivateIpAddresses", **params)
        addrs = [IPv4Address(a["PrivateIpAddress"]) for a in out.get("AssignedPrivateIpAddresses", [])]
        prefixes = [IPv4Network(p["Ipv4Prefix"]) for p in out.get("AssignedIpv4Prefixes", [])]
        return addrs, prefixes

    async def unassign_private_ips(
        self, eni_id: str, *, addresses: Sequence[IPv4Address] = (), prefixes: Sequence[IPv4Network] = ()
    ) -> None:
        params: dict[str, Any] = {"NetworkInterfaceId": eni_id}
        if addresses:
            params["PrivateIpAddresses"] = [str(a) for a in addresses]
        if prefixes:
            params["Ipv4Prefixes"] = [str(p) for p in prefixes]
        await self._call("UnassignPrivateIpAddresses", **params)

    async def assign_ipv6(
        self, eni_id: str, *, count: int = 0, prefix_count: int = 0
    ) -> tuple[list[IPv6Address], list[IPv6Network]]:
        params: dict[str, Any] = {"NetworkInterfaceId": eni_id}
        if count:
            params["Ipv6AddressCount"] = count
        if prefix_count:
            params["Ipv6PrefixCount"] = prefix_count
        out = await self._call("AssignIpv6Addresses", **params)
        # boto3's shapes: lists of strings (unlike AssignPrivateIpAddresses' list of structures)
        addrs = [IPv6Address(a) for a in out.get("AssignedIpv6Addresses", [])]
        prefixes = [IPv6Network(p) for p in out.get("AssignedIpv6Prefixes", [])]
        return addrs, prefixes

    async def unassign_ipv6(
        self, eni_id: str, *, addresses: Sequence[IPv6Address] = (), prefixes: Sequence[IPv6Network] = ()
    ) -> None:
        params: dict[str, Any] = {"NetworkInterfaceId": eni_id}
        if addresses:
            params["Ipv6Addresses"] = [str(a) for a in addresses]
        if prefixes:
            params["Ipv6Prefixes"] = [str(p) for p in prefixes]
        await self._call("UnassignIpv6Addresses", **params)

    async def create_tags(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        await self._call(
            "CreateTags",
            Resources=list(resource_ids),
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )


def eni_from_answer(row: Mapping[str, Any]) -> NetworkInterface:
    primary = IPv4Address(row["PrivateIpAddress"])
    secondary = tuple(
        IPv4Address(a["PrivateIpAddress"])
        for a in row.get("PrivateIpAddresses", [])
        if not a.get("Primary") and IPv4Address(a["PrivateIpAddress"]) != primary
    )
    prefixes = tuple(IPv4Network(p["Ipv4Prefix"]) for p in row.get("Ipv4Prefixes", []))
    ipv6 = tuple(IPv6Address(a["Ipv6Address"]) for a in row.get("Ipv6Addresses", []))
    ipv6_prefixes = tuple(IPv6Network(p["Ipv6Prefix"]) for p in row.get("Ipv6Prefixes", []))
    att = row.get("Attachment")
    attachment = None
    if att and att.get("InstanceId"):
        attachment = Attachment(
            attachment_id=str(att.get("AttachmentId", "")),
            instance_id=str(att["InstanceId"]),
            device_index=int(att.get("DeviceIndex", 0)),
            status=str(att.get("Status", "attached")),
            network_card_index=int(att.get("NetworkCardIndex", 0)),
        )
    tags = {t["Key"]: t.get("Value", "") for t in row.get("TagSet", row.get("Tags", []))}
    return NetworkInterface(
        eni_id=row["NetworkInterfaceId"],
        mac=str(row.get("MacAddress", "")).lower(),
        subnet_id=row.get("SubnetId", ""),
        vpc_id=row.get("VpcId", ""),
        availability_zone=row.get("AvailabilityZone", ""),
        status=row.get("Status", ""),
        primary_ip=primary,
        secondary_ips=secondary,
        prefixes=prefixes,
        ipv6_addresses=ipv6,
        ipv6_prefixes=ipv6_prefixes,
        description=row.get("Description", ""),
        tags=tags,
        attachment=attachment,
        security_groups=tuple(g["GroupId"] for g in row.get("Groups", [])),
        interface_type=str(row.get("InterfaceType", "interface")),
    )
