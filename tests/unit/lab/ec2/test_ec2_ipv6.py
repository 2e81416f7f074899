"""IPv6 in the lab's EC2 through boto3: a /56 VPC, /64 subnets, Assign/UnassignIpv6Addresses with addresses
and /80 prefixes, the per-ENI IPv6 limit, the Describe fields; and the IMDS IPv6 keys."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from ec2lab import AZ_A, Endpoint, error_code

from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.state import Cloud
from vpcnet.lab.imds import ImdsApp

VPC6 = "2001:db8:1f14:8c00::/56"
SUBNET6 = "2001:db8:1f14:8c01::/64"


def _dual_stack(ep: Endpoint) -> tuple[str, str]:
    """A dual-stack VPC and subnet beside the fixture's IPv4-only one."""
    vpc = ep.cloud.create_vpc("10.8.0.0/16", ipv6_cidr=VPC6)
    subnet = ep.cloud.create_subnet(vpc.id, "10.8.0.0/24", AZ_A, ipv6_cidr=SUBNET6)
    return vpc.id, subnet.id


def _launch(ep: Endpoint, itype: str, subnet: str) -> tuple[str, str]:
    inst = ep.cloud.launch_instance(itype, subnet)
    return inst.id, inst.primary_eni_id


def test_describe_vpcs_and_subnets_show_the_ipv6_blocks(endpoint: Endpoint) -> None:
    c = endpoint.client
    vpc_id, subnet_id = _dual_stack(endpoint)
    vpc = c.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]
    assoc = vpc["Ipv6CidrBlockAssociationSet"]
    assert [a["Ipv6CidrBlock"] for a in assoc] == [VPC6]
    assert assoc[0]["Ipv6CidrBlockState"]["State"] == "associated" and assoc[0]["Ipv6Pool"] == "Amazon"
    subnet = c.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
    assert [a["Ipv6CidrBlock"] for a in subnet["Ipv6CidrBlockAssociationSet"]] == [SUBNET6]
    assert subnet["AssignIpv6AddressOnCreation"] is True
    found = c.describe_subnets(
        Filters=[{"Name": "ipv6-cidr-block-association.ipv6-cidr-block", "Values": [SUBNET6]}]
    )["Subnets"]
    assert [s["SubnetId"] for s in found] == [subnet_id]
    v4only = c.describe_subnets(SubnetIds=[endpoint.lab.subnet_a.id])["Subnets"][0]
    assert "Ipv6CidrBlockAssociationSet" not in v4only or not v4only["Ipv6CidrBlockAssociationSet"]


def test_ipv6_blocks_are_checked(endpoint: Endpoint) -> None:
    cloud = endpoint.cloud
    with pytest.raises(Ec2Error, match="must be a /56"):
        cloud.create_vpc("10.9.0.0/16", ipv6_cidr="2001:db8:1f14::/48")
    vpc_id, _ = _dual_stack(endpoint)
    with pytest.raises(Ec2Error, match="must be a /64"):
        cloud.create_subnet(vpc_id, "10.8.1.0/24", AZ_A, ipv6_cidr="2001:db8:1f14:8c02::/80")
    with pytest.raises(Ec2Error) as outside:
        cloud.create_subnet(vpc_id, "10.8.1.0/24", AZ_A, ipv6_cidr="2001:db8:1f14:9c00::/64")
    assert outside.value.code == "InvalidSubnet.Range"
    with pytest.raises(Ec2Error) as dup:
        cloud.create_subnet(vpc_id, "10.8.1.0/24", AZ_A, ipv6_cidr=SUBNET6)
    assert dup.value.code == "InvalidSubnet.Conflict"
    with pytest.raises(Ec2Error) as no_block:
        cloud.create_subnet(endpoint.lab.vpc.id, "10.0.9.0/24", AZ_A, ipv6_cidr=SUBNET6)
    assert no_block.value.code == "InvalidSubnet.Range"
    assert len(cloud.subnets()) == 3  # the fixture's two and the dual-stack one: nothing half-made


def test_launch_gives_the_primary_eni_one_ipv6_address(endpoint: Endpoint) -> None:
    _, subnet = _dual_stack(endpoint)
    inst, eni = _launch(endpoint, "m5.large", subnet)
    d = endpoint.client.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    addresses = [a["Ipv6Address"] for a in d["Ipv6Addresses"]]
    assert len(addresses) == 1 and IPv6Address(addresses[0]) in IPv6Network(SUBNET6)
    # the first four addresses of the /64 are EC2's
    assert int(IPv6Address(addresses[0])) - int(IPv6Network(SUBNET6).network_address) >= 4
    r = endpoint.client.describe_instances(InstanceIds=[inst])["Reservations"][0]["Instances"][0]
    assert [a["Ipv6Address"] for a in r["NetworkInterfaces"][0]["Ipv6Addresses"]] == addresses
    assert endpoint.cloud.instance_by_address(addresses[0]) is not None
    # no IPv6 block, no IPv6 address
    _, v4eni = _launch(endpoint, "m5.large", endpoint.lab.subnet_a.id)
    d4 = endpoint.client.describe_network_interfaces(NetworkInterfaceIds=[v4eni])["NetworkInterfaces"][0]
    assert not d4.get("Ipv6Addresses")


