"""Set members: counted uses, per-pod membership updates, network sets, shared addresses."""

from __future__ import annotations

from calc_docs import network_set, pod

from vpcnet.api.core import Pod
from vpcnet.api.selector import parse_selector
from vpcnet.dataplane.calc.ipsets import IpSetCalculator
from vpcnet.dataplane.calc.labelindex import LabelIndex
from vpcnet.dataplane.calc.rulescan import cidr_set, named_port_set, selector_set


def put(index: LabelIndex, ipsets: IpSetCalculator, p: Pod) -> None:
    entry = index.entry_for(p)
    ipsets.pod_changed(entry.ref, index.put_pod(entry), entry)


def test_a_set_lives_while_used_and_scans_existing_pods_once() -> None:
    index = LabelIndex()
    ipsets = IpSetCalculator(index)
    put(index, ipsets, pod("p1", "10.0.0.1", app="web"))
    request = selector_set(parse_selector("app == 'web'"))
    ipsets.acquire(request)
    ipsets.acquire(request)
    assert ipsets.sets[request.name].members == {"10.0.0.1/32"} and ipsets.changed
    ipsets.release(request.name)
    assert request.name in ipsets.sets
    ipsets.release(request.name)
    assert ipsets.sets == {}


def test_pod_changes_move_addresses_in_and_out() -> None:
    index = LabelIndex()
    ipsets = IpSetCalculator(index)
    web = selector_set(parse_selector("app == 'web'"))
    named = named_port_set(None, 6, "http")
    ipsets.acquire(web)
    ipsets.acquire(named)
    put(index, ipsets, pod("p1", "10.0.0.1", node="n2", app="web"))
    assert ipsets.sets[web.name].members == {"10.0.0.1/32"}
    assert ipsets.sets[named.name].members == {"10.0.0.1,tcp:8080"}
    put(index, ipsets, pod("p1", "10.0.0.1", node="n2", app="db"))
    assert ipsets.sets[web.name].members == frozenset()
    old = index.remove_pod("a/p1")
    ipsets.pod_changed("a/p1", old, None)
    assert ipsets.sets[named.name].members == frozenset()


def test_an_address_two_pods_share_stays_while_one_still_matches() -> None:
    index = LabelIndex()
    ipsets = IpSetCalculator(index)
    web = selector_set(parse_selector("app == 'web'"))
    ipsets.acquire(web)
    put(index, ipsets, pod("old", "10.0.0.1", app="web"))
    put(index, ipsets, pod("new", "10.0.0.1", app="web"))
    old = index.remove_pod("a/old")
    ipsets.pod_changed("a/old", old, None)
    assert ipsets.sets[web.name].members == {"10.0.0.1/32"}


def test_network_sets_join_selector_sets_collapsed_and_cidr_sets_are_fixed() -> None:
    index = LabelIndex()
    ipsets = IpSetCalculator(index)
    web = selector_set(parse_selector("app == 'web'"))
    ipsets.acquire(web)
    put(index, ipsets, pod("p1", "10.0.0.1", app="web"))
    index.put_network_set(network_set("s", None, ["10.0.0.0/24"], app="web"))
    ipsets.network_sets_changed()
    assert ipsets.sets[web.name].members == {"10.0.0.0/24"}  # the pod's /32 is inside
    cidrs = cidr_set(["10.1.0.0/16"])
    ipsets.acquire(cidrs)
    assert ipsets.sets[cidrs.name].kind == "hash:net" and ipsets.sets[cidrs.name].members == {"10.1.0.0/16"}
