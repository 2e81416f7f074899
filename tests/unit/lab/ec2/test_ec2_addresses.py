"""Secondary addresses and /28 prefixes through boto3: limits, uniqueness, reserved addresses, exhaustion."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from ec2lab import AZ_A, Endpoint, error_code


def _attached_eni(ep: Endpoint, itype: str, subnet: str | None = None) -> tuple[str, str]:
    """An instance of `itype` and a second ENI attached to it at device index 1."""
    subnet = subnet or ep.lab.subnet_a.id
    inst = ep.cloud.launch_instance(itype, subnet)
    eni = ep.client.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    ep.client.attach_network_interface(NetworkInterfaceId=eni, InstanceId=inst.id, DeviceIndex=1)
    return inst.id, eni


def test_assign_by_count_up_to_the_limit_answers_only_new_addresses(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, eni = _attached_eni(endpoint, "t3.medium")  # 6 addresses per ENI, primary included
    r = c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=3)
    new = [a["PrivateIpAddress"] for a in r["AssignedPrivateIpAddresses"]]
    assert len(new) == 3 and r["NetworkInterfaceId"] == eni
    r = c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=2)
    newer = [a["PrivateIpAddress"] for a in r["AssignedPrivateIpAddresses"]]
    assert len(newer) == 2 and not set(new) & set(newer)
    assert error_code(
        c.assign_private_ip_addresses, NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1
    ) == ("PrivateIpAddressLimitExceeded")
    d = c.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert len(d["PrivateIpAddresses"]) == 6


def test_explicit_addresses(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, eni = _attached_eni(endpoint, "m5.large")
    r = c.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=["10.0.0.100", "10.0.0.101"])
    assert [a["PrivateIpAddress"] for a in r["AssignedPrivateIpAddresses"]] == ["10.0.0.100", "10.0.0.101"]
    _, other = _attached_eni(endpoint, "m5.large")
    assign = c.assign_private_ip_addresses
    assert (
        error_code(assign, NetworkInterfaceId=other, PrivateIpAddresses=["10.0.0.100"])
        == "InvalidIPAddress.InUse"
    )
    assert (
        error_code(assign, NetworkInterfaceId=other, PrivateIpAddresses=["10.0.0.255"])
        == "InvalidParameterValue"
    )
    assert (
        error_code(assign, NetworkInterfaceId=other, PrivateIpAddresses=["10.0.1.10"])
        == "InvalidParameterValue"
    )
    assert error_code(assign, NetworkInterfaceId="eni-0nope", SecondaryPrivateIpAddressCount=1) == (
        "InvalidNetworkInterfaceID.NotFound"
    )
    assert error_code(assign, NetworkInterfaceId=other) == "MissingParameter"
    assert error_code(
        assign, NetworkInterfaceId=other, SecondaryPrivateIpAddressCount=1, Ipv4PrefixCount=1
    ) == ("InvalidParameterCombination")
    # AllowReassignment moves a secondary address from one ENI to another.
    assign(NetworkInterfaceId=other, PrivateIpAddresses=["10.0.0.100"], AllowReassignment=True)
    assert "10.0.0.100" in endpoint.cloud.eni(other).secondary_ips
    assert "10.0.0.100" not in endpoint.cloud.eni(eni).secondary_ips


def test_unassign(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, eni = _attached_eni(endpoint, "m5.large")
    added = c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=3)
    a1, a2, a3 = (a["PrivateIpAddress"] for a in added["AssignedPrivateIpAddresses"])
    primary = endpoint.cloud.eni(eni).primary_ip
    unassign = c.unassign_private_ip_addresses
    assert (
        error_code(unassign, NetworkInterfaceId=eni, PrivateIpAddresses=[primary]) == "InvalidParameterValue"
    )
    assert error_code(unassign, NetworkInterfaceId=eni, PrivateIpAddresses=[a1, "10.0.0.200"]) == (
        "InvalidParameterValue"
    )
    assert endpoint.cloud.eni(eni).secondary_ips == [a1, a2, a3]  # the failed call changed nothing
    unassign(NetworkInterfaceId=eni, PrivateIpAddresses=[a1, a3])
    assert endpoint.cloud.eni(eni).secondary_ips == [a2]
    # A freed address can be had again, by anyone in the subnet.
    c.create_network_interface(SubnetId=endpoint.lab.subnet_a.id, PrivateIpAddress=a1)


def test_prefixes_take_one_slot_each_and_only_on_nitro(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, eni = _attached_eni(endpoint, "m5.large")  # 10 slots: primary + 9
    r = c.assign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4PrefixCount=2)
    prefixes = [p["Ipv4Prefix"] for p in r["AssignedIpv4Prefixes"]]
    assert "AssignedPrivateIpAddresses" not in r
    for p in prefixes:
        net = IPv4Network(p)
        assert net.prefixlen == 28 and net.subnet_of(IPv4Network("10.0.0.0/24"))
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=3)
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4PrefixCount=4)  # 1 + 2 + 3 + 4 = 10
    assert error_code(c.assign_private_ip_addresses, NetworkInterfaceId=eni, Ipv4PrefixCount=1) == (
        "PrivateIpAddressLimitExceeded"
    )
    d = c.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert len(d["Ipv4Prefixes"]) == 6
    c.unassign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4Prefixes=prefixes)
    assert len(endpoint.cloud.eni(eni).prefixes) == 4
    assert error_code(c.unassign_private_ip_addresses, NetworkInterfaceId=eni, Ipv4Prefixes=prefixes[:1]) == (
        "InvalidParameterValue"
    )

    _, xen = _attached_eni(endpoint, "t2.medium")
    assert error_code(c.assign_private_ip_addresses, NetworkInterfaceId=xen, Ipv4PrefixCount=1) == (
        "InvalidParameterValue"
    )
    _, metal = _attached_eni(endpoint, "m5.metal")  # bare metal counts as Nitro
    c.assign_private_ip_addresses(NetworkInterfaceId=metal, Ipv4PrefixCount=1)


def test_explicit_prefixes_must_be_aligned_and_free(endpoint: Endpoint) -> None:
    c = endpoint.client
    _, eni = _attached_eni(endpoint, "m5.large")
    taken = endpoint.cloud.eni(eni).primary_ip  # 10.0.0.5 (the instance's primary is .4)
    assert IPv4Address(taken) in IPv4Network("10.0.0.0/28")
    assign = c.assign_private_ip_addresses
    assert error_code(assign, NetworkInterfaceId=eni, Ipv4Prefixes=["10.0.0.0/28"]) == "InvalidParameterValue"
    assert (
        error_code(assign, NetworkInterfaceId=eni, Ipv4Prefixes=["10.0.0.24/28"]) == "InvalidParameterValue"
    )
    assert (
        error_code(assign, NetworkInterfaceId=eni, Ipv4Prefixes=["10.0.0.240/28"]) == "InvalidParameterValue"
    )
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=["10.0.0.70"])
    assert (
        error_code(assign, NetworkInterfaceId=eni, Ipv4Prefixes=["10.0.0.64/28"]) == "InvalidIPAddress.InUse"
    )
    r = assign(NetworkInterfaceId=eni, Ipv4Prefixes=["10.0.0.80/28"])
    assert r["AssignedIpv4Prefixes"] == [{"Ipv4Prefix": "10.0.0.80/28"}]
    # No address of an assigned prefix can be handed out separately.
    assert (
        error_code(assign, NetworkInterfaceId=eni, PrivateIpAddresses=["10.0.0.85"])
        == "InvalidIPAddress.InUse"
    )


def test_exhaustion_codes(endpoint: Endpoint) -> None:
    c, cloud, lab = endpoint.client, endpoint.cloud, endpoint.lab
    small = cloud.create_subnet(lab.vpc.id, "10.0.2.0/28", AZ_A)  # 16 - 5 = 11 usable, no prefix fits
    inst = cloud.launch_instance("c5n.18xlarge", small.id)  # takes one address
    eni = c.create_network_interface(SubnetId=small.id)["NetworkInterface"]["NetworkInterfaceId"]
    c.attach_network_interface(NetworkInterfaceId=eni, InstanceId=inst.id, DeviceIndex=1)
    assert error_code(c.assign_private_ip_addresses, NetworkInterfaceId=eni, Ipv4PrefixCount=1) == (
        "InsufficientCidrBlocks"
    )
    assert error_code(
        c.assign_private_ip_addresses, NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=10
    ) == ("InsufficientFreeAddressesInSubnet")
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=9)
    subnet = c.describe_subnets(SubnetIds=[small.id])["Subnets"][0]
    assert subnet["AvailableIpAddressCount"] == 0
    assert error_code(c.create_network_interface, SubnetId=small.id) == "InsufficientFreeAddressesInSubnet"

    # A /26 has two /28 blocks free of reserved addresses; one address in a block makes it unusable.
    frag = cloud.create_subnet(lab.vpc.id, "10.0.3.0/26", AZ_A)
    e2 = c.create_network_interface(SubnetId=frag.id, PrivateIpAddress="10.0.3.20")["NetworkInterface"]
    c.attach_network_interface(NetworkInterfaceId=e2["NetworkInterfaceId"], InstanceId=inst.id, DeviceIndex=2)
    r = c.assign_private_ip_addresses(NetworkInterfaceId=e2["NetworkInterfaceId"], Ipv4PrefixCount=1)
    assert r["AssignedIpv4Prefixes"] == [{"Ipv4Prefix": "10.0.3.32/28"}]
    assert (
        error_code(
            c.assign_private_ip_addresses, NetworkInterfaceId=e2["NetworkInterfaceId"], Ipv4PrefixCount=1
        )
        == "InsufficientCidrBlocks"
    )
    subnet = c.describe_subnets(SubnetIds=[frag.id])["Subnets"][0]
    assert subnet["AvailableIpAddressCount"] == 64 - 5 - 1 - 16


def test_available_ip_address_count_follows_assignments(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab

    def available() -> int:
        return int(c.describe_subnets(SubnetIds=[lab.subnet_a.id])["Subnets"][0]["AvailableIpAddressCount"])

    assert available() == 251
    _, eni = _attached_eni(endpoint, "m5.large")
    assert available() == 249
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=4)
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4PrefixCount=1)
    assert available() == 249 - 4 - 16
    c.unassign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4Prefixes=endpoint.cloud.eni(eni).prefixes)
    assert available() == 245


def test_one_action_never_hands_out_an_address_twice(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    # The explicit primary is the lowest free address: the counted secondaries must go around it.
    r = c.create_network_interface(
        SubnetId=lab.subnet_a.id, PrivateIpAddress="10.0.0.4", SecondaryPrivateIpAddressCount=2
    )["NetworkInterface"]
    addrs = [a["PrivateIpAddress"] for a in r["PrivateIpAddresses"]]
    assert addrs == ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
    eni = r["NetworkInterfaceId"]
    assert error_code(
        c.assign_private_ip_addresses, NetworkInterfaceId=eni, PrivateIpAddresses=["10.0.0.9", "10.0.0.9"]
    ) == ("InvalidIPAddress.InUse")
    assert error_code(
        c.create_network_interface,
        SubnetId=lab.subnet_a.id,
        PrivateIpAddresses=[
            {"PrivateIpAddress": "10.0.0.20", "Primary": True},
            {"PrivateIpAddress": "10.0.0.21", "Primary": False},
            {"PrivateIpAddress": "10.0.0.21", "Primary": False},
        ],
    ) == ("InvalidIPAddress.InUse")
    assert len(endpoint.cloud.enis()) == 1
