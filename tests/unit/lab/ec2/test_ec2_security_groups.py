"""Security groups through boto3: create/delete, rules (authorize/revoke, ingress/egress), describe, the
groups of ENIs, EC2's limits and error codes, and nothing half-applied."""

from __future__ import annotations

from typing import Any

from ec2lab import Endpoint, error_code


def _group(ep: Endpoint, name: str = "web") -> str:
    r = ep.client.create_security_group(GroupName=name, Description=f"{name} group", VpcId=ep.lab.vpc.id)
    return str(r["GroupId"])


def _tcp(port: int, cidr: str = "10.0.0.0/16", to: int | None = None) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": to or port, "IpRanges": [{"CidrIp": cidr}]}


def _rules(ep: Endpoint, gid: str) -> list[dict[str, Any]]:
    r = ep.client.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])
    return list(r["SecurityGroupRules"])


def test_default_group_of_a_vpc_and_a_new_group_have_ec2s_initial_rules(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    default = c.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [lab.vpc.id]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]
    assert default["IpPermissions"] == [
        {
            "IpProtocol": "-1",
            "IpRanges": [],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
            "UserIdGroupPairs": [{"GroupId": default["GroupId"], "UserId": endpoint.cloud.account}],
        }
    ]
    egress_all = {
        "IpProtocol": "-1",
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        "Ipv6Ranges": [],
        "PrefixListIds": [],
        "UserIdGroupPairs": [],
    }
    assert default["IpPermissionsEgress"] == [egress_all]
    gid = _group(endpoint)
    new = c.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    assert new["IpPermissions"] == [] and new["IpPermissionsEgress"] == [egress_all]
    assert new["GroupName"] == "web" and new["Description"] == "web group" and new["VpcId"] == lab.vpc.id
    rules = _rules(endpoint, gid)
    assert len(rules) == 1 and rules[0]["IsEgress"] and rules[0]["SecurityGroupRuleId"].startswith("sgr-")
    assert (rules[0]["IpProtocol"], rules[0]["FromPort"], rules[0]["ToPort"]) == ("-1", -1, -1)
    # The default group cannot be deleted, nor a group named "default" made.
    assert error_code(c.delete_security_group, GroupId=default["GroupId"]) == "CannotDelete"
    assert (
        error_code(c.create_security_group, GroupName="default", Description="x", VpcId=lab.vpc.id)
        == "InvalidParameterValue"
    )


def test_create_rejects_what_ec2_rejects(endpoint: Endpoint) -> None:
    c, u, lab = endpoint.client, endpoint.unchecked, endpoint.lab
    _group(endpoint)
    assert error_code(c.create_security_group, GroupName="web", Description="x", VpcId=lab.vpc.id) == (
        "InvalidGroup.Duplicate"
    )
    assert error_code(c.create_security_group, GroupName="sg-1", Description="x", VpcId=lab.vpc.id) == (
        "InvalidParameterValue"
    )
    assert error_code(c.create_security_group, GroupName="x", Description="x", VpcId="vpc-0") == (
        "InvalidVpcID.NotFound"
    )
    assert error_code(c.create_security_group, GroupName="x", Description="x") == "VPCIdNotSpecified"
    assert error_code(u.create_security_group, GroupName="x", VpcId=lab.vpc.id) == "MissingParameter"
    assert error_code(c.create_security_group, GroupName="x", Description="é", VpcId=lab.vpc.id) == (
        "InvalidParameterValue"
    )


