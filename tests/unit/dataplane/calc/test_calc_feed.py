"""The one dispatch: a stored resource (or its deletion) becomes the calculation's call."""

from __future__ import annotations

import json
from typing import Any

import pytest
from calc_docs import parse, pod

from vpcnet.api.base import ResourceKey
from vpcnet.api.calico import Tier
from vpcnet.dataplane.calc.feed import KINDS, delete_resource, feed_resource, feed_stored, ref_of
from vpcnet.datastore.resources import ResourceRef, StoredResource
from vpcnet.policy.compile import compile_tier
from vpcnet.policy.model import DEFAULT_TIER_ORDER, Action, TierSpec


class Recorder:
    """Records the calls feed makes (the Calculation protocol)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda arg: self.calls.append((name, arg))


def stored(doc: dict[str, Any]) -> StoredResource:
    return StoredResource(ref_of(parse(doc)), doc, 1)


TIER = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "default"}, "spec": {}}
K8S = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "np", "namespace": "a"},
    "spec": {"podSelector": {}},
}


def test_every_kind_has_its_call_and_deletes_go_by_reference() -> None:
    calc = Recorder()
    feed_resource(calc, pod("p", "10.0.0.1"))
    feed_resource(calc, parse(K8S))
    feed_resource(calc, parse(TIER))
    for kind, namespace in [
        ("pod", "a"),
        ("namespace", None),
        ("networkpolicy.networking.k8s.io", "a"),
        ("networkpolicy.projectcalico.org", "a"),
        ("globalnetworkpolicy.projectcalico.org", None),
        ("tier.projectcalico.org", None),
        ("networkset.projectcalico.org", "a"),
        ("globalnetworkset.projectcalico.org", None),
        ("ippool.projectcalico.org", None),  # not the calculation's: ignored
    ]:
        delete_resource(calc, ResourceRef(kind, namespace, "x"))
    names = [name for name, _ in calc.calls]
    assert names[:3] == ["upsert_pod", "upsert_policy", "upsert_tier"]
    assert calc.calls[1][1].id == "knp/a/np"
    assert calc.calls[2][1] == TierSpec("default", DEFAULT_TIER_ORDER, Action.DENY)
    assert calc.calls[3:] == [
        ("delete_pod", "a/x"),
        ("delete_namespace", "x"),
        ("delete_policy", "knp/a/x"),
        ("delete_policy", "np/a/x"),
        ("delete_policy", "gnp/x"),
        ("delete_tier", "x"),
        ("delete_network_set", ResourceKey("NetworkSet", "a", "x")),
        ("delete_network_set", ResourceKey("GlobalNetworkSet", None, "x")),
    ]
    assert {ref_of(parse(K8S)).kind, ref_of(parse(TIER)).kind} <= KINDS


def test_stored_documents_are_parsed_and_bad_ones_change_nothing() -> None:
    calc = Recorder()
    good = stored(K8S)
    feed_stored(calc, good.ref, good)
    feed_stored(calc, good.ref, None)
    assert [name for name, _ in calc.calls] == ["upsert_policy", "delete_policy"]
    bad = json.loads(json.dumps(K8S))
    bad["spec"]["podSelector"] = {"matchLabels": {"a": ["not", "a", "string"]}}
    with pytest.raises(ValueError, match="podSelector"):
        feed_stored(calc, good.ref, StoredResource(good.ref, bad, 2))
    assert len(calc.calls) == 2


def test_default_tier_without_order_keeps_its_built_in_order() -> None:
    default = parse(TIER)
    other = parse({**TIER, "metadata": {"name": "t1"}, "spec": {"defaultAction": "Pass"}})
    assert isinstance(default, Tier) and isinstance(other, Tier)
    assert compile_tier(default).order == DEFAULT_TIER_ORDER
    assert compile_tier(other) == TierSpec("t1", None, Action.PASS)
