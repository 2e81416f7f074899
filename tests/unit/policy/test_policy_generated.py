"""Generated variations, cyclonus style.

Kubernetes: policies built by mutating every dimension (target, namespace, peers, ports, endPort,
named ports, protocols, policyTypes) are checked cell by cell against an oracle written here
directly from the NetworkPolicy API semantics (apimachinery label selectors, no Calico model), so
the compile step and both evaluators are checked against an independent reading of the spec.

Calico: random tiers, orders, actions (Allow/Deny/Pass/Log), selectors, nets and ports; the bitset
matrix must agree with the per-flow evaluator on every cell.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.api.base import ObjectMeta, Resource
from vpcnet.api.calico import CalicoNetworkPolicy, CalicoRule, EntityRule, GlobalNetworkPolicy, Tier
from vpcnet.api.core import Namespace, Pod
from vpcnet.api.networking import (
    IPBlock,
    K8sNetworkPolicy,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
)
from vpcnet.policy.evaluate import Flow, endpoint, evaluate
from vpcnet.policy.matrix import reachability
from vpcnet.policy.scenarios import Topology
from vpcnet.policy.state import ClusterState

TOPO = Topology()
IPS = TOPO.default_ips()
PROTOS = {"TCP": 6, "UDP": 17, "SCTP": 132}

# ------------------------------------------------------------------------------------------------
# strategies

requirements = st.one_of(
    st.builds(
        LabelSelectorRequirement,
        st.just("pod"),
        st.just("In"),
        st.lists(st.sampled_from("abc"), min_size=1, max_size=2, unique=True).map(tuple),
    ),
    st.builds(
        LabelSelectorRequirement,
        st.just("pod"),
        st.just("NotIn"),
        st.lists(st.sampled_from("abc"), min_size=1, max_size=2, unique=True).map(tuple),
    ),
    st.builds(
        LabelSelectorRequirement,
        st.sampled_from(["role", "pod", "team"]),
        st.sampled_from(["Exists", "DoesNotExist"]),
    ),
    st.builds(LabelSelectorRequirement, st.just("role"), st.just("NotIn"), st.just(("db",))),
)
pod_selectors = st.one_of(
    st.just(LabelSelector()),
    st.sampled_from("abc").map(lambda p: LabelSelector.of({"pod": p})),
    st.lists(requirements, min_size=1, max_size=2).map(lambda rs: LabelSelector.of(None, *rs)),
    st.just(LabelSelector.of({"role": "db"})),
)
ns_requirements = st.one_of(
    st.builds(
        LabelSelectorRequirement,
        st.just("ns"),
        st.sampled_from(["In", "NotIn"]),
        st.lists(st.sampled_from("xyz"), min_size=1, max_size=2, unique=True).map(tuple),
    ),
    st.builds(LabelSelectorRequirement, st.just("team"), st.sampled_from(["Exists", "DoesNotExist"])),
    st.builds(LabelSelectorRequirement, st.just("team"), st.just("NotIn"), st.just(("blue",))),
)
ns_selectors = st.one_of(
    st.just(LabelSelector()),
    st.sampled_from("xyz").map(lambda n: LabelSelector.of({"kubernetes.io/metadata.name": n})),
    st.lists(ns_requirements, min_size=1, max_size=2).map(lambda rs: LabelSelector.of(None, *rs)),
)


@st.composite
def ip_blocks(draw: st.DrawFn) -> IPBlock:
    ref = draw(st.sampled_from(TOPO.refs))
    prefix = draw(st.sampled_from([32, 24, 16]))
    net = ipaddress.ip_network(f"{IPS[ref]}/{prefix}", strict=False)
    excepts: tuple[str, ...] = ()
    if prefix < 32 and draw(st.booleans()):
        inside = [r for r in TOPO.refs if ipaddress.ip_address(IPS[r]) in net]
        excepts = (f"{IPS[draw(st.sampled_from(inside))]}/32",)
    return IPBlock(str(net), excepts)


peers = st.one_of(
    st.builds(NetworkPolicyPeer, pod_selector=pod_selectors),
    st.builds(NetworkPolicyPeer, namespace_selector=ns_selectors),
    st.builds(NetworkPolicyPeer, pod_selector=pod_selectors, namespace_selector=ns_selectors),
    st.builds(NetworkPolicyPeer, ip_block=ip_blocks()),
)


@st.composite
def np_ports(draw: st.DrawFn) -> NetworkPolicyPort:
    proto = draw(st.sampled_from(["TCP", "TCP", "UDP", "SCTP"]))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return NetworkPolicyPort(proto, None)
    if kind == 1:
        return NetworkPolicyPort(proto, draw(st.sampled_from([80, 81])))
    if kind == 2:
        first = draw(st.sampled_from([79, 80, 81]))
        return NetworkPolicyPort(proto, first, draw(st.integers(first, 82)))
    name_proto = draw(st.sampled_from([proto.lower(), "tcp"]))
    return NetworkPolicyPort(proto, f"serve-{draw(st.sampled_from([80, 81]))}-{name_proto}")


rules = st.builds(
    NetworkPolicyRule,
    st.lists(peers, max_size=2).map(tuple),
    st.lists(np_ports(), max_size=2).map(tuple),
)


@st.composite
def k8s_policies(draw: st.DrawFn, index: int) -> K8sNetworkPolicy:
    ingress = tuple(draw(st.lists(rules, max_size=2)))
    egress = tuple(draw(st.lists(rules, max_size=2)))
    types_choice = draw(st.sampled_from(["default", "Ingress", "Egress", "both"]))
    if types_choice == "default":
        types: tuple[str, ...] = ("Ingress", "Egress") if egress else ("Ingress",)
    elif types_choice == "both":
        types = ("Ingress", "Egress")
    else:
        types = (types_choice,)
    return K8sNetworkPolicy(
        ObjectMeta(name=f"p{index}", namespace=draw(st.sampled_from("xyz"))),
        draw(pod_selectors),
        ingress,
        egress,
        types,
    )


@st.composite
def cluster_base(draw: st.DrawFn) -> list[Resource]:
    resources = TOPO.resources(IPS)
    for r in resources:
        if isinstance(r, Namespace):
            r.metadata.labels["ns"] = r.metadata.name
            if draw(st.booleans()):
                r.metadata.labels["team"] = draw(st.sampled_from(["blue", "red"]))
        elif isinstance(r, Pod):
            if draw(st.integers(0, 3)) == 0:
                r.metadata.labels["role"] = draw(st.sampled_from(["db", "web"]))
            if draw(st.integers(0, 15)) == 0:
                r.pod_ips = []  # not started yet: selectable by labels, never by address
    return resources


# ------------------------------------------------------------------------------------------------
# the oracle: Kubernetes NetworkPolicy semantics, directly


def _ports_ok(ports: tuple[NetworkPolicyPort, ...], dst: Pod, port: int, proto: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.protocol != proto:
            continue
        if p.port is None:
            return True
        if isinstance(p.port, str):
            if dst.named_port(p.port, proto) == port:
                return True
        elif p.port <= port <= (p.end_port if p.end_port is not None else p.port):
            return True
    return False


def _peer_ok(
    peer: NetworkPolicyPeer, other: Pod, policy_ns: str, ns_labels: dict[str, dict[str, str]]
) -> bool:
    if peer.ip_block is not None:
        if other.pod_ip is None:
            return False
        ip = ipaddress.ip_address(other.pod_ip)
        return ip in peer.ip_block.network and not any(ip in e for e in peer.ip_block.except_networks)
    ns = other.metadata.namespace or ""
    if peer.namespace_selector is None:
        if ns != policy_ns:
            return False
    elif not peer.namespace_selector.matches(ns_labels[ns]):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(other.metadata.labels)


def _direction_ok(
    policies: list[K8sNetworkPolicy],
    direction: str,
    me: Pod,
    other: Pod,
    dst: Pod,
    port: int,
    proto: str,
    ns_labels: dict[str, dict[str, str]],
) -> bool:
    selecting = [
        p
        for p in policies
        if p.metadata.namespace == me.metadata.namespace
        and direction in p.policy_types
        and p.pod_selector.matches(me.metadata.labels)
    ]
    if not selecting:
        return True
    for p in selecting:
        for rule in p.ingress if direction == "Ingress" else p.egress:
            if not _ports_ok(rule.ports, dst, port, proto):
                continue
            if not rule.peers or any(
                _peer_ok(peer, other, p.metadata.namespace or "", ns_labels) for peer in rule.peers
            ):
                return True
    return False


def oracle(resources: list[Resource], port: int, proto: str) -> dict[str, dict[str, bool]]:
    pods = [r for r in resources if isinstance(r, Pod)]
    policies = [r for r in resources if isinstance(r, K8sNetworkPolicy)]
    ns_labels = {r.metadata.name: r.metadata.labels for r in resources if isinstance(r, Namespace)}
    out: dict[str, dict[str, bool]] = {}
    for src in pods:
        out[src.ref] = {}
        for dst in pods:
            out[src.ref][dst.ref] = _direction_ok(
                policies, "Egress", src, dst, dst, port, proto, ns_labels
            ) and _direction_ok(policies, "Ingress", dst, src, dst, port, proto, ns_labels)
    return out


def _diff(a: dict[str, dict[str, bool]], b: dict[str, dict[str, bool]]) -> list[Any]:
    return [(s, d, a[s][d], b[s][d]) for s in a for d in a[s] if a[s][d] != b[s][d]]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cluster_base(),
    st.lists(st.integers(0, 9), min_size=1, max_size=3).flatmap(
        lambda idx: st.tuples(*(k8s_policies(i) for i in range(len(idx))))
    ),
    st.sampled_from([80, 81]),
    st.sampled_from(["TCP", "UDP", "SCTP"]),
)
def test_kubernetes_variations_match_the_oracle(
    base: list[Resource], policies: tuple[K8sNetworkPolicy, ...], port: int, proto: str
) -> None:
    resources = [*base, *policies]
    state = ClusterState.from_resources(resources)
    expected = oracle(resources, port, proto)
    got = reachability(state, port, PROTOS[proto]).to_dict()
    assert not _diff(expected, got), _diff(expected, got)
    for s, d, _exp, _got in [(s, d, 0, 0) for s in ("x/a", "y/b", "z/c") for d in ("x/a", "y/b", "z/c")]:
        flow = Flow(endpoint(state, s), endpoint(state, d), PROTOS[proto], port)
        assert evaluate(state, flow).allowed == expected[s][d]


# ------------------------------------------------------------------------------------------------
# Calico: matrix vs per-flow evaluator

calico_selectors = st.sampled_from(
    [
        "",
        "all()",
        "pod == 'a'",
        "pod != 'b'",
        "pod in {'a', 'c'}",
        "pod not in {'a'}",
        "has(role)",
        "!has(role)",
        "role starts with 'd'",
        "pod == 'a' || role == 'web'",
        "projectcalico.org/namespace == 'y'",
    ]
)
ns_sel_texts = st.sampled_from(
    [None, "all()", "global()", "kubernetes.io/metadata.name == 'x'", "team == 'blue'", "ns not in {'z'}"]
)


@st.composite
def entities(draw: st.DrawFn, with_ports: bool) -> EntityRule:
    sel = draw(st.one_of(st.none(), calico_selectors))
    nets: tuple[str, ...] = ()
    if draw(st.integers(0, 3)) == 0:
        nets = (str(draw(ip_blocks()).network),)
    ports: tuple[int | tuple[int, int] | str, ...] = ()
    not_ports: tuple[int | tuple[int, int] | str, ...] = ()
    if with_ports:
        choice = draw(st.integers(0, 4))
        if choice == 1:
            ports = (draw(st.sampled_from([80, 81])),)
        elif choice == 2:
            ports = ((79, 80),)
        elif choice == 3:
            ports = (draw(st.sampled_from(["serve-80-tcp", "serve-81-udp", "serve-81-tcp"])),)
        elif choice == 4:
            not_ports = (81,)
    return EntityRule(
        nets=nets,
        not_nets=(f"{IPS[draw(st.sampled_from(TOPO.refs))]}/32",) if draw(st.integers(0, 5)) == 0 else (),
        selector=sel,
        not_selector=draw(st.sampled_from([None, None, None, "pod == 'c'"])),
        namespace_selector=draw(ns_sel_texts) if sel is not None else None,
        ports=ports,
        not_ports=not_ports,
    )


@st.composite
def calico_rules(draw: st.DrawFn) -> CalicoRule:
    protocol = draw(st.sampled_from([None, 6, 17, 132]))
    with_ports = protocol is not None
    return CalicoRule(
        action=draw(st.sampled_from(["Allow", "Allow", "Deny", "Pass", "Log"])),
        protocol=protocol,
        not_protocol=draw(st.sampled_from([None, None, 17])) if protocol is None else None,
        source=draw(entities(False)),
        destination=draw(entities(with_ports)),
    )


@st.composite
def calico_policies(draw: st.DrawFn, index: int) -> Resource:
    tier = draw(st.sampled_from(["default", "t1", "t2"]))
    ingress = tuple(draw(st.lists(calico_rules(), max_size=3)))
    egress = tuple(draw(st.lists(calico_rules(), max_size=3)))
    types = tuple(t for t, rs in (("Ingress", ingress), ("Egress", egress)) if rs) or ("Ingress",)
    order = draw(st.sampled_from([None, 1.0, 100.0, 1000.0]))
    selector = draw(calico_selectors)
    if draw(st.booleans()):
        return CalicoNetworkPolicy(
            ObjectMeta(name=f"c{index}", namespace=draw(st.sampled_from("xyz"))),
            tier,
            order,
            selector,
            types,
            ingress,
            egress,
        )
    return GlobalNetworkPolicy(ObjectMeta(name=f"g{index}"), tier, order, selector, types, ingress, egress)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cluster_base(),
    st.lists(st.integers(0, 9), min_size=1, max_size=4).flatmap(
        lambda idx: st.tuples(*(calico_policies(i) for i in range(len(idx))))
    ),
    st.lists(k8s_policies(99), max_size=1),
    st.sampled_from(["Deny", "Pass"]),
    st.sampled_from([80, 81]),
    st.sampled_from(["TCP", "UDP"]),
)
def test_calico_matrix_agrees_with_per_flow_evaluation(
    base: list[Resource],
    policies: tuple[Resource, ...],
    k8s: list[K8sNetworkPolicy],
    t2_action: str,
    port: int,
    proto: str,
) -> None:
    tiers = [Tier(ObjectMeta(name="t1"), 10, "Deny"), Tier(ObjectMeta(name="t2"), 20, t2_action)]
    state = ClusterState.from_resources([*base, *tiers, *policies, *k8s])
    got = reachability(state, port, PROTOS[proto]).to_dict()
    for s in TOPO.refs:
        for d in TOPO.refs:
            verdict = evaluate(state, Flow(endpoint(state, s), endpoint(state, d), PROTOS[proto], port))
            assert got[s][d] == verdict.allowed, (s, d, verdict.explanation)
