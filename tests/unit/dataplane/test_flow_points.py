"""Flow log verdict points: the layout's NFLOG actions, both printers, and the prefix -> decider table."""

from __future__ import annotations

import pytest

from vpcnet.dataplane import flow_points, iptables_render, nft_render, rule_layout
from vpcnet.dataplane.policy_state import (
    DesiredState,
    EndpointSpec,
    FlowLogSpec,
    PolicyChainSpec,
    PolicyRule,
    PortMatch,
    PortRange,
    TierPolicies,
)

POLICY = "knp/shop/deny-db"
IFACE = "eni0123456789a"


def state(flow_logs: FlowLogSpec | None, tier: str = "default") -> DesiredState:
    ep = EndpointSpec(IFACE, ("10.0.0.2/32",), ingress=(TierPolicies(tier, (POLICY,)),))
    rules = (
        PolicyRule("deny", "tcp", dst_ports=PortMatch((PortRange.single(5432),)), spec_index=3),
        PolicyRule("log"),
        PolicyRule("allow", spec_index=4),
    )
    policy = PolicyChainSpec(POLICY, "ingress", rules)
    return DesiredState(("eni",), {IFACE: ep}, {(POLICY, "ingress"): policy}, {}, flow_logs=flow_logs)


def nflog_prefixes(layout: rule_layout.Layout) -> list[str]:
    return [
        action.prefix
        for item in layout.items
        if isinstance(item, rule_layout.Chain)
        for rule in item.rules
        for action in rule.actions
        if isinstance(action, rule_layout.Nflog)
    ]


def test_off_has_no_log_actions() -> None:
    assert nflog_prefixes(rule_layout.layout(state(None))) == []


def test_denied_logs_every_drop_point_and_no_accept_point() -> None:
    chain = flow_points.rule_prefix("deny", "ingress", 3, state(None).policies[(POLICY, "ingress")].chain)
    assert sorted(nflog_prefixes(rule_layout.layout(state(FlowLogSpec("denied"))))) == sorted(
        [flow_points.ANTI_SPOOFING, "Ti default", chain]
    )


def test_all_adds_sampled_accept_points() -> None:
    layout = rule_layout.layout(state(FlowLogSpec("all", allow_rate=7)))
    prefixes = nflog_prefixes(layout)
    assert {"Ni", "Ne"} <= set(prefixes)
    assert any(p.startswith("Ai4 ") for p in prefixes)
    rates = {
        a.prefix: a.rate
        for item in layout.items
        if isinstance(item, rule_layout.Chain)
        for r in item.rules
        for a in r.actions
        if isinstance(a, rule_layout.Nflog)
    }
    assert rates["Ni"] == 7 and rates["Ti default"] == 0  # denials are never sampled


def test_printers_log_before_the_verdict_with_the_same_matches() -> None:
    s = state(FlowLogSpec("all", group=33, allow_rate=5))
    chain = s.policies[(POLICY, "ingress")].chain
    ipt = iptables_render.render(s).chains[chain]
    log_line = next(line for line in ipt if '--nflog-prefix "Di3' in line)
    drop_line = ipt[ipt.index(log_line) + 1]
    assert "--nflog-group 33" in log_line and "--nflog-size 128" in log_line
    assert log_line.split(" -j ")[0].split('" ', 1)[1] == drop_line.split(" -j ")[0].split('" ', 1)[1]
    assert drop_line.endswith("-j DROP")
    allow_log = next(line for line in ipt if '--nflog-prefix "Ai4' in line)
    assert "-m limit --limit 5/second" in allow_log
    nft = nft_render.render(s).chains[chain]
    assert any('log prefix "Di3 ' in r and " group 33 snaplen 128 drop " in r for r in nft)
    # a sampled log is a rule of its own: the limit must not keep packets over the rate from their verdict
    sampled = next(r for r in nft if 'prefix "Ai4' in r)
    assert "limit rate 5/second" in sampled and "return" not in sampled


def test_the_table_names_policy_tier_and_spec_rule() -> None:
    s = state(FlowLogSpec("denied"), tier="security")
    chain = s.policies[(POLICY, "ingress")].chain
    table = flow_points.decider_table(s)
    decider = table[flow_points.rule_prefix("deny", "ingress", 3, chain)]
    assert (decider.verdict, decider.reason, decider.tier, decider.policy, decider.rule_index) == (
        "deny",
        "rule",
        "security",
        POLICY,
        3,
    )
    assert table["Ti security"].reason == "end-of-tier"
    # N: no policy, or every tier passed (the endpoint tells which)
    ep = s.endpoints[IFACE]
    assert flow_points.resolve(table, "Ni", ep) == flow_points.Decider("allow", "profile", "ingress")
    assert flow_points.resolve(table, "Ne", ep) == flow_points.Decider("allow", "no-policy", "egress")
    assert flow_points.resolve(table, "Di9 gone", ep) is None


def test_every_prefix_fits_iptables() -> None:
    long_tier = "t" * 200
    assert len(flow_points.end_of_tier_prefix("egress", long_tier)) <= flow_points.PREFIX_MAX
    assert flow_points.tier_token(long_tier) != flow_points.tier_token(long_tier + "x")
    chain = "vpcn-pi-" + "x" * 20
    assert len(flow_points.rule_prefix("deny", "ingress", 65535, chain)) <= flow_points.PREFIX_MAX
    with pytest.raises(ValueError, match="longer than"):
        flow_points.rule_prefix("deny", "ingress", 1, "x" * 80)


def test_flow_log_spec_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="mode"):
        FlowLogSpec("some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group"):
        FlowLogSpec(group=70000)
