"""The pod fence's rule text (golden), its idempotence against what iptables-save shows, and endpoint
resolution."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from vpcnet.dataplane.hostnet import parse_save
from vpcnet.dataplane.podfence import PodFence, jump_rules, render, resolve_endpoints

FENCE = PodFence("eni", ((IPv4Address("10.0.255.10"), 2379),), block_imds=True)

GOLDEN = """\
*filter
:VPCNET-POD-FENCE - [0:0]
-A VPCNET-POD-FENCE -d 10.0.255.10/32 -p tcp -m tcp --dport 2379 -m comment --comment "vpcnet, pods off the datastore" -j REJECT --reject-with tcp-reset
-A VPCNET-POD-FENCE -d 169.254.169.254/32 -p tcp -m comment --comment "vpcnet, pods off IMDS" -j REJECT --reject-with tcp-reset
-A VPCNET-POD-FENCE -d 169.254.169.254/32 -m comment --comment "vpcnet, pods off IMDS" -j REJECT --reject-with icmp-port-unreachable
-I FORWARD 1 -i eni+ -m comment --comment "vpcnet, pod fence" -j VPCNET-POD-FENCE
-I INPUT 1 -i eni+ -m comment --comment "vpcnet, pod fence" -j VPCNET-POD-FENCE
COMMIT
"""  # noqa: E501


# A dual-stack node's fence: etcd endpoints of both families, IPv6 pods.
DUAL = PodFence(
    "eni",
    (
        (IPv6Address("fd00:10::a"), 2379),
        (IPv4Address("10.0.255.10"), 2379),
        (IPv6Address("fd00:10::a"), 2380),
    ),
    block_imds=True,
    ipv6=True,
)

GOLDEN6 = """\
*filter
:VPCNET-POD-FENCE - [0:0]
-A VPCNET-POD-FENCE -d fd00:10::a/128 -p tcp -m tcp --dport 2379 -m comment --comment "vpcnet, pods off the datastore" -j REJECT --reject-with tcp-reset
-A VPCNET-POD-FENCE -d fd00:10::a/128 -p tcp -m tcp --dport 2380 -m comment --comment "vpcnet, pods off the datastore" -j REJECT --reject-with tcp-reset
-A VPCNET-POD-FENCE -d fd00:ec2::254/128 -p tcp -m comment --comment "vpcnet, pods off IMDS" -j REJECT --reject-with tcp-reset
-A VPCNET-POD-FENCE -d fd00:ec2::254/128 -m comment --comment "vpcnet, pods off IMDS" -j REJECT --reject-with icmp6-port-unreachable
-I FORWARD 1 -i eni+ -m comment --comment "vpcnet, pod fence" -j VPCNET-POD-FENCE
-I INPUT 1 -i eni+ -m comment --comment "vpcnet, pod fence" -j VPCNET-POD-FENCE
COMMIT
"""  # noqa: E501


def test_golden_text() -> None:
    assert render(FENCE) == GOLDEN


def test_golden_text_ipv6_each_family_holds_only_its_own_addresses() -> None:
    assert render(DUAL, family=6) == GOLDEN6
    assert render(DUAL, family=4) == GOLDEN  # the IPv6 endpoints never reach iptables


def test_the_ipv6_chain_only_when_the_node_has_ipv6_pods() -> None:
    assert FENCE.families() == (4,) and DUAL.families() == (4, 6)


def test_jumps_already_present_are_not_added_again() -> None:
    saved = "*filter\n:FORWARD ACCEPT [0:0]\n" + "\n".join(jump_rules(FENCE)) + "\nCOMMIT\n"
    text = render(FENCE, parse_save(saved)["filter"])
    assert "-I " not in text and text.count("-A VPCNET-POD-FENCE") == 3


def test_without_block_imds_only_the_datastore_is_fenced() -> None:
    text = render(PodFence("cali", ((IPv4Address("10.0.255.10"), 2379),)))
    assert "169.254.169.254" not in text and "-i cali+" in text


def test_endpoints_resolve_and_loopback_is_left_out() -> None:
    endpoints = [("10.1.2.3", 2379), ("127.0.0.1", 2379), ("localhost", 2379), ("10.1.2.3", 2379)]
    got = resolve_endpoints(endpoints)
    assert got == ((IPv4Address("10.1.2.3"), 2379),)


def test_ipv6_endpoints_resolve_too() -> None:
    got = resolve_endpoints([("fd00:10::a", 2379), ("::1", 2379), ("10.1.2.3", 2379)])
    assert got == ((IPv6Address("fd00:10::a"), 2379), (IPv4Address("10.1.2.3"), 2379))


def test_a_name_that_does_not_resolve_is_left_out() -> None:
    assert resolve_endpoints([("no-such-host.invalid", 2379)]) == ()
