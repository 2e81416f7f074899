"""ENI life cycle through boto3: create, attach, detach, delete, and what EC2 refuses."""

from __future__ import annotations

from ec2lab import Endpoint, error_code


def _eni(ep: Endpoint, subnet: str | None = None, **kwargs: object) -> str:
    r = ep.client.create_network_interface(SubnetId=subnet or ep.lab.subnet_a.id, **kwargs)
    return str(r["NetworkInterface"]["NetworkInterfaceId"])


def test_create_with_groups_description_tags_and_addresses(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    sg = endpoint.cloud.create_security_group(lab.vpc.id, "pods")
    r = c.create_network_interface(
        SubnetId=lab.subnet_a.id,
        Groups=[sg.id],
        Description="aws-K8S-i-123",
        TagSpecifications=[
            {
                "ResourceType": "network-interface",
                "Tags": [{"Key": "node.k8s.amazonaws.com/instance_id", "Value": "i-1"}],
            }
        ],
        PrivateIpAddresses=[
            {"PrivateIpAddress": "10.0.0.50", "Primary": True},
            {"PrivateIpAddress": "10.0.0.51", "Primary": False},
        ],
    )["NetworkInterface"]
    assert r["Description"] == "aws-K8S-i-123"
    assert r["Groups"] == [{"GroupId": sg.id, "GroupName": "pods"}]
    assert r["TagSet"] == [{"Key": "node.k8s.amazonaws.com/instance_id", "Value": "i-1"}]
    assert r["PrivateIpAddress"] == "10.0.0.50"
    assert [(a["PrivateIpAddress"], a["Primary"]) for a in r["PrivateIpAddresses"]] == [
        ("10.0.0.50", True),
        ("10.0.0.51", False),
    ]
    assert r["Status"] == "available" and r["SourceDestCheck"] is True and "Attachment" not in r
    assert r["MacAddress"].startswith("02:") and r["AvailabilityZone"] == lab.subnet_a.az

    with_count = c.create_network_interface(
        SubnetId=lab.subnet_a.id, PrivateIpAddress="10.0.0.60", SecondaryPrivateIpAddressCount=3
    )["NetworkInterface"]
    addrs = [a["PrivateIpAddress"] for a in with_count["PrivateIpAddresses"]]
    assert addrs[0] == "10.0.0.60" and len(addrs) == 4 and len(set(addrs)) == 4
    assert not {"10.0.0.50", "10.0.0.51"} & set(addrs)

    with_prefix = c.create_network_interface(SubnetId=lab.subnet_a.id, Ipv4PrefixCount=2)["NetworkInterface"]
    assert [p["Ipv4Prefix"] for p in with_prefix["Ipv4Prefixes"]] == ["10.0.0.16/28", "10.0.0.32/28"]


def test_create_refuses_bad_addresses_and_ids(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    before = endpoint.cloud.snapshot()
    sub = lab.subnet_a.id
    for reserved in ("10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.255"):
        assert (
            error_code(c.create_network_interface, SubnetId=sub, PrivateIpAddress=reserved)
            == "InvalidParameterValue"
        )
    assert (
        error_code(c.create_network_interface, SubnetId=sub, PrivateIpAddress="10.0.1.9")
        == "InvalidParameterValue"
    )
    assert (
        error_code(c.create_network_interface, SubnetId=sub, PrivateIpAddress="10.0.0.300")
        == "InvalidParameterValue"
    )
    assert error_code(c.create_network_interface, SubnetId="subnet-0nope") == "InvalidSubnetID.NotFound"
    assert (
        error_code(c.create_network_interface, SubnetId=sub, Groups=["sg-0nope"]) == "InvalidGroup.NotFound"
    )
    assert error_code(c.create_network_interface, SubnetId=sub, SecondaryPrivateIpAddressCount=64) == (
        "PrivateIpAddressLimitExceeded"
    )
    assert error_code(
        c.create_network_interface, SubnetId=sub, SecondaryPrivateIpAddressCount=1, Ipv4PrefixCount=1
    ) == ("InvalidParameterCombination")
    assert endpoint.cloud.snapshot() == before
    _eni(endpoint, PrivateIpAddress="10.0.0.9")
    assert (
        error_code(c.create_network_interface, SubnetId=sub, PrivateIpAddress="10.0.0.9")
        == "InvalidIPAddress.InUse"
    )
    assert error_code(
        c.create_network_interface, SubnetId=sub, Ipv4Prefixes=[{"Ipv4Prefix": "10.0.0.0/28"}]
    ) == (
        "InvalidParameterValue"  # holds reserved addresses
    )
    assert error_code(
        c.create_network_interface, SubnetId=sub, Ipv4Prefixes=[{"Ipv4Prefix": "10.0.0.8/28"}]
    ) == (
        "InvalidParameterValue"  # not aligned
    )
    assert error_code(
        c.create_network_interface, SubnetId=sub, Ipv4Prefixes=[{"Ipv4Prefix": "10.0.0.8/29"}]
    ) == ("InvalidParameterValue")
    _eni(endpoint, Ipv4Prefixes=[{"Ipv4Prefix": "10.0.0.16/28"}])
    assert error_code(
        c.create_network_interface, SubnetId=sub, Ipv4Prefixes=[{"Ipv4Prefix": "10.0.0.16/28"}]
    ) == ("InvalidIPAddress.InUse")


def test_attach_rules(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("t3.medium", lab.subnet_a.id)  # 3 ENIs, primary included
    e1, e2, e3 = _eni(endpoint), _eni(endpoint), _eni(endpoint)
    r = c.attach_network_interface(NetworkInterfaceId=e1, InstanceId=inst.id, DeviceIndex=1)
    assert r["AttachmentId"].startswith("eni-attach-") and r["NetworkCardIndex"] == 0
    d = c.describe_network_interfaces(NetworkInterfaceIds=[e1])["NetworkInterfaces"][0]
    assert d["Status"] == "in-use"
    assert d["Attachment"]["InstanceId"] == inst.id and d["Attachment"]["DeviceIndex"] == 1
    assert d["Attachment"]["DeleteOnTermination"] is False

    attach = c.attach_network_interface
    assert (
        error_code(attach, NetworkInterfaceId=e2, InstanceId=inst.id, DeviceIndex=1)
        == "InvalidParameterValue"
    )
    assert error_code(attach, NetworkInterfaceId=e1, InstanceId=inst.id, DeviceIndex=2) == (
        "InvalidNetworkInterface.InUse"
    )
    assert error_code(
        attach, NetworkInterfaceId=e2, InstanceId=inst.id, DeviceIndex=2, NetworkCardIndex=1
    ) == (
        "InvalidParameterValue"  # t3.medium has one network card
    )
    attach(NetworkInterfaceId=e2, InstanceId=inst.id, DeviceIndex=2)
    assert (
        error_code(attach, NetworkInterfaceId=e3, InstanceId=inst.id, DeviceIndex=3)
        == "AttachmentLimitExceeded"
    )
    other_az = _eni(endpoint, lab.subnet_b.id)
    inst2 = cloud.launch_instance("t3.medium", lab.subnet_a.id)
    assert error_code(attach, NetworkInterfaceId=other_az, InstanceId=inst2.id, DeviceIndex=1) == (
        "InvalidParameterValue"
    )
    assert error_code(attach, NetworkInterfaceId="eni-0nope", InstanceId=inst2.id, DeviceIndex=1) == (
        "InvalidNetworkInterfaceID.NotFound"
    )
    assert error_code(attach, NetworkInterfaceId=e3, InstanceId="i-0nope", DeviceIndex=1) == (
        "InvalidInstanceID.NotFound"
    )
    cloud.terminate_instance(inst2.id)
    assert (
        error_code(attach, NetworkInterfaceId=e3, InstanceId=inst2.id, DeviceIndex=1)
        == "IncorrectInstanceState"
    )


def test_network_cards(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("c6in.32xlarge", lab.subnet_a.id)  # 2 cards x 8 ENIs
    e = _eni(endpoint)
    c.attach_network_interface(NetworkInterfaceId=e, InstanceId=inst.id, DeviceIndex=0, NetworkCardIndex=1)
    assert cloud.eni(e).attachment.network_card_index == 1  # type: ignore[union-attr]
    assert (
        error_code(
            c.attach_network_interface,
            NetworkInterfaceId=_eni(endpoint),
            InstanceId=inst.id,
            DeviceIndex=1,
            NetworkCardIndex=2,
        )
        == "InvalidParameterValue"
    )
    for i in range(1, 8):
        c.attach_network_interface(
            NetworkInterfaceId=_eni(endpoint), InstanceId=inst.id, DeviceIndex=i, NetworkCardIndex=1
        )
    assert (
        error_code(
            c.attach_network_interface,
            NetworkInterfaceId=_eni(endpoint),
            InstanceId=inst.id,
            DeviceIndex=8,
            NetworkCardIndex=1,
        )
        == "AttachmentLimitExceeded"
    )
    c.attach_network_interface(
        NetworkInterfaceId=_eni(endpoint), InstanceId=inst.id, DeviceIndex=8, NetworkCardIndex=0
    )


def test_attach_checks_the_instance_types_address_limit_and_nitro(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    small = cloud.launch_instance("t3.nano", lab.subnet_a.id)  # 2 addresses per ENI
    big = _eni(endpoint, SecondaryPrivateIpAddressCount=2)
    assert error_code(
        c.attach_network_interface, NetworkInterfaceId=big, InstanceId=small.id, DeviceIndex=1
    ) == ("PrivateIpAddressLimitExceeded")
    xen = cloud.launch_instance("t2.medium", lab.subnet_a.id)
    prefixed = _eni(endpoint, Ipv4PrefixCount=1)
    assert error_code(
        c.attach_network_interface, NetworkInterfaceId=prefixed, InstanceId=xen.id, DeviceIndex=1
    ) == ("InvalidParameterValue")
    assert cloud.eni(big).attachment is None and cloud.eni(prefixed).attachment is None


def test_detach_and_delete(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("m5.large", lab.subnet_a.id)
    e = _eni(endpoint)
    att = c.attach_network_interface(NetworkInterfaceId=e, InstanceId=inst.id, DeviceIndex=1)["AttachmentId"]
    assert error_code(c.delete_network_interface, NetworkInterfaceId=e) == "InvalidNetworkInterface.InUse"
    primary_att = cloud.eni(inst.primary_eni_id).attachment
    assert primary_att is not None
    assert error_code(c.detach_network_interface, AttachmentId=primary_att.id) == "OperationNotPermitted"
    assert (
        error_code(c.detach_network_interface, AttachmentId="eni-attach-0nope")
        == "InvalidAttachmentID.NotFound"
    )
    c.detach_network_interface(AttachmentId=att)
    assert cloud.eni(e).status == "available"
    assert error_code(c.detach_network_interface, AttachmentId=att) == "InvalidAttachmentID.NotFound"
    # The device index is free again.
    e2 = _eni(endpoint)
    c.attach_network_interface(NetworkInterfaceId=e2, InstanceId=inst.id, DeviceIndex=1)
    c.delete_network_interface(NetworkInterfaceId=e)
    assert (
        error_code(c.delete_network_interface, NetworkInterfaceId=e) == "InvalidNetworkInterfaceID.NotFound"
    )


def test_modify_attributes(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("m5.large", lab.subnet_a.id)
    e = _eni(endpoint)
    att = c.attach_network_interface(NetworkInterfaceId=e, InstanceId=inst.id, DeviceIndex=1)["AttachmentId"]
    c.modify_network_interface_attribute(NetworkInterfaceId=e, SourceDestCheck={"Value": False})
    assert cloud.eni(e).source_dest_check is False
    sg = cloud.create_security_group(lab.vpc.id, "calico")
    c.modify_network_interface_attribute(NetworkInterfaceId=e, Groups=[sg.id])
    assert cloud.eni(e).security_group_ids == [sg.id]
    assert error_code(c.modify_network_interface_attribute, NetworkInterfaceId=e, Groups=["sg-0nope"]) == (
        "InvalidGroup.NotFound"
    )
    c.modify_network_interface_attribute(
        NetworkInterfaceId=e, Attachment={"AttachmentId": att, "DeleteOnTermination": True}
    )
    assert (
        error_code(
            c.modify_network_interface_attribute,
            NetworkInterfaceId=e,
            Attachment={"AttachmentId": "eni-attach-0nope", "DeleteOnTermination": True},
        )
        == "InvalidAttachmentID.NotFound"
    )
    c.modify_network_interface_attribute(NetworkInterfaceId=e, Description={"Value": "new"})
    assert cloud.eni(e).description == "new"
    assert error_code(
        c.modify_network_interface_attribute, NetworkInterfaceId="eni-0nope", SourceDestCheck={"Value": True}
    ) == ("InvalidNetworkInterfaceID.NotFound")
    cloud.terminate_instance(inst.id)
    assert cloud.enis() == []  # DeleteOnTermination removed the secondary ENI with the primary
