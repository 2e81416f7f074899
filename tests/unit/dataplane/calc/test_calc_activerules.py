"""Active rules: a policy is active while it selects a local endpoint; its chains and sets follow."""

from __future__ import annotations

from calc_docs import calico_policy

from vpcnet.dataplane.calc.activerules import ActiveRules, selects
from vpcnet.dataplane.calc.ipsets import IpSetCalculator
from vpcnet.dataplane.calc.labelindex import LabelIndex

RULE = {"action": "Allow", "source": {"selector": "role == 'client'"}}


def make() -> ActiveRules:
    return ActiveRules(IpSetCalculator(LabelIndex()))


def test_policy_is_active_only_while_it_selects_a_local_endpoint() -> None:
    rules = make()
    policy = calico_policy("p", {"selector": "app == 'web'", "ingress": [RULE]}, ns="a")
    assert rules.put_policy(policy, {"a/db": {"app": "db", "projectcalico.org/namespace": "a"}}) == set()
    assert rules.chains == {} and rules.ipsets.sets == {}
    rules.put_endpoint("a/web", {"app": "web", "projectcalico.org/namespace": "a"})
    assert set(rules.chains) == {("np/a/p", "ingress")} and len(rules.ipsets.sets) == 1
    assert [p.id for p in rules.selected("a/web", "ingress")] == ["np/a/p"]
    assert rules.selected("a/web", "egress") == []
    rules.remove_endpoint("a/web")
    assert rules.chains == {} and rules.ipsets.sets == {}


def test_changing_or_deleting_an_active_policy_touches_its_endpoints() -> None:
    rules = make()
    local = {"a/web": {"app": "web", "projectcalico.org/namespace": "a"}}
    rules.put_endpoint("a/web", local["a/web"])
    policy = calico_policy("p", {"selector": "app == 'web'", "ingress": [RULE]}, ns="a")
    assert rules.put_policy(policy, local) == {"a/web"}
    assert rules.put_policy(policy, local) == set()  # the same policy again: nothing to do
    denying = calico_policy(
        "p", {"selector": "app == 'web'", "ingress": [{**RULE, "action": "Deny"}]}, ns="a"
    )
    assert rules.put_policy(denying, local) == {"a/web"}
    assert rules.chains[("np/a/p", "ingress")].rules[0].action == "deny"
    assert rules.remove_policy("np/a/p") == {"a/web"} and rules.chains == {}
    assert rules.remove_policy("np/a/p") == set()


def test_selects_needs_the_direction_in_the_policys_types() -> None:
    policy = calico_policy("p", {"selector": "all()", "types": ["Egress"]})
    assert selects(policy, "egress", {}) and not selects(policy, "ingress", {})
