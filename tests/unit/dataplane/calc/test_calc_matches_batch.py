"""Property: the incremental calculation, fed changes one at a time in random order (puts, updates,
deletes, through the same dispatch the agent uses), ends where the batch evaluator (vpcnet.policy.calc
over a ClusterState built from the final resources) says it must: the same local endpoints, the same
ordered tiers of policies per endpoint and direction, the same active policy chains, and ipsets with
the same members."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.api.base import Resource
from vpcnet.api.calico import CalicoNetworkPolicy, GlobalNetworkPolicy
from vpcnet.api.loader import parse_resource
from vpcnet.api.networking import K8sNetworkPolicy
from vpcnet.dataplane.calc.feed import delete_resource, feed_resource, ref_of
from vpcnet.dataplane.calc.rulescan import NamedPortSet, SelectorSet, scan_policy
from vpcnet.dataplane.names import host_veth_name
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import IpSetSpec, TierPolicies, canonical_nets
from vpcnet.datastore.resources import ResourceRef
from vpcnet.policy import calc as batch
from vpcnet.policy.compile import compile_policy
from vpcnet.policy.model import PORT_PROTOCOL_NAMES, Direction
from vpcnet.policy.state import ClusterState

POLICY_KINDS = (K8sNetworkPolicy, CalicoNetworkPolicy, GlobalNetworkPolicy)
NODE = "n1"
NAMESPACES = ["a", "b"]
LABEL_VALUES = ["x", "y"]
CIDRS = ["10.0.0.0/30", "10.0.0.2", "10.1.0.0/16", "10.0.0.0/8", "fd00::/64"]

labels = st.dictionaries(st.sampled_from(["app", "role"]), st.sampled_from(LABEL_VALUES), max_size=2)
match_labels = st.dictionaries(
    st.sampled_from(["app", "role", "team"]), st.sampled_from(LABEL_VALUES), max_size=2
)
calico_selectors = st.sampled_from(
    ["all()", "app == 'x'", "role == 'y'", "has(app)", "app in {'x', 'y'}", "!has(role)", "team == 'x'"]
)


def meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, **extra}
    if namespace is not None:
        out["namespace"] = namespace
    return out


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    ip = draw(st.sampled_from([None, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.1.0.5", "10.0.0.1"]))
    ports: list[dict[str, Any]] = draw(
        st.lists(
            st.sampled_from(
                [
                    {"name": "http", "containerPort": 8080},
                    {"name": "http", "containerPort": 8081},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9000},
                ]
            ),
            max_size=2,
            unique_by=lambda p: (str(p.get("name")), str(p.get("protocol"))),
        )
    )
    spec: dict[str, Any] = {
        "nodeName": draw(st.sampled_from([NODE, NODE, "n2"])),
        "containers": [{"name": "c", "image": "i", "ports": ports}],
    }
    if draw(st.booleans()):
        spec["serviceAccountName"] = draw(st.sampled_from(["sa1", "sa2"]))
    if draw(st.integers(0, 9)) == 0:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(
            draw(st.sampled_from(["p1", "p2", "p3"])), draw(st.sampled_from(NAMESPACES)), labels=draw(labels)
        ),
        "spec": spec,
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {},
    }


@st.composite
def namespaces(draw: st.DrawFn) -> dict[str, Any]:
    team = draw(st.dictionaries(st.just("team"), st.sampled_from(LABEL_VALUES), max_size=1))
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta(draw(st.sampled_from(NAMESPACES)), labels=team),
    }


@st.composite
def k8s_peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["pod", "ns", "both", "ipblock"]))
    if kind == "ipblock":
        return {
            "ipBlock": draw(
                st.sampled_from(
                    [
                        {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/30"]},
                        {"cidr": "10.1.0.0/16"},
                        {"cidr": "fd00::/64"},
                    ]
                )
            )
        }
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = {"matchLabels": draw(labels)}
    if kind in ("ns", "both"):
        peer["namespaceSelector"] = {"matchLabels": draw(match_labels)}
    return peer


k8s_ports = st.sampled_from(
    [{"port": 80}, {"port": "http"}, {"protocol": "UDP", "port": "dns"}, {"protocol": "SCTP", "port": 7}]
)


@st.composite
def k8s_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = st.lists(
        st.fixed_dictionaries(
            {}, optional={"from": st.lists(k8s_peers(), max_size=2), "ports": st.lists(k8s_ports, max_size=2)}
        ),
        max_size=2,
    )
    spec: dict[str, Any] = {"podSelector": {"matchLabels": draw(labels)}, "ingress": draw(rules)}
    egress = draw(rules)
    spec["egress"] = [{"to": r.get("from", []), "ports": r.get("ports", [])} for r in egress]
    spec["policyTypes"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(draw(st.sampled_from(["k1", "k2"])), draw(st.sampled_from(NAMESPACES))),
        "spec": spec,
    }


@st.composite
def calico_entities(draw: st.DrawFn, with_ports: bool, cidrs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, strategy in (
        ("selector", calico_selectors),
        ("notSelector", calico_selectors),
        ("namespaceSelector", st.sampled_from(["all()", "team == 'x'", "global()"])),
        ("nets", st.lists(st.sampled_from(cidrs), min_size=1, max_size=2, unique=True)),
        ("notNets", st.lists(st.sampled_from(cidrs), min_size=1, max_size=2, unique=True)),
    ):
        if draw(st.integers(0, 3)) == 0:
            out[key] = draw(strategy)
    if with_ports and draw(st.booleans()):
        out["ports"] = draw(
            st.lists(st.sampled_from([80, "1000:2000", "http", "dns"]), min_size=1, max_size=2)
        )
    return out


@st.composite
def calico_policies(draw: st.DrawFn) -> dict[str, Any]:
    glob = draw(st.booleans())
    tier = draw(st.sampled_from(["default", "t1"]))
    name = draw(st.sampled_from(["c1", "c2"]))
    rules = []
    for _ in range(draw(st.integers(0, 2))):
        protocol = draw(st.sampled_from([None, "TCP", "UDP", "ICMP"]))
        rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"]))}
        if protocol:
            rule["protocol"] = protocol
        # One address family per rule (a rule may not mix them).
        cidrs = draw(st.sampled_from([[c for c in CIDRS if ":" not in c], [c for c in CIDRS if ":" in c]]))
        rule["source"] = draw(calico_entities(False, cidrs))
        rule["destination"] = draw(calico_entities(protocol in ("TCP", "UDP"), cidrs))
        rules.append(rule)
    spec: dict[str, Any] = {
        "tier": tier,
        "selector": draw(calico_selectors),
        "types": draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])),
        "ingress": rules,
        "egress": rules[::-1],
    }
    if draw(st.booleans()):
        spec["order"] = draw(st.sampled_from([10, 100, 1000]))
    kind = "GlobalNetworkPolicy" if glob else "NetworkPolicy"
    full_name = name if tier == "default" else f"{tier}.{name}"
    namespace = None if glob else draw(st.sampled_from(NAMESPACES))
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": meta(full_name, namespace),
        "spec": spec,
    }


@st.composite
def tiers(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"defaultAction": draw(st.sampled_from(["Deny", "Pass"]))}
    if draw(st.booleans()):
        spec["order"] = draw(st.sampled_from([1, 100, 2_000_000]))
    name = draw(st.sampled_from(["default", "t1"]))
    return {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": meta(name), "spec": spec}


@st.composite
def network_sets(draw: st.DrawFn) -> dict[str, Any]:
    glob = draw(st.booleans())
    nets = draw(st.lists(st.sampled_from(CIDRS), max_size=2, unique=True))
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkSet" if glob else "NetworkSet",
        "metadata": meta("s1", None if glob else draw(st.sampled_from(NAMESPACES)), labels=draw(labels)),
        "spec": {"nets": nets},
    }


documents = st.one_of(
    pods(), pods(), namespaces(), k8s_policies(), calico_policies(), tiers(), network_sets()
)


def parse(doc: dict[str, Any]) -> Resource:
    return parse_resource(doc, "generated")


# ------------------------------------------------------------------------------------------------
# what the batch evaluator says


def _v4(ips: Any) -> list[str]:
    return [ip for ip in ips if ipaddress.ip_address(ip).version == 4]


def expected_ipset(state: ClusterState, request: SelectorSet | NamedPortSet) -> frozenset[str]:
    if isinstance(request, SelectorSet):
        nets = [str(n) for n in batch.selector_members(state, request.selector) if n.version == 4]
        return frozenset(canonical_nets(nets))
    proto = PORT_PROTOCOL_NAMES[request.protocol].lower()
    members = batch.named_port_members(state, request.selector, request.protocol, request.port)
    return frozenset(f"{ip},{proto}:{port}" for ip, _, port in members if ip.version == 4)


def check_against_batch(calc: PolicyCalculator, resources: list[Resource]) -> None:
    tier_names = {"default"} | {r.metadata.name for r in resources if r.KIND == "Tier"}
    # A policy in a tier that does not exist is not in force (the batch refuses it outright).
    in_force = [
        r
        for r in resources
        if not isinstance(r, CalicoNetworkPolicy | GlobalNetworkPolicy) or r.tier in tier_names
    ]
    state = ClusterState.from_resources(in_force)
    all_policies = [compile_policy(r) for r in resources if isinstance(r, POLICY_KINDS)]
    local = [p for p in state.pods if p.node_name == NODE and _v4(p.pod_ips)]
    got = calc.desired()

    # Endpoints and the ordered tiers of policies on each.
    want_endpoints = {}
    for pod in local:
        iface = host_veth_name("eni", pod.metadata.namespace or "default", pod.metadata.name)
        tiers_by_dir = {}
        for d in (Direction.INGRESS, Direction.EGRESS):
            tiers_by_dir[d] = tuple(
                TierPolicies(
                    t.tier.name,
                    tuple(p.id for p in t.policies),
                    "pass" if t.tier.default_action.value == "Pass" else "deny",
                )
                for t in batch.policies_for_endpoint(state, pod, d)
            )
        want_endpoints[iface] = (
            tuple(f"{ip}/32" for ip in _v4(pod.pod_ips)),
            tiers_by_dir[Direction.INGRESS],
            tiers_by_dir[Direction.EGRESS],
        )
    assert {i: (e.addresses, e.ingress, e.egress) for i, e in got.endpoints.items()} == want_endpoints

    # Active policies: those selecting a local endpoint (in force or not: its chain is rendered).
    active = [
        p
        for p in all_policies
        if p.applies_to_pods
        and p.types
        and any(p.selector.matches(state.endpoint_labels(pod)) for pod in local)
    ]
    want_chains = {}
    requests: dict[str, Any] = {}
    for p in active:
        scanned = scan_policy(p)
        want_chains.update({(p.id, d): chain for d, chain in scanned.chains.items()})
        requests.update({r.name: r for r in scanned.sets})
    assert dict(got.policies) == want_chains
    assert set(got.ipsets) == set(requests)
    for name, request in requests.items():
        spec: IpSetSpec = got.ipsets[name]
        if isinstance(request, SelectorSet | NamedPortSet):
            members = (
                frozenset(canonical_nets(spec.members)) if isinstance(request, SelectorSet) else spec.members
            )
            assert members == expected_ipset(state, request), (name, request)
        else:
            assert spec.members == request.members


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.data())
def test_incremental_calculation_matches_the_batch_evaluator(data: st.DataObject) -> None:
    calc = PolicyCalculator(NODE, ["eni"])
    current: dict[ResourceRef, Resource] = {}
    for _ in range(data.draw(st.integers(8, 40), label="steps")):
        if current and data.draw(st.integers(0, 4), label="delete?") == 0:
            ref = data.draw(st.sampled_from(sorted(current, key=str)), label="delete")
            del current[ref]
            delete_resource(calc, ref)
        else:
            resource = parse(data.draw(documents, label="put"))
            current[ref_of(resource)] = resource
            feed_resource(calc, resource)
    check_against_batch(calc, list(current.values()))
