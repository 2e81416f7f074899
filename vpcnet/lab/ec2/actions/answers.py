"""How the engine's records appear in EC2 answers (boto3's member names, as botocore's model renders them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache

from vpcnet.ipam.limits import instance_limits
from vpcnet.lab.ec2.actions.common import Answer
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.model import Eni, Instance, Subnet, Vpc
from vpcnet.lab.ec2.state import Cloud

# The instance-type table is static: remember each row once (DescribeInstanceTypes walks all of them).
limits = cache(instance_limits)

# The members of an ENI's answer that DescribeInstances repeats under each instance's NetworkInterfaces.
_INSTANCE_ENI_MEMBERS = (
    "Description",
    "Groups",
    "MacAddress",
    "NetworkInterfaceId",
    "OwnerId",
    "PrivateDnsName",
    "PrivateIpAddress",
    "PrivateIpAddresses",
    "Ipv4Prefixes",
    "Ipv6Addresses",
    "Ipv6Prefixes",
    "SourceDestCheck",
    "Status",
    "SubnetId",
    "VpcId",
    "InterfaceType",
)
_INSTANCE_ATTACHMENT_MEMBERS = (
    "AttachTime",
    "AttachmentId",
    "DeleteOnTermination",
    "DeviceIndex",
    "NetworkCardIndex",
    "Status",
)


def tags_out(tags: Mapping[str, str]) -> list[dict[str, str]] | None:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())] or None


def dns_name(address: str, region: str) -> str:
    return f"ip-{address.replace('.', '-')}.{region}.compute.internal"


class Answers:
    """Renders records of one `Cloud` (its region, account and group names)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def groups(self, group_ids: Iterable[str]) -> list[dict[str, str]]:
        out = []
        for gid in group_ids:
            try:
                name = self.cloud.security_group(gid).name
            except Ec2Error:
                name = ""
            out.append({"GroupId": gid, "GroupName": name})
        return out

    def eni(self, eni: Eni) -> Answer:
        region = self.cloud.region
        out: Answer = {
            "NetworkInterfaceId": eni.id,
            "SubnetId": eni.subnet_id,
            "VpcId": eni.vpc_id,
            "AvailabilityZone": eni.az,
            "Description": eni.description,
            "Groups": self.groups(eni.security_group_ids),
            "InterfaceType": eni.interface_type,
            "MacAddress": eni.mac,
            "OwnerId": self.cloud.account,
            "PrivateDnsName": dns_name(eni.primary_ip, region),
            "PrivateIpAddress": eni.primary_ip,
            "PrivateIpAddresses": [
                {
                    "Primary": a == eni.primary_ip,
                    "PrivateIpAddress": a,
                    "PrivateDnsName": dns_name(a, region),
                }
                for a in eni.private_ips
            ],
            "Ipv4Prefixes": [{"Ipv4Prefix": p} for p in eni.prefixes] or None,
            "Ipv6Addresses": [{"Ipv6Address": a, "IsPrimaryIpv6": False} for a in eni.ipv6_addresses] or None,
            "Ipv6Prefixes": [{"Ipv6Prefix": p} for p in eni.ipv6_prefixes] or None,
            "RequesterManaged": False,
            "SourceDestCheck": eni.source_dest_check,
            "Status": eni.status,
            "TagSet": tags_out(eni.tags),
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

    def instance_eni(self, eni: Eni) -> Answer:
        """An attached ENI as DescribeInstances shows it under its instance."""
        full = self.eni(eni)
        att = full["Attachment"]
        return {
            "Attachment": {k: att[k] for k in _INSTANCE_ATTACHMENT_MEMBERS},
            **{k: full[k] for k in _INSTANCE_ENI_MEMBERS},
        }

    def instance(self, inst: Instance, enis: Sequence[Eni]) -> Answer:
        lim = instance_limits(inst.instance_type)
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
            "Hypervisor": "xen" if lim.hypervisor == "xen" else "nitro" if lim.hypervisor else None,
            "Tags": tags_out(inst.tags),
            "NetworkInterfaces": [self.instance_eni(e) for e in enis],
        }
        if running:
            out.update({"SubnetId": inst.subnet_id, "VpcId": inst.vpc_id})
        if primary is not None:
            out.update(
                {
                    "PrivateIpAddress": primary.primary_ip,
                    "PrivateDnsName": dns_name(primary.primary_ip, self.cloud.region),
                    "SourceDestCheck": primary.source_dest_check,
                    "SecurityGroups": self.groups(primary.security_group_ids),
                }
            )
        return out

    def subnet(self, s: Subnet) -> Answer:
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
            "Tags": tags_out(s.tags),
            # Lab subnets with an IPv6 block give each launched instance an address (EKS IPv6 needs it).
            "AssignIpv6AddressOnCreation": bool(s.ipv6_cidr),
            "Ipv6CidrBlockAssociationSet": [
                {
                    "AssociationId": s.id.replace("subnet-", "subnet-cidr-assoc-"),
                    "Ipv6CidrBlock": s.ipv6_cidr,
                    "Ipv6CidrBlockState": {"State": "associated"},
                    "Ipv6AddressAttribute": "public",
                    "IpSource": "amazon",
                }
            ]
            if s.ipv6_cidr
            else None,
        }

    def vpc(self, v: Vpc) -> Answer:
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
            "Ipv6CidrBlockAssociationSet": [
                {
                    "AssociationId": v.id.replace("vpc-", "vpc-cidr-assoc-6"),
                    "Ipv6CidrBlock": v.ipv6_cidr,
                    "Ipv6CidrBlockState": {"State": "associated"},
                    "NetworkBorderGroup": self.cloud.region,
                    "Ipv6Pool": "Amazon",
                    "Ipv6AddressAttribute": "public",
                    "IpSource": "amazon",
                }
            ]
            if v.ipv6_cidr
            else None,
            "Tags": tags_out(v.tags),
        }


def instance_type_out(name: str) -> Answer:
    lim = limits(name)
    cards = lim.enis_per_card or (lim.max_enis,)
    out: Answer = {
        "InstanceType": name,
        "CurrentGeneration": True,
        "BareMetal": lim.bare_metal,
        "VCpuInfo": {"DefaultVCpus": lim.vcpus},
        "NetworkInfo": {
            "MaximumNetworkInterfaces": lim.max_enis,
            "Ipv4AddressesPerInterface": lim.ipv4_per_eni,
            "Ipv6AddressesPerInterface": lim.ipv6_per_eni,
            "Ipv6Supported": lim.ipv6_per_eni > 0,
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
