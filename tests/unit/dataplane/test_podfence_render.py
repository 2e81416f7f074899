"""The pod fence's rule text (golden), its idempotence against what iptables-save shows, and endpoint
resolution."""

from __future__ import annotations

from ipaddress import IPv4Address

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


def test_golden_text() -> None:
    assert render(FENCE) == GOLDEN


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


def test_a_name_that_does_not_resolve_is_left_out() -> None:
    assert resolve_endpoints([("no-such-host.invalid", 2379)]) == ()
