"""The label index: endpoint labels once per change, namespace relabelling, namespace and address indexes."""

from __future__ import annotations

from calc_docs import namespace, network_set, pod

from vpcnet.api.selector import parse_selector
from vpcnet.dataplane.calc.labelindex import LabelIndex, pinned_namespace
from vpcnet.policy.state import ClusterState


def test_pod_labels_are_the_batch_evaluators_and_follow_their_namespace() -> None:
    index = LabelIndex()
    web = pod("web", "10.0.0.1", ns="a", app="web")
    entry = index.entry_for(web)  # namespace "a" not known yet: implied
    assert entry.labels == ClusterState.from_resources([web]).endpoint_labels(web)
    assert index.set_namespace("a", namespace("a", team="x").metadata.labels)
    relabelled = index.entry_for(web)
    assert relabelled.labels["pcns.team"] == "x"
    assert relabelled.labels == ClusterState.from_resources([web, namespace("a", team="x")]).endpoint_labels(
        web
    )
    assert not index.set_namespace("a", namespace("a", team="x").metadata.labels)  # no change


def test_namespace_change_and_delete_relabel_its_network_sets() -> None:
    index = LabelIndex()
    index.set_namespace("a", {"team": "x"})
    index.put_network_set(network_set("s", "a", ["10.9.0.0/16"]))
    team_x = parse_selector("pcns.team == 'x'")
    assert index.network_set_members(team_x) == frozenset({"10.9.0.0/16"})
    assert index.set_namespace("a", None)  # deleted: implied again, without team
    assert index.network_set_members(team_x) == frozenset()
    assert index.network_set_members(parse_selector("projectcalico.org/namespace == 'a'")) == {"10.9.0.0/16"}


def test_network_sets_keep_ipv4_only_and_read_bare_addresses_as_32s() -> None:
    index = LabelIndex()
    index.put_network_set(network_set("g", None, ["10.0.0.7", "fd00::/64", "10.1.0.0/16"], kind="g"))
    assert index.network_set_members(parse_selector("kind == 'g'")) == {"10.0.0.7/32", "10.1.0.0/16"}
    assert index.remove_network_set(next(iter(index.network_sets)))
    assert index.network_set_members(parse_selector("all()")) == frozenset()


def test_candidates_of_a_pinned_selector_are_its_namespaces_pods_only() -> None:
    index = LabelIndex()
    for p in (pod("p1", "10.0.0.1", ns="a"), pod("p2", "10.0.0.2", ns="b")):
        index.put_pod(index.entry_for(p))
    pinned = parse_selector("projectcalico.org/namespace == 'a' && has(app)")
    assert pinned_namespace(pinned) == "a" and pinned_namespace(parse_selector("has(app)")) is None
    assert [e.ref for e in index.candidates(pinned)] == ["a/p1"]
    assert sorted(e.ref for e in index.candidates(None)) == ["a/p1", "b/p2"]


def test_address_owners_are_tracked_across_moves() -> None:
    index = LabelIndex()
    index.put_pod(index.entry_for(pod("p1", "10.0.0.1")))
    index.put_pod(index.entry_for(pod("p2", "10.0.0.1")))
    assert [e.ref for e in index.other_owners("10.0.0.1", "a/p1")] == ["a/p2"]
    index.put_pod(index.entry_for(pod("p2", "10.0.0.2")))  # p2 moved away
    assert index.other_owners("10.0.0.1", "a/p1") == []
    assert index.remove_pod("a/p1") is not None and index.remove_pod("a/p1") is None
    assert [e.ref for e in index.pods_in("a")] == ["a/p2"]