def test_assign_prefixes_and_addresses_with_the_ipv6_limit(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, subnet = _dual_stack(endpoint)
    _, eni = _launch(endpoint, "m5.large", subnet)  # 10 IPv6 per interface; the launch took one
    r = c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6PrefixCount=1)
    (prefix,) = r["AssignedIpv6Prefixes"]
    block = IPv6Network(prefix)
    assert block.prefixlen == 80 and block.subnet_of(IPv6Network(SUBNET6)) and r["NetworkInterfaceId"] == eni
    r = c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6AddressCount=3)
    new = r["AssignedIpv6Addresses"]
    assert len(new) == 3 and not any(IPv6Address(a) in block for a in new)
    explicit = str(IPv6Network(SUBNET6).network_address + 0x1234)
    r = c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Addresses=[explicit])
    assert r["AssignedIpv6Addresses"] == [explicit]
    # 1 + 1 prefix + 3 + 1 = 6 of 10: four more slots, then the limit (IPv4 slots are not involved)
    c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6PrefixCount=4)
    assert error_code(c.assign_ipv6_addresses, NetworkInterfaceId=eni, Ipv6AddressCount=1) == (
        "PrivateIpAddressLimitExceeded"
    )
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=9)
    d = c.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert len(d["Ipv6Addresses"]) == 5 and len(d["Ipv6Prefixes"]) == 5
    assert d["Ipv6Prefixes"][0]["Ipv6Prefix"] == prefix
    prefixes = [IPv6Network(p["Ipv6Prefix"]) for p in d["Ipv6Prefixes"]]
    assert all(not a.overlaps(b) for i, a in enumerate(prefixes) for b in prefixes[i + 1 :])
    found = c.describe_network_interfaces(Filters=[{"Name": "ipv6-prefix", "Values": [prefix]}])
    assert [e["NetworkInterfaceId"] for e in found["NetworkInterfaces"]] == [eni]
    found = c.describe_network_interfaces(
        Filters=[{"Name": "ipv6-addresses.ipv6-address", "Values": [explicit]}]
    )
    assert [e["NetworkInterfaceId"] for e in found["NetworkInterfaces"]] == [eni]


def test_addresses_and_prefixes_are_unique_in_the_subnet(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, subnet = _dual_stack(endpoint)
    _, a = _launch(endpoint, "m5.large", subnet)
    _, b = _launch(endpoint, "m5.large", subnet)
    (prefix,) = c.assign_ipv6_addresses(NetworkInterfaceId=a, Ipv6PrefixCount=1)["AssignedIpv6Prefixes"]
    inside = str(IPv6Network(prefix).network_address + 7)
    assign = c.assign_ipv6_addresses
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Addresses=[inside]) == "InvalidIPAddress.InUse"
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Prefixes=[prefix]) == "InvalidIPAddress.InUse"
    (other,) = assign(NetworkInterfaceId=b, Ipv6PrefixCount=1)["AssignedIpv6Prefixes"]
    assert not IPv6Network(other).overlaps(IPv6Network(prefix))
    base = IPv6Network(SUBNET6).network_address
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Addresses=[str(base + 1)]) == "InvalidParameterValue"
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Addresses=["2001:db8:ffff::5"]) == (
        "InvalidParameterValue"
    )
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Prefixes=[f"{base}/80"]) == "InvalidParameterValue"
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Prefixes=["2001:db8:1f14:8c01:1::/96"]) == (
        "InvalidParameterValue"
    )
    assert error_code(assign, NetworkInterfaceId=b) == "MissingParameter"
    assert error_code(assign, NetworkInterfaceId=b, Ipv6AddressCount=1, Ipv6PrefixCount=1) == (
        "InvalidParameterCombination"
    )
    before = endpoint.cloud.eni(b)
    assert error_code(assign, NetworkInterfaceId=b, Ipv6Addresses=[str(base + 0x99), inside]) == (
        "InvalidIPAddress.InUse"
    )
    assert endpoint.cloud.eni(b) == before  # all or nothing


