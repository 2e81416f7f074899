"""The rule scanner: policies in data plane terms, and the sets they need, named from their content."""

from __future__ import annotations

from calc_docs import calico_policy

from vpcnet.dataplane.calc.rulescan import CidrSet, NamedPortSet, SelectorSet, scan_policy
from vpcnet.dataplane.policy_state import PortRange


def test_rules_become_chains_and_one_set_per_distinct_selector() -> None:
    rule = {
        "action": "Allow",
        "protocol": "TCP",
        "source": {"selector": "app == 'a'"},
        "destination": {"ports": [80]},
    }
    policy = calico_policy(
        "p", {"selector": "all()", "types": ["Ingress", "Egress"], "ingress": [rule, rule], "egress": [rule]}
    )
    scanned = scan_policy(policy)
    assert set(scanned.chains) == {"ingress", "egress"}
    ingress = scanned.chains["ingress"]
    assert ingress.policy_id == "gnp/p" and len(ingress.rules) == 2
    (request,) = scanned.sets  # three uses, one set
    assert isinstance(request, SelectorSet) and ingress.rules[0].src_sets == (request.name,)
    assert ingress.rules[0].dst_ports.ranges == (PortRange(80, 80),) and ingress.rules[0].protocol == "tcp"


def test_cidrs_and_named_ports_are_sets_too() -> None:
    rule = {
        "action": "Deny",
        "protocol": "UDP",
        "source": {"nets": ["10.0.0.0/8", "10.1.0.0/16"]},
        "destination": {"selector": "app == 'dns'", "ports": ["dns"]},
    }
    scanned = scan_policy(calico_policy("p", {"selector": "all()", "ingress": [rule]}))
    (cidrs,) = [r for r in scanned.sets if isinstance(r, CidrSet)]
    (named,) = [r for r in scanned.sets if isinstance(r, NamedPortSet)]
    (selector,) = [r for r in scanned.sets if isinstance(r, SelectorSet)]
    assert cidrs.members == frozenset({"10.0.0.0/8"})  # collapsed
    assert named.port == "dns" and named.protocol == 17 and named.selector == selector.selector
    (chain_rule,) = scanned.chains["ingress"].rules
    assert chain_rule.dst_ports.named_sets == (named.name,) and chain_rule.action == "deny"


def test_rules_that_never_match_ipv4_are_dropped_without_their_sets() -> None:
    v6_only = {"action": "Allow", "source": {"selector": "app == 'a'", "nets": ["fd00::/64"]}}
    icmp6 = {"action": "Allow", "protocol": "ICMPv6", "source": {"selector": "app == 'b'"}}
    scanned = scan_policy(calico_policy("p", {"selector": "all()", "ingress": [v6_only, icmp6]}))
    assert scanned.chains["ingress"].rules == () and scanned.sets == ()


def test_only_the_policys_directions_get_chains() -> None:
    scanned = scan_policy(calico_policy("p", {"selector": "all()", "types": ["Egress"]}, ns="a"))
    assert list(scanned.chains) == ["egress"] and scanned.chains["egress"].policy_id == "np/a/p"
