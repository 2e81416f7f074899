"""The resolver: tiers in order, policies in order within a tier, default actions, unknown tiers."""

from __future__ import annotations

from calc_docs import calico_policy

from vpcnet.dataplane.calc.resolver import EndpointResolver, order_tiers
from vpcnet.dataplane.policy_state import TierPolicies
from vpcnet.policy.model import DEFAULT_TIER_SPEC, Action, TierSpec


def test_tiers_then_policies_in_order_and_unknown_tiers_left_out() -> None:
    first = calico_policy("t1.b", {"tier": "t1", "selector": "all()", "order": 5})
    second = calico_policy("t1.a", {"tier": "t1", "selector": "all()"})  # no order: last in its tier
    default = calico_policy("d", {"selector": "all()", "order": 1})
    nowhere = calico_policy("t9.x", {"tier": "t9", "selector": "all()"})
    tiers = {"default": DEFAULT_TIER_SPEC, "t1": TierSpec("t1", 10, Action.PASS)}
    assert order_tiers([second, default, nowhere, first], tiers) == (
        TierPolicies("t1", ("gnp/t1.b", "gnp/t1.a"), "pass"),
        TierPolicies("default", ("gnp/d",), "deny"),
    )


def test_endpoints_and_tier_changes() -> None:
    resolver = EndpointResolver()
    policy = calico_policy("d", {"selector": "all()"})
    resolver.put_endpoint("a/p", "eni0123456789a", ("10.0.0.1/32",), [policy], [])
    spec = resolver.endpoints["eni0123456789a"]
    assert spec.ingress == (TierPolicies("default", ("gnp/d",)),) and spec.egress == ()
    assert resolver.changed and resolver.iface_of == {"a/p": "eni0123456789a"}
    resolver.changed = False
    resolver.put_endpoint("a/p", "eni0123456789a", ("10.0.0.1/32",), [policy], [])
    assert not resolver.changed and resolver.endpoints["eni0123456789a"] is spec
    assert resolver.put_tier(TierSpec("default", 5, Action.PASS))
    assert not resolver.put_tier(TierSpec("default", 5, Action.PASS))
    assert (
        resolver.remove_tier("default") and resolver.tiers["default"] == DEFAULT_TIER_SPEC
    )  # built-in again
    assert not resolver.remove_tier("t1")
    resolver.remove_endpoint("a/p")
    assert resolver.endpoints == {} and resolver.iface_of == {}
