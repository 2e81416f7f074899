"""The calls the VPC CNI's ipamd makes, in its order, through boto3 and IMDSv2 against LocalCloud: what it
reads back must agree between EC2 and IMDS at every step."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from ec2lab import CLIENT_CONFIG

from vpcnet.lab.ec2.local import LocalCloud


class Imds:
    def __init__(self, url: str) -> None:
        self.url = url
        put = urllib.request.Request(
            url + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
        )
        self.token = urllib.request.urlopen(put, timeout=5).read().decode()

    def get(self, path: str) -> str:
        req = urllib.request.Request(
            self.url + "/latest/meta-data/" + path, headers={"X-aws-ec2-metadata-token": self.token}
        )
        return str(urllib.request.urlopen(req, timeout=5).read().decode())

    def attached(self) -> dict[str, dict[str, str]]:
        """ENI id -> what ipamd reads per MAC (GetAttachedENIs)."""
        out = {}
        for mac in self.get("network/interfaces/macs/").split("\n"):
            base = f"network/interfaces/macs/{mac}"
            keys = self.get(base).split("\n")
            row = {k: self.get(f"{base}{k}") for k in ("interface-id", "device-number", "local-ipv4s")}
            row["ipv4-prefix"] = self.get(f"{base}ipv4-prefix") if "ipv4-prefix" in keys else ""
            out[row["interface-id"]] = row
        return out


@pytest.fixture
def local(boto_session: boto3.session.Session) -> Iterator[tuple[LocalCloud, Any]]:
    with LocalCloud() as lc:
        client = boto_session.client("ec2", endpoint_url=lc.ec2_url, config=CLIENT_CONFIG)
        yield lc, client
        client.close()


@pytest.mark.parametrize("prefix_mode", [False, True], ids=["secondary-ips", "prefix-delegation"])
def test_ipamd_flow(local: tuple[LocalCloud, Any], prefix_mode: bool) -> None:
    lc, c = local
    inst = lc.launch("m5.large")
    imds = Imds(lc.imds_url(inst.id))
    instance_id = imds.get("instance-id")
    assert instance_id == inst.id and imds.get("instance-type") == "m5.large"
    primary_mac = imds.get("mac")
    subnet_id = imds.get(f"network/interfaces/macs/{primary_mac}/subnet-id")
    groups = imds.get(f"network/interfaces/macs/{primary_mac}/security-group-ids").split("\n")

    limits = c.describe_instance_types(InstanceTypes=["m5.large"])["InstanceTypes"][0]["NetworkInfo"]
    per_eni = limits["Ipv4AddressesPerInterface"] - 1
    # Fill the primary ENI first (as ipamd does), then allocate a second ENI.
    primary_eni = imds.get(f"network/interfaces/macs/{primary_mac}/interface-id")
    if prefix_mode:
        c.assign_private_ip_addresses(NetworkInterfaceId=primary_eni, Ipv4PrefixCount=1)
    else:
        c.assign_private_ip_addresses(NetworkInterfaceId=primary_eni, SecondaryPrivateIpAddressCount=per_eni)

    create: dict[str, Any] = {
        "SubnetId": subnet_id,
        "Groups": groups,
        "Description": f"aws-K8S-{instance_id}",
        "TagSpecifications": [
            {
                "ResourceType": "network-interface",
                "Tags": [
                    {"Key": "node.k8s.amazonaws.com/instance_id", "Value": instance_id},
                    {"Key": "node.k8s.amazonaws.com/createdAt", "Value": "2026-11-26T12:00:00Z"},
                ],
            }
        ],
    }
    if prefix_mode:
        create["Ipv4PrefixCount"] = 1
    else:
        create["SecondaryPrivateIpAddressCount"] = per_eni
    eni = c.create_network_interface(**create)["NetworkInterface"]
    reservation = c.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    used = {n["Attachment"]["DeviceIndex"] for n in reservation["Instances"][0]["NetworkInterfaces"]}
    device = min(set(range(100)) - used)
    att = c.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=device
    )
    c.modify_network_interface_attribute(
        NetworkInterfaceId=eni["NetworkInterfaceId"],
        Attachment={"AttachmentId": att["AttachmentId"], "DeleteOnTermination": True},
    )

    # What IMDS says agrees with EC2, ENI by ENI.
    seen = imds.attached()
    described = c.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    assert (
        set(seen) == {d["NetworkInterfaceId"] for d in described} == {primary_eni, eni["NetworkInterfaceId"]}
    )
    for d in described:
        row = seen[d["NetworkInterfaceId"]]
        assert row["device-number"] == str(d["Attachment"]["DeviceIndex"])
        assert row["local-ipv4s"].split("\n") == [a["PrivateIpAddress"] for a in d["PrivateIpAddresses"]]
        prefixes_seen = row["ipv4-prefix"].split("\n") if row["ipv4-prefix"] else []
        assert prefixes_seen == [p["Ipv4Prefix"] for p in d.get("Ipv4Prefixes", [])]
    assert seen[eni["NetworkInterfaceId"]]["device-number"] == "1"

    # Scale down: give back what the pool no longer needs, then free the ENI (detach, delete).
    if prefix_mode:
        c.unassign_private_ip_addresses(
            NetworkInterfaceId=eni["NetworkInterfaceId"], Ipv4Prefixes=[eni["Ipv4Prefixes"][0]["Ipv4Prefix"]]
        )
    else:
        spare = [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a["Primary"]][:2]
        c.unassign_private_ip_addresses(
            NetworkInterfaceId=eni["NetworkInterfaceId"], PrivateIpAddresses=spare
        )
    assert (
        imds.attached()[eni["NetworkInterfaceId"]]["local-ipv4s"].split("\n")
        == lc.cloud.eni(eni["NetworkInterfaceId"]).private_ips
    )
    c.detach_network_interface(AttachmentId=att["AttachmentId"])
    c.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    assert set(imds.attached()) == {primary_eni}
    leaked = c.describe_network_interfaces(
        Filters=[
            {"Name": "status", "Values": ["available"]},
            {"Name": "tag-key", "Values": ["node.k8s.amazonaws.com/instance_id"]},
        ]
    )["NetworkInterfaces"]
    assert leaked == []