def test_authorize_normalises_and_lists_rules_one_per_peer(endpoint: Endpoint) -> None:
    c = endpoint.client
    gid, peer = _group(endpoint), _group(endpoint, "clients")
    r = c.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {
                "IpProtocol": "6",
                "FromPort": 80,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": "10.0.0.0/24", "Description": "subnet a"}, {"CidrIp": "10.0.1.0/24"}],
                "UserIdGroupPairs": [{"GroupId": peer}],
            },
            {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "47", "IpRanges": [{"CidrIp": "10.0.0.0/16"}]},
        ],
    )
    assert r["Return"] is True and len(r["SecurityGroupRules"]) == 5
    rows = {
        (x["IpProtocol"], x.get("CidrIpv4") or x["ReferencedGroupInfo"]["GroupId"]): x
        for x in _rules(endpoint, gid)
        if not x["IsEgress"]
    }
    assert set(rows) == {
        ("tcp", "10.0.0.0/24"),
        ("tcp", "10.0.1.0/24"),
        ("tcp", peer),
        ("icmp", "0.0.0.0/0"),
        ("47", "10.0.0.0/16"),
    }
    assert (rows[("tcp", peer)]["FromPort"], rows[("tcp", peer)]["ToPort"]) == (80, 443)
    assert rows[("tcp", "10.0.0.0/24")]["Description"] == "subnet a"
    assert (rows[("icmp", "0.0.0.0/0")]["FromPort"], rows[("icmp", "0.0.0.0/0")]["ToPort"]) == (8, -1)
    perms = c.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
    tcp = next(p for p in perms if p["IpProtocol"] == "tcp")
    assert [x["CidrIp"] for x in tcp["IpRanges"]] == ["10.0.0.0/24", "10.0.1.0/24"]
    assert [x["GroupId"] for x in tcp["UserIdGroupPairs"]] == [peer]
    assert "FromPort" not in next(p for p in perms if p["IpProtocol"] == "47")
    # The rule IDs name rules in DescribeSecurityGroupRules and in Revoke.
    one = r["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    got = c.describe_security_group_rules(SecurityGroupRuleIds=[one])["SecurityGroupRules"]
    assert [x["SecurityGroupRuleId"] for x in got] == [one]
    c.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[one])
    assert one not in {x["SecurityGroupRuleId"] for x in _rules(endpoint, gid)}
    assert error_code(c.revoke_security_group_ingress, GroupId=gid, SecurityGroupRuleIds=[one]) == (
        "InvalidSecurityGroupRuleId.NotFound"
    )


