"""Describe* through boto3: shapes, filters, pagination, tags, instance types."""

from __future__ import annotations

from ec2lab import Endpoint, error_code

from vpcnet.ipam.limits import all_instance_types


def test_describe_instances_vpcs_subnets(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("m5.large", lab.subnet_b.id, tags={"Name": "node-1"})
    eni = c.create_network_interface(SubnetId=lab.subnet_b.id, SecondaryPrivateIpAddressCount=1)[
        "NetworkInterface"
    ]
    c.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=inst.id, DeviceIndex=1
    )
    [res] = c.describe_instances(InstanceIds=[inst.id])["Reservations"]
    [i] = res["Instances"]
    assert i["InstanceId"] == inst.id and i["InstanceType"] == "m5.large"
    assert i["Placement"]["AvailabilityZone"] == "us-west-2b" and i["State"]["Name"] == "running"
    assert i["SubnetId"] == lab.subnet_b.id and i["VpcId"] == lab.vpc.id
    assert i["PrivateIpAddress"] == cloud.eni(inst.primary_eni_id).primary_ip
    assert i["Tags"] == [{"Key": "Name", "Value": "node-1"}]
    assert [(n["NetworkInterfaceId"], n["Attachment"]["DeviceIndex"]) for n in i["NetworkInterfaces"]] == [
        (inst.primary_eni_id, 0),
        (eni["NetworkInterfaceId"], 1),
    ]
    assert len(i["NetworkInterfaces"][1]["PrivateIpAddresses"]) == 2
    assert error_code(c.describe_instances, InstanceIds=["i-0nope"]) == "InvalidInstanceID.NotFound"
    by_tag = c.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["node-*"]}])["Reservations"]
    assert [r["Instances"][0]["InstanceId"] for r in by_tag] == [inst.id]
    assert (
        c.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["stopped"]}])["Reservations"]
        == []
    )

    [vpc] = c.describe_vpcs()["Vpcs"]
    assert vpc["VpcId"] == lab.vpc.id and vpc["CidrBlock"] == "10.0.0.0/16"
    assert vpc["CidrBlockAssociationSet"][0]["CidrBlock"] == "10.0.0.0/16"
    assert error_code(c.describe_vpcs, VpcIds=["vpc-0nope"]) == "InvalidVpcID.NotFound"

    subnets = c.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [lab.vpc.id]}])["Subnets"]
    assert {s["SubnetId"]: s["AvailabilityZone"] for s in subnets} == {
        lab.subnet_a.id: "us-west-2a",
        lab.subnet_b.id: "us-west-2b",
    }
    tagged = c.describe_subnets(Filters=[{"Name": "tag:kubernetes.io/role/cni", "Values": ["1"]}])["Subnets"]
    assert [s["SubnetId"] for s in tagged] == [lab.subnet_a.id]
    b = c.describe_subnets(SubnetIds=[lab.subnet_b.id])["Subnets"][0]
    assert b["AvailableIpAddressCount"] == 251 - 3
    assert error_code(c.describe_subnets, SubnetIds=["subnet-0nope"]) == "InvalidSubnetID.NotFound"


def test_describe_instance_types(endpoint: Endpoint) -> None:
    c = endpoint.client
    [m5] = c.describe_instance_types(InstanceTypes=["m5.large"])["InstanceTypes"]
    net = m5["NetworkInfo"]
    assert (net["MaximumNetworkInterfaces"], net["Ipv4AddressesPerInterface"]) == (3, 10)
    assert net["NetworkCards"] == [{"NetworkCardIndex": 0, "MaximumNetworkInterfaces": 3}]
    assert net["DefaultNetworkCardIndex"] == 0
    assert m5["Hypervisor"] == "nitro" and m5["BareMetal"] is False and m5["VCpuInfo"]["DefaultVCpus"] == 2
    [multi] = c.describe_instance_types(InstanceTypes=["c6in.32xlarge"])["InstanceTypes"]
    assert [card["MaximumNetworkInterfaces"] for card in multi["NetworkInfo"]["NetworkCards"]] == [8, 8]
    [metal] = c.describe_instance_types(InstanceTypes=["m5.metal"])["InstanceTypes"]
    assert metal["BareMetal"] is True and "Hypervisor" not in metal
    assert error_code(c.describe_instance_types, InstanceTypes=["m5.huge"]) == "InvalidInstanceType"
    assert error_code(endpoint.unchecked.describe_instance_types, MaxResults=101) == "InvalidParameterValue"
    first = c.describe_instance_types(MaxResults=100)
    assert len(first["InstanceTypes"]) == 100 and first["NextToken"]
    m5_family = [t for t in all_instance_types() if t.startswith("m5.")]
    pages = c.get_paginator("describe_instance_types").paginate(
        Filters=[{"Name": "instance-type", "Values": ["m5.*"]}], PaginationConfig={"PageSize": 5}
    )
    names = [t["InstanceType"] for page in pages for t in page["InstanceTypes"]]
    assert names == m5_family and len(m5_family) > 5


def _make_enis(ep: Endpoint, n: int, **kwargs: object) -> list[str]:
    return [
        ep.client.create_network_interface(SubnetId=ep.lab.subnet_a.id, **kwargs)["NetworkInterface"][
            "NetworkInterfaceId"
        ]
        for _ in range(n)
    ]