def test_ipv6_needs_a_subnet_block_an_ipv6_type_and_nitro_for_prefixes(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, v4eni = _launch(endpoint, "m5.large", endpoint.lab.subnet_a.id)
    assert error_code(c.assign_ipv6_addresses, NetworkInterfaceId=v4eni, Ipv6AddressCount=1) == (
        "InvalidParameterValue"
    )
    _, subnet = _dual_stack(endpoint)
    with pytest.raises(Ec2Error, match="IPv6 is not supported"):
        endpoint.cloud.launch_instance("m1.small", subnet)  # a Xen type without IPv6
    _, xen = _launch(endpoint, "c4.large", subnet)  # Xen with IPv6: addresses yes, prefixes no
    c.assign_ipv6_addresses(NetworkInterfaceId=xen, Ipv6AddressCount=1)
    assert error_code(c.assign_ipv6_addresses, NetworkInterfaceId=xen, Ipv6PrefixCount=1) == (
        "InvalidParameterValue"
    )
    t = c.describe_instance_types(InstanceTypes=["m1.small", "m5.large"])["InstanceTypes"]
    info = {x["InstanceType"]: x["NetworkInfo"] for x in t}
    assert info["m1.small"]["Ipv6Supported"] is False and info["m1.small"]["Ipv6AddressesPerInterface"] == 0
    assert info["m5.large"]["Ipv6Supported"] is True and info["m5.large"]["Ipv6AddressesPerInterface"] == 10


def test_unassign(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, subnet = _dual_stack(endpoint)
    _, eni = _launch(endpoint, "m5.large", subnet)
    (prefix,) = c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6PrefixCount=1)["AssignedIpv6Prefixes"]
    addresses = c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6AddressCount=2)["AssignedIpv6Addresses"]
    r = c.unassign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Addresses=[addresses[0]], Ipv6Prefixes=[prefix])
    assert r["UnassignedIpv6Addresses"] == [addresses[0]] and r["UnassignedIpv6Prefixes"] == [prefix]
    d = c.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert addresses[1] in [a["Ipv6Address"] for a in d["Ipv6Addresses"]] and not d.get("Ipv6Prefixes")
    assert error_code(c.unassign_ipv6_addresses, NetworkInterfaceId=eni, Ipv6Prefixes=[prefix]) == (
        "InvalidParameterValue"
    )
    assert error_code(c.unassign_ipv6_addresses, NetworkInterfaceId=eni) == "MissingParameter"
    # the prefix is free again: the next one is the same block
    again = c.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6PrefixCount=1)["AssignedIpv6Prefixes"]
    assert again == [prefix]


def test_ipv6_state_survives_a_reload(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "state.json"
    cloud = Cloud(path)
    vpc = cloud.create_vpc("10.8.0.0/16", ipv6_cidr=VPC6)
    subnet = cloud.create_subnet(vpc.id, "10.8.0.0/24", AZ_A, ipv6_cidr=SUBNET6)
    inst = cloud.launch_instance("m5.large", subnet.id)
    cloud.assign_ipv6_addresses(inst.primary_eni_id, prefix_count=1)
    again = Cloud(path)
    assert again.eni(inst.primary_eni_id) == cloud.eni(inst.primary_eni_id)
    assert again.subnet(subnet.id).ipv6_cidr == SUBNET6 and again.vpc(vpc.id).ipv6_cidr == VPC6


def test_imds_ipv6_keys() -> None:
    cloud = Cloud()
    vpc = cloud.create_vpc("10.8.0.0/16", ipv6_cidr=VPC6)
    subnet = cloud.create_subnet(vpc.id, "10.8.0.0/24", AZ_A, ipv6_cidr=SUBNET6)
    inst = cloud.launch_instance("m5.large", subnet.id)
    eni = cloud.eni(inst.primary_eni_id)
    app = ImdsApp(cloud)
    tree = app.metadata_tree(inst)
    assert tree is not None
    mac = tree["network"]["interfaces"]["macs"][eni.mac]  # type: ignore[index]
    assert mac["ipv6s"] == eni.ipv6_addresses[0]  # type: ignore[index]
    assert mac["subnet-ipv6-cidr-blocks"] == SUBNET6 and mac["vpc-ipv6-cidr-blocks"] == VPC6  # type: ignore[index]
    assert "ipv6-prefix" not in mac  # type: ignore[operator]
    _, prefixes = cloud.assign_ipv6_addresses(eni.id, prefix_count=1)
    tree = app.metadata_tree(inst)
    assert tree is not None
    assert tree["network"]["interfaces"]["macs"][eni.mac]["ipv6-prefix"] == prefixes[0]  # type: ignore[index]
