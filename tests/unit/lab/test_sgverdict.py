"""The security-group verdict (pure): egress of the sender, ingress of the receiver, referenced groups as
their members, flows that never reach the VPC."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vpcnet.lab.ec2.model import SgRule
from vpcnet.lab.sgverdict import (
    SgEni,
    SgFlow,
    SgGroup,
    SgVerdict,
    enis_from_ec2,
    groups_from_ec2,
    sg_verdict,
)

ALL_OUT = SgRule("sgr-out", True, "-1", -1, -1, cidr="0.0.0.0/0")


def _eni(eni_id: str, ip: str, groups: tuple[str, ...], instance: str = "", branch: bool = False) -> SgEni:
    return SgEni(eni_id, instance, branch, (ip,), (), groups)


def _web_setup() -> tuple[list[SgEni], dict[str, SgGroup]]:
    """A client in sg-client, a server in sg-web that admits TCP/80 from sg-client's members."""
    enis = [
        _eni("eni-c", "10.0.1.10", ("sg-client",), "i-1"),
        _eni("eni-w", "10.0.2.20", ("sg-web",), "i-2"),
        _eni("eni-o", "10.0.3.30", ("sg-other",), "i-3"),
    ]
    web_in = SgRule("sgr-1", False, "tcp", 80, 80, group_id="sg-client")
    groups = {
        "sg-client": SgGroup("sg-client", "client", (ALL_OUT,)),
        "sg-web": SgGroup("sg-web", "web", (ALL_OUT, web_in)),
        "sg-other": SgGroup("sg-other", "other", (ALL_OUT,)),
    }
    return enis, groups


def test_a_referenced_group_admits_its_members_only() -> None:
    enis, groups = _web_setup()
    assert sg_verdict(enis, groups, SgFlow("10.0.1.10", "10.0.2.20", "tcp", 80)).allowed
    denied = sg_verdict(enis, groups, SgFlow("10.0.3.30", "10.0.2.20", "tcp", 80))
    assert not denied.allowed
    assert denied.reason == (
        "security group: no ingress rule of sg-web (web) on eni-w allows TCP/80 from 10.0.3.30"
    )


def test_ports_and_protocols_must_match() -> None:
    enis, groups = _web_setup()
    assert not sg_verdict(enis, groups, SgFlow("10.0.1.10", "10.0.2.20", "tcp", 81)).allowed
    assert not sg_verdict(enis, groups, SgFlow("10.0.1.10", "10.0.2.20", "udp", 80)).allowed
    assert not sg_verdict(enis, groups, SgFlow("10.0.1.10", "10.0.2.20", "132", 80)).allowed


def test_membership_follows_the_enis() -> None:
    enis, groups = _web_setup()
    moved = [*enis[:2], _eni("eni-o", "10.0.3.30", ("sg-other", "sg-client"), "i-3")]
    assert sg_verdict(moved, groups, SgFlow("10.0.3.30", "10.0.2.20", "tcp", 80)).allowed


def test_the_senders_egress_is_asked_first_and_named() -> None:
    enis, groups = _web_setup()
    groups["sg-client"] = SgGroup("sg-client", "client", ())
    verdict = sg_verdict(enis, groups, SgFlow("10.0.1.10", "10.0.2.20", "tcp", 80))
    assert not verdict.allowed
    assert "no egress rule of sg-client (client) on eni-c allows TCP/80 to 10.0.2.20" in verdict.reason


def test_prefixes_hold_addresses_and_count_as_members() -> None:
    enis, groups = _web_setup()
    enis[0] = SgEni("eni-c", "i-1", False, ("10.0.1.10",), ("10.0.1.32/28",), ("sg-client",))
    assert sg_verdict(enis, groups, SgFlow("10.0.1.40", "10.0.2.20", "tcp", 80)).allowed


def test_flows_that_stay_on_a_node_or_outside_the_vpc_are_not_judged() -> None:
    enis, groups = _web_setup()
    same_node = [*enis, _eni("eni-c2", "10.0.1.11", ("sg-other",), "i-1")]
    assert sg_verdict(same_node, {}, SgFlow("10.0.1.11", "10.0.1.10", "tcp", 80)).allowed
    assert sg_verdict(enis, groups, SgFlow("10.244.0.1", "10.244.0.2", "tcp", 80)).reason == ""
    # a branch ENI on the same instance crosses the VPC: its groups apply
    branch = [*enis, _eni("eni-b", "10.0.1.12", ("sg-other",), "", branch=True)]
    assert not sg_verdict(branch, groups, SgFlow("10.0.1.10", "10.0.1.12", "tcp", 80)).allowed