def test_bad_rules_get_ec2s_codes_and_change_nothing(endpoint: Endpoint) -> None:
    c, u = endpoint.client, endpoint.unchecked
    gid = _group(endpoint)
    c.authorize_security_group_ingress(GroupId=gid, IpPermissions=[_tcp(22)])
    before = _rules(endpoint, gid)
    cases = {
        "InvalidPermission.Duplicate": [_tcp(80), _tcp(22)],  # the second is there already: neither is added
        "InvalidParameterValue": [_tcp(80), {**_tcp(90), "IpProtocol": "bogus"}],
    }
    for code, perms in cases.items():
        assert error_code(c.authorize_security_group_ingress, GroupId=gid, IpPermissions=perms) == code
    bad_ports = [_tcp(90, to=80), _tcp(70000), {"IpProtocol": "udp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]
    for perm in bad_ports:
        assert error_code(c.authorize_security_group_ingress, GroupId=gid, IpPermissions=[perm]) == (
            "InvalidParameterValue"
        )
    assert error_code(
        c.authorize_security_group_ingress, GroupId=gid, IpPermissions=[_tcp(80, "10.0.0.1/33")]
    ) == ("InvalidParameterValue")
    no_peer = [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2}]
    assert (
        error_code(c.authorize_security_group_ingress, GroupId=gid, IpPermissions=no_peer)
        == "MissingParameter"
    )
    unknown = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-0123"}]}]
    assert error_code(c.authorize_security_group_ingress, GroupId=gid, IpPermissions=unknown) == (
        "InvalidGroup.NotFound"
    )
    assert error_code(c.authorize_security_group_ingress, GroupId="sg-0404", IpPermissions=[_tcp(1)]) == (
        "InvalidGroup.NotFound"
    )
    assert error_code(c.revoke_security_group_ingress, GroupId=gid, IpPermissions=[_tcp(22), _tcp(23)]) == (
        "InvalidPermission.NotFound"
    )
    assert error_code(u.revoke_security_group_egress, GroupId=gid) == "InvalidParameterCombination"
    tagged = {"ResourceType": "security-group-rule", "Tags": [{"Key": "k", "Value": "v"}]}
    assert error_code(
        c.authorize_security_group_ingress, GroupId=gid, IpPermissions=[_tcp(80)], TagSpecifications=[tagged]
    ) == ("InvalidParameterValue")
    assert _rules(endpoint, gid) == before


def test_flat_parameters_and_egress(endpoint: Endpoint) -> None:
    c = endpoint.client
    gid = _group(endpoint)
    c.authorize_security_group_ingress(
        GroupId=gid, IpProtocol="tcp", FromPort=5432, ToPort=5432, CidrIp="10.0.0.0/16"
    )
    c.revoke_security_group_egress(
        GroupId=gid, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    c.authorize_security_group_egress(GroupId=gid, IpPermissions=[_tcp(443, "0.0.0.0/0")])
    g = c.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    assert [(p["IpProtocol"], p["FromPort"]) for p in g["IpPermissions"]] == [("tcp", 5432)]
    assert [(p["IpProtocol"], p["FromPort"]) for p in g["IpPermissionsEgress"]] == [("tcp", 443)]


def test_rule_limit_per_direction(endpoint: Endpoint) -> None:
    c = endpoint.client
    gid = _group(endpoint)
    c.authorize_security_group_ingress(GroupId=gid, IpPermissions=[_tcp(p) for p in range(1, 61)])
    assert error_code(c.authorize_security_group_ingress, GroupId=gid, IpPermissions=[_tcp(61)]) == (
        "RulesPerSecurityGroupLimitExceeded"
    )
    # Egress counts apart: 1 (all egress) + 59 fit, the 61st does not.
    c.authorize_security_group_egress(GroupId=gid, IpPermissions=[_tcp(p) for p in range(1, 60)])
    assert error_code(c.authorize_security_group_egress, GroupId=gid, IpPermissions=[_tcp(60)]) == (
        "RulesPerSecurityGroupLimitExceeded"
    )


def test_groups_of_enis_limits_and_delete_dependencies(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    gids = [_group(endpoint, f"g{i}") for i in range(6)]
    assert error_code(c.create_network_interface, SubnetId=lab.subnet_a.id, Groups=gids) == (
        "SecurityGroupsPerInterfaceLimitExceeded"
    )
    eni = c.create_network_interface(SubnetId=lab.subnet_a.id, Groups=gids[:5])["NetworkInterface"]
    eni_id = eni["NetworkInterfaceId"]
    assert [g["GroupId"] for g in eni["Groups"]] == gids[:5]
    assert error_code(c.modify_network_interface_attribute, NetworkInterfaceId=eni_id, Groups=gids) == (
        "SecurityGroupsPerInterfaceLimitExceeded"
    )
    found = c.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [gids[0]]}])
    assert [e["NetworkInterfaceId"] for e in found["NetworkInterfaces"]] == [eni_id]
    # In use by an ENI, or referenced by another group's rule: DependencyViolation.
    assert error_code(c.delete_security_group, GroupId=gids[0]) == "DependencyViolation"
    c.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=[gids[5]])
    c.authorize_security_group_ingress(
        GroupId=gids[1], IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gids[0]}]}]
    )
    assert error_code(c.delete_security_group, GroupId=gids[0]) == "DependencyViolation"
    assert c.delete_security_group(GroupId=gids[1])["Return"] is True
    assert c.delete_security_group(GroupId=gids[0])["GroupId"] == gids[0]
    assert error_code(c.describe_security_groups, GroupIds=[gids[0]]) == "InvalidGroup.NotFound"


def test_describe_filters_and_pages(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    names = [f"p{i}" for i in range(7)]
    for n in names:
        _group(endpoint, n)
    seen: list[str] = []
    kwargs: dict[str, Any] = {"Filters": [{"Name": "group-name", "Values": ["p*"]}], "MaxResults": 5}
    while True:
        page = c.describe_security_groups(**kwargs)
        seen += [g["GroupName"] for g in page["SecurityGroups"]]
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    assert seen == names
    assert (
        len(
            c.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [lab.vpc.id]}])["SecurityGroups"]
        )
        == 8
    )
    assert error_code(c.describe_security_groups, Filters=[{"Name": "bogus", "Values": ["x"]}]) == (
        "InvalidParameterValue"
    )


def test_state_survives_a_restart(tmp_path: Any) -> None:
    from vpcnet.lab.ec2.state import Cloud

    cloud = Cloud(tmp_path / "s.json")
    vpc = cloud.create_vpc("10.0.0.0/16")
    g = cloud.create_security_group(vpc.id, "web", "web")
    added = cloud.authorize_security_group(g.id, [_tcp(80)], egress=False)
    again = Cloud(tmp_path / "s.json")
    assert [r.id for r in again.security_group(g.id).rules if not r.egress] == [added[0].id]
    assert again.default_security_group(vpc.id).rules[0].group_id == again.default_security_group(vpc.id).id
