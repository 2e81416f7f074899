"""The security-group nft rendering: rule matches, member sets, per-ENI chains, the exemptions."""

from __future__ import annotations

from dataclasses import dataclass

from vpcnet.lab.ec2.model import SecurityGroup, SgRule
from vpcnet.lab.sgfabric import TRACKED_MARK, match_of, members_set, render_security_groups


@dataclass(frozen=True)
class Port:
    port: str
    addresses: tuple[str, ...]
    prefixes: tuple[str, ...]
    security_groups: tuple[str, ...]


def rule(egress: bool, protocol: str, lo: int = -1, hi: int = -1, cidr: str = "", group: str = "") -> SgRule:
    return SgRule(
        id="sgr-1", egress=egress, protocol=protocol, from_port=lo, to_port=hi, cidr=cidr, group_id=group
    )


def test_matches_of_each_kind_of_rule() -> None:
    assert match_of(rule(False, "tcp", 80, 80, cidr="10.0.0.0/16")) == "ip saddr 10.0.0.0/16 tcp dport 80"
    assert match_of(rule(True, "udp", 1000, 2000, group="sg-1")) == "ip daddr @m_sg_1 udp dport 1000-2000"
    assert match_of(rule(False, "icmp", 8, -1, cidr="0.0.0.0/0")) == "ip protocol icmp icmp type 8"
    assert match_of(rule(False, "icmp", 3, 4, cidr="0.0.0.0/0")) == "ip protocol icmp icmp type 3 icmp code 4"
    assert match_of(rule(False, "47", cidr="10.1.0.0/16")) == "ip saddr 10.1.0.0/16 ip protocol 47"
    assert match_of(rule(True, "-1", cidr="0.0.0.0/0")) == ""  # everything


def test_render_chains_sets_and_exemptions() -> None:
    web = SecurityGroup(
        id="sg-web",
        vpc_id="vpc-1",
        name="web",
        description="",
        seq=1,
        rules=[rule(False, "tcp", 443, 443, group="sg-cli"), rule(True, "-1", cidr="0.0.0.0/0")],
    )
    cli = SecurityGroup(id="sg-cli", vpc_id="vpc-1", name="cli", description="", seq=2, rules=[])
    ports = [
        Port("eaaa", ("10.0.0.5", "10.0.0.6"), ("10.0.0.16/28",), ("sg-cli",)),
        Port("ebbb", ("10.0.1.5",), (), ("sg-web",)),
        Port("eccc", ("10.0.1.9",), (), ("sg-gone",)),  # a group the fabric does not know: no rules
    ]
    text = render_security_groups("lab", ports, {"sg-web": web, "sg-cli": cli})
    assert "table ip lab_sg {" in text and "table bridge lab_sg {" in text
    assert text.count("delete table") == 2  # both replaced whole, in the same transaction as the fabric's
    assert f"ct state established,related meta mark set meta mark | {TRACKED_MARK:#x}" in text
    # The clients' members: every address and prefix of the ENIs in the group.
    assert f"set {members_set('sg-cli')} {{" in text
    assert "elements = { 10.0.0.16/28, 10.0.0.5, 10.0.0.6 }" in text
    web_in = text.split("chain in_ebbb {")[1].split("}")[0]
    assert "ip saddr @m_sg_cli tcp dport 443 accept" in web_in and web_in.strip().endswith("drop")
    assert text.split("chain out_ebbb {")[1].split("}")[0].split() == ["accept", "drop"]
    # No egress rule in the clients' group and nothing for an unknown group: only drop.
    assert text.split("chain out_eaaa {")[1].split("}")[0].split() == ["drop"]
    assert text.split("chain in_eccc {")[1].split("}")[0].split() == ["drop"]
    for chain in ("sender", "receiver_bridged", "receiver_routed"):
        body = text.split(f"chain {chain} {{")[1].split("\n  }")[0]
        assert "meta protocol != ip accept" in body and "@control_plane accept" in body
        assert "jump" in body