def test_from_ec2_shapes() -> None:
    enis = enis_from_ec2(
        [
            {
                "NetworkInterfaceId": "eni-1",
                "InterfaceType": "branch",
                "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.1.5"}],
                "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.1.16/28"}],
                "Groups": [{"GroupId": "sg-a", "GroupName": "a"}],
            }
        ]
    )
    assert enis == [SgEni("eni-1", "", True, ("10.0.1.5",), ("10.0.1.16/28",), ("sg-a",))]
    groups = groups_from_ec2(
        [{"GroupId": "sg-a", "GroupName": "a"}],
        [
            {"GroupId": "sg-a", "SecurityGroupRuleId": "sgr-1", "IsEgress": False, "IpProtocol": "tcp",
             "FromPort": 80, "ToPort": 90, "ReferencedGroupInfo": {"GroupId": "sg-a"}},
            {"GroupId": "sg-a", "SecurityGroupRuleId": "sgr-2", "IsEgress": True, "IpProtocol": "-1",
             "FromPort": -1, "ToPort": -1, "CidrIpv4": "0.0.0.0/0"},
        ],
    )  # fmt: skip
    assert groups["sg-a"].rules == (
        SgRule("sgr-1", False, "tcp", 80, 90, group_id="sg-a"),
        SgRule("sgr-2", True, "-1", -1, -1, cidr="0.0.0.0/0"),
    )


_RULES = st.builds(
    SgRule,
    id=st.just("sgr-x"),
    egress=st.booleans(),
    protocol=st.sampled_from(["-1", "tcp", "udp"]),
    from_port=st.integers(0, 100),
    to_port=st.integers(100, 200),
    cidr=st.sampled_from(["0.0.0.0/0", "10.0.1.0/24", "10.0.2.0/24", ""]),
    group_id=st.just(""),
).map(lambda r: r if r.cidr else SgRule(r.id, r.egress, r.protocol, r.from_port, r.to_port, group_id="sg-a"))


@given(
    st.lists(_RULES, max_size=6),
    st.lists(_RULES, max_size=6),
    _RULES,
    st.sampled_from(["tcp", "udp"]),
    st.integers(0, 250),
)
def test_a_rule_more_never_denies_and_the_verdict_is_both_sides(
    a_rules: list[SgRule], b_rules: list[SgRule], extra: SgRule, protocol: str, port: int
) -> None:
    enis = [_eni("eni-a", "10.0.1.10", ("sg-a",), "i-1"), _eni("eni-b", "10.0.2.20", ("sg-b",), "i-2")]
    flow = SgFlow("10.0.1.10", "10.0.2.20", protocol, port)

    def verdict(a: list[SgRule], b: list[SgRule]) -> bool:
        groups = {"sg-a": SgGroup("sg-a", "a", tuple(a)), "sg-b": SgGroup("sg-b", "b", tuple(b))}
        return sg_verdict(enis, groups, flow).allowed

    before = verdict(a_rules, b_rules)
    assert not before or verdict([*a_rules, extra], b_rules)
    assert not before or verdict(a_rules, [*b_rules, extra])
    out_ok = verdict(a_rules, [*b_rules, SgRule("i", False, "-1", -1, -1, cidr="0.0.0.0/0")])
    in_ok = verdict([*a_rules, SgRule("o", True, "-1", -1, -1, cidr="0.0.0.0/0")], b_rules)
    assert before == (out_ok and in_ok)
    assert not verdict([], b_rules) and not verdict(a_rules, [])


def test_a_branch_is_on_its_trunks_instance_and_standard_mode_keeps_its_node_local() -> None:
    enis = enis_from_ec2(
        [
            {"NetworkInterfaceId": "eni-t", "InterfaceType": "trunk", "Attachment": {"InstanceId": "i-1"},
             "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.1.4"}], "Groups": [{"GroupId": "sg-n"}]},
            {"NetworkInterfaceId": "eni-p", "Attachment": {"InstanceId": "i-1"},
             "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.1.9"}], "Groups": [{"GroupId": "sg-n"}]},
            {"NetworkInterfaceId": "eni-b", "InterfaceType": "branch",
             "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.1.5"}], "Groups": [{"GroupId": "sg-w"}]},
        ],
        [{"BranchInterfaceId": "eni-b", "TrunkInterfaceId": "eni-t", "VlanId": 1}],
    )  # fmt: skip
    assert [e.instance for e in enis] == ["i-1", "i-1", "i-1"]
    groups = {"sg-n": SgGroup("sg-n", "nodes", (ALL_OUT,)), "sg-w": SgGroup("sg-w", "web", (ALL_OUT,))}
    to_branch = SgFlow("10.0.1.9", "10.0.1.5", "udp", 80)
    assert not sg_verdict(enis, groups, to_branch).allowed  # strict: crosses the VPC, sg-w admits nothing
    assert sg_verdict(enis, groups, to_branch, strict=False) == SgVerdict(True, "")
