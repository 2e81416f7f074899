"""Which ENI a pod's address belongs to, asked of the lab's EC2 endpoint the way one would ask EC2.

The CNI result names the host veth and the pod's interface but not the ENI (the VPC CNI's does not
either); `kubectl`-style output wants it, so the kubelet looks the addresses up with one
DescribeNetworkInterfaces for the lab's instances: a secondary private address, or one inside an
assigned /28 prefix (prefix delegation). Addresses outside every ENI (Calico pools) map to "".
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from vpcnet.lab.layout import LabLayout

if TYPE_CHECKING:
    from vpcnet.lab.sgverdict import SgView


def _client(endpoint: str, region: str) -> Any:
    import boto3

    from vpcnet.lab.labctl import LAB_CREDENTIALS

    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LAB_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def eni_owners(interfaces: Iterable[dict[str, Any]], addresses: Iterable[str]) -> dict[str, str]:
    """address -> ENI id for DescribeNetworkInterfaces entries ("" when no ENI holds the address)."""
    owners: dict[str, str] = {}
    nets: list[tuple[ipaddress.IPv4Network, str]] = []
    for eni in interfaces:
        eni_id = str(eni.get("NetworkInterfaceId", ""))
        for entry in eni.get("PrivateIpAddresses") or []:
            owners[str(entry.get("PrivateIpAddress"))] = eni_id
        for prefix in eni.get("Ipv4Prefixes") or []:
            nets.append((ipaddress.IPv4Network(prefix["Ipv4Prefix"]), eni_id))
    out: dict[str, str] = {}
    for address in addresses:
        owner = owners.get(address)
        if owner is None:
            ip = ipaddress.IPv4Address(address)
            owner = next((eni for net, eni in nets if ip in net), "")
        out[address] = owner
    return out


def lookup_enis(layout: LabLayout, addresses: Iterable[str]) -> dict[str, str]:
    """address -> ENI id for the lab's instances; {} when the lab has no EC2 endpoint to ask."""
    wanted = list(addresses)
    if not wanted:
        return {}
    try:
        state = json.loads(layout.state_file.read_text())
        instance_ids = [n["instance_id"] for n in state["nodes"]]
        endpoint, region = state["endpoints"]["ec2_host"], str(state.get("region", "us-east-1"))
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    client = _client(endpoint, region)
    interfaces: list[dict[str, Any]] = []
    paginator = client.get_paginator("describe_network_interfaces")
    filters = [{"Name": "attachment.instance-id", "Values": instance_ids}]
    for page in paginator.paginate(Filters=filters):
        interfaces += page.get("NetworkInterfaces", [])
    return eni_owners(interfaces, wanted)


def lab_security_groups(layout: LabLayout) -> SgView | None:
    """Every ENI of the lab's VPC (branches too), every group with its rules, asked of the lab's EC2 endpoint,
    and the agents' POD_SECURITY_GROUP_ENFORCING_MODE; None when the lab has no EC2 endpoint to ask."""
    from vpcnet.lab.sgverdict import SgView, enis_from_ec2, groups_from_ec2

    try:
        state = json.loads(layout.state_file.read_text())
        endpoint, region = state["endpoints"]["ec2_host"], str(state.get("region", "us-east-1"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    client = _client(endpoint, region)

    def every(operation: str, key: str) -> list[dict[str, Any]]:
        return [item for page in client.get_paginator(operation).paginate() for item in page.get(key, [])]

    interfaces = every("describe_network_interfaces", "NetworkInterfaces")
    groups = every("describe_security_groups", "SecurityGroups")
    rules = every("describe_security_group_rules", "SecurityGroupRules")
    associations: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:  # botocore has no paginator for this one
        page = client.describe_trunk_interface_associations(**token)
        associations += page.get("InterfaceAssociations", [])
        if not page.get("NextToken"):
            break
        token = {"NextToken": page["NextToken"]}
    settings = state.get("agent_settings") or {}
    strict = str(settings.get("POD_SECURITY_GROUP_ENFORCING_MODE", "strict")).lower() != "standard"
    return SgView(tuple(enis_from_ec2(interfaces, associations)), groups_from_ec2(groups, rules), strict)