def test_network_interface_filters(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("m5.large", lab.subnet_a.id)
    mine = _make_enis(
        endpoint,
        2,
        Description="aws-K8S-" + inst.id,
        TagSpecifications=[
            {
                "ResourceType": "network-interface",
                "Tags": [{"Key": "node.k8s.amazonaws.com/instance_id", "Value": inst.id}],
            }
        ],
    )
    c.attach_network_interface(NetworkInterfaceId=mine[0], InstanceId=inst.id, DeviceIndex=1)
    other = c.create_network_interface(SubnetId=lab.subnet_b.id)["NetworkInterface"]["NetworkInterfaceId"]

    def ids(*filters: tuple[str, list[str]]) -> set[str]:
        r = c.describe_network_interfaces(Filters=[{"Name": n, "Values": v} for n, v in filters])
        return {e["NetworkInterfaceId"] for e in r["NetworkInterfaces"]}

    assert ids(("attachment.instance-id", [inst.id])) == {inst.primary_eni_id, mine[0]}
    assert ids(("tag-key", ["node.k8s.amazonaws.com/instance_id"])) == set(mine)
    assert ids(("tag:node.k8s.amazonaws.com/instance_id", [inst.id])) == set(mine)
    assert ids(("status", ["available"])) == {mine[1], other}
    assert ids(("status", ["available"]), ("tag-key", ["node.k8s.amazonaws.com/instance_id"])) == {mine[1]}
    assert ids(("subnet-id", [lab.subnet_b.id])) == {other}
    assert ids(("vpc-id", [lab.vpc.id])) == {inst.primary_eni_id, *mine, other}
    assert ids(("network-interface-id", [other, mine[1]])) == {other, mine[1]}
    assert ids(("attachment.status", ["attached"])) == {inst.primary_eni_id, mine[0]}
    assert ids(("description", ["aws-K8S-*"])) == set(mine)
    assert ids(("subnet-id", ["subnet-0nope"])) == set()
    assert error_code(c.describe_network_interfaces, Filters=[{"Name": "colour", "Values": ["x"]}]) == (
        "InvalidParameterValue"
    )
    assert error_code(c.describe_network_interfaces, NetworkInterfaceIds=["eni-0nope"]) == (
        "InvalidNetworkInterfaceID.NotFound"
    )


def test_network_interface_pagination(endpoint: Endpoint) -> None:
    c = endpoint.client
    made = _make_enis(endpoint, 12)
    first = c.describe_network_interfaces(MaxResults=5)
    assert len(first["NetworkInterfaces"]) == 5 and first["NextToken"]
    pages = list(c.get_paginator("describe_network_interfaces").paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["NetworkInterfaces"]) for p in pages] == [5, 5, 2]
    assert [e["NetworkInterfaceId"] for p in pages for e in p["NetworkInterfaces"]] == made
    assert "NextToken" not in pages[-1]
    # A page stays correct when the state changes between pages.
    c.delete_network_interface(NetworkInterfaceId=made[0])
    second = c.describe_network_interfaces(MaxResults=5, NextToken=first["NextToken"])
    assert [e["NetworkInterfaceId"] for e in second["NetworkInterfaces"]] == made[5:10]
    describe = endpoint.unchecked.describe_network_interfaces
    assert error_code(describe, MaxResults=4) == "InvalidParameterValue"
    assert error_code(describe, MaxResults=1001) == "InvalidParameterValue"
    assert error_code(describe, MaxResults=5, NetworkInterfaceIds=[made[1]]) == "InvalidParameterCombination"
    assert error_code(describe, MaxResults=5, NextToken="garbage") == "InvalidPaginationToken"


def test_tags(endpoint: Endpoint) -> None:
    c, lab, cloud = endpoint.client, endpoint.lab, endpoint.cloud
    inst = cloud.launch_instance("m5.large", lab.subnet_a.id)
    [eni] = _make_enis(endpoint, 1)
    c.create_tags(Resources=[eni, inst.id], Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    assert cloud.eni(eni).tags == {"a": "1", "b": "2"} and cloud.instance(inst.id).tags == {
        "a": "1",
        "b": "2",
    }
    c.delete_tags(Resources=[eni], Tags=[{"Key": "a", "Value": "other"}])  # value differs: kept
    assert cloud.eni(eni).tags == {"a": "1", "b": "2"}
    c.delete_tags(Resources=[eni], Tags=[{"Key": "a"}])
    assert cloud.eni(eni).tags == {"b": "2"}
    c.delete_tags(Resources=[inst.id])  # no tags given: all of them
    assert cloud.instance(inst.id).tags == {}
    assert error_code(c.create_tags, Resources=["eni-0nope"], Tags=[{"Key": "a", "Value": "1"}]) == (
        "InvalidNetworkInterfaceID.NotFound"
    )
    assert error_code(c.create_tags, Resources=[eni], Tags=[{"Key": "aws:x", "Value": "1"}]) == (
        "InvalidParameterValue"
    )
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    assert error_code(c.create_tags, Resources=[eni], Tags=many) == "TagLimitExceeded"
    assert cloud.eni(eni).tags == {"b": "2"}
