"""`lab probe --compare` with security groups: a pair policy allows and a group drops is expected blocked and
named with the group's missing rule, not reported as a disagreement."""

from __future__ import annotations

from vpcnet.cli.labprobe import disagreements, security_group_denials, with_security_groups
from vpcnet.lab.ec2.model import SgRule
from vpcnet.lab.probe import ProbeEndpoint
from vpcnet.lab.sgverdict import SgEni, SgGroup, SgView

OUT = SgRule("sgr-o", True, "-1", -1, -1, cidr="0.0.0.0/0")
WEB = SgRule("sgr-w", False, "tcp", 80, 80, cidr="10.0.1.0/24")


def _security() -> SgView:
    enis = [
        SgEni("eni-a", "i-1", False, ("10.0.1.10",), (), ("sg-a",)),
        SgEni("eni-b", "i-2", False, ("10.0.2.20",), (), ("sg-b",)),
        SgEni("eni-c", "", True, ("10.0.3.30",), (), ("sg-c",)),
    ]
    groups = {
        "sg-a": SgGroup("sg-a", "a", (OUT, SgRule("sgr-all", False, "-1", -1, -1, cidr="0.0.0.0/0"))),
        "sg-b": SgGroup("sg-b", "b", (OUT, SgRule("sgr-b", False, "-1", -1, -1, group_id="sg-b"))),
        "sg-c": SgGroup("sg-c", "c", (OUT, WEB)),
    }
    return SgView(tuple(enis), groups)


PODS = [
    ProbeEndpoint("x/a", "/run/netns/a", "10.0.1.10"),
    ProbeEndpoint("x/b", "/run/netns/b", "10.0.2.20"),
    ProbeEndpoint("x/c", "/run/netns/c", "10.0.3.30"),
]


def test_a_dropped_pair_that_policy_allows_is_labelled_not_a_disagreement() -> None:
    denials = security_group_denials(_security(), PODS, 80, "TCP")
    assert set(denials) == {("x/a", "x/b"), ("x/c", "x/b"), ("x/b", "x/c")}
    assert denials[("x/b", "x/c")] == (
        "security group: no ingress rule of sg-c (c) on eni-c allows TCP/80 from 10.0.2.20"
    )
    policy = {s.name: {t.name: True for t in PODS} for s in PODS}
    policy["x/c"]["x/b"] = False  # a policy denies this one too: it stays the policy's
    expected, by_groups = with_security_groups(policy, denials)
    assert [(s, d) for s, d, _ in by_groups] == [("x/a", "x/b"), ("x/b", "x/c")]
    measured = {s: dict(row) for s, row in expected.items()}
    assert disagreements(measured, expected) == []
    measured["x/a"]["x/b"] = True  # the VPC passed what a group should drop: that is a disagreement
    assert disagreements(measured, expected) == [("x/a", "x/b", True, False)]


def test_no_ec2_to_ask_means_no_group_verdicts() -> None:
    assert security_group_denials(None, PODS, 80, "TCP") == {}
    assert security_group_denials(_security(), PODS, 80, "UDP")[("x/b", "x/c")].endswith(
        "UDP/80 from 10.0.2.20"
    )
