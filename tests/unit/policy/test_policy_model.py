"""Compile, calculation functions (what a data plane renders from), evaluation details, state checks."""

from __future__ import annotations

import ipaddress

import pytest

from vpcnet.api import ValidationError, load_documents
from vpcnet.policy.calc import (
    active_named_ports,
    active_selectors,
    named_port_members,
    policies_for_endpoint,
    selector_members,
)
from vpcnet.policy.evaluate import Flow, Reason, endpoint, evaluate
from vpcnet.policy.model import Action, Direction, NamedPort, PolicyKind, PortRange
from vpcnet.policy.state import ClusterState

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec:
  containers:
  - {name: c, ports: [{containerPort: 8080, name: http}, {containerPort: 53, name: dns, protocol: UDP}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432, name: http}]}]}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: dev, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.2.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: dev, labels: {app: web}}
spec: {hostNetwork: true, containers: [{name: c}]}
status: {podIP: 192.168.0.5}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: ext, labels: {app: web}}
spec: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10}
"""

POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: db}}},
           {ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.8/29]}}]
    ports: [{port: http}, {port: 9000, endPort: 9010}, {protocol: UDP}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: audit}
spec:
  tier: security
  order: 5
  selector: app == 'web'
  ingress: [{action: Log}, {action: Pass}]
  egress:
  - {action: Deny, protocol: TCP, destination: {selector: app == 'web', ports: [http]}}
  - {action: Pass}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: late, namespace: prod}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {nets: [198.51.100.7/32]}}]
"""


@pytest.fixture
def state() -> ClusterState:
    return ClusterState.from_resources(load_documents(CLUSTER + "---\n" + POLICIES, "t.yaml"))


def test_kubernetes_policy_compiles_like_calico(state: ClusterState) -> None:
    knp = next(p for p in state.policies if p.kind is PolicyKind.KUBERNETES)
    assert (knp.id, knp.tier, knp.order, knp.types) == (
        "knp/prod/web",
        "default",
        1000.0,
        {Direction.INGRESS},
    )
    assert knp.selector.canonical == (
        '(projectcalico.org/namespace == "prod" && projectcalico.org/orchestrator == "k8s" && app == "web")'
    )
    # one rule per (peer x protocol); ports per protocol merged
    assert len(knp.ingress) == 4
    first, second, third, fourth = knp.ingress
    assert first.protocol == 6 and first.destination.ports == (NamedPort("http"), PortRange(9000, 9010))
    assert first.source.selector is not None
    assert first.source.selector.canonical == (
        '(projectcalico.org/orchestrator == "k8s" && pcns.env == "prod" && app == "db")'
    )
    assert second.protocol == 17 and second.destination.ports == ()
    assert third.source.nets == (ipaddress.ip_network("203.0.113.0/24"),)
    assert third.source.not_nets == (ipaddress.ip_network("203.0.113.8/29"),)
    assert fourth.protocol == 17
    assert all(r.action is Action.ALLOW for r in knp.ingress)


def test_policies_for_endpoint_orders_tiers_then_policies(state: ClusterState) -> None:
    web = state.pod("prod/web")
    tiers = policies_for_endpoint(state, web, Direction.INGRESS)
    assert [(t.tier.name, [p.id for p in t.policies]) for t in tiers] == [
        ("security", ["gnp/audit"]),
        ("default", ["knp/prod/web", "np/prod/late"]),  # order 1000 before order None
    ]
    assert [t.tier.name for t in policies_for_endpoint(state, web, Direction.EGRESS)] == ["security"]
    assert policies_for_endpoint(state, state.pod("prod/db"), Direction.INGRESS) == []


def test_a_hostnetwork_pod_is_named_as_such_when_asked_for(state: ClusterState) -> None:
    with pytest.raises(KeyError, match=r"uses the host network.*192\.168\.0\.5"):
        state.pod("dev/host")
    with pytest.raises(KeyError, match="no pod 'dev/nope'"):
        state.pod("dev/nope")


def test_hostnetwork_pods_are_not_endpoints(state: ClusterState) -> None:
    assert "dev/host" not in state.pods_by_ref


def test_selector_members_include_network_sets(state: ClusterState) -> None:
    members = selector_members(state, "app == 'web'")
    assert members == {
        ipaddress.ip_network("10.1.0.1/32"),
        ipaddress.ip_network("10.2.0.1/32"),
        ipaddress.ip_network("198.51.100.0/24"),
    }
    scoped = selector_members(state, "projectcalico.org/namespace == 'prod'")
    assert scoped == {ipaddress.ip_network("10.1.0.1/32"), ipaddress.ip_network("10.1.0.2/32")}


def test_named_port_members(state: ClusterState) -> None:
    assert named_port_members(state, None, 6, "http") == {
        (ipaddress.ip_address("10.1.0.1"), 6, 8080),
        (ipaddress.ip_address("10.1.0.2"), 6, 5432),
    }
    assert named_port_members(state, "app == 'db'", 6, "http") == {
        (ipaddress.ip_address("10.1.0.2"), 6, 5432)
    }
    assert named_port_members(state, None, 17, "dns") == {(ipaddress.ip_address("10.1.0.1"), 17, 53)}
    assert named_port_members(state, None, 1, "http") == set()


def test_active_selectors_and_named_ports(state: ClusterState) -> None:
    sels = active_selectors(state.policies)
    assert all(uid.startswith("s:") for uid in sels)
    assert any(s.canonical == 'app == "web"' for s in sels.values())
    ports = active_named_ports(state.policies)
    assert (None, 6, "http") in ports
    assert any(sel is not None and sel.canonical == 'app == "web"' for sel, _, _ in ports)


def test_explanations(state: ClusterState) -> None:
    def verdict(src: str, dst: str, port: int, proto: int = 6):  # type: ignore[no-untyped-def]
        return evaluate(state, Flow(endpoint(state, src), endpoint(state, dst), proto, port))

    ok = verdict("prod/db", "prod/web", 8080)
    assert ok.allowed and ok.ingress.reason is Reason.RULE
    assert (ok.ingress.tier, ok.ingress.policy, ok.ingress.rule_index) == ("default", "knp/prod/web", 0)
    assert ok.ingress.logged == ("gnp/audit rule 0",)
    assert "logged by gnp/audit rule 0" in ok.explanation

    wrong_port = verdict("prod/db", "prod/web", 5432)
    assert not wrong_port.allowed and wrong_port.ingress.reason is Reason.END_OF_TIER
    assert wrong_port.ingress.considered == ("knp/prod/web", "np/prod/late")

    external = verdict("198.51.100.7", "prod/web", 1)
    assert external.allowed and external.egress.reason is Reason.NOT_A_POD
    assert external.ingress.policy == "np/prod/late"

    except_hit = verdict("203.0.113.9", "prod/web", 9005)
    assert not except_hit.allowed
    in_block = verdict("203.0.113.1", "prod/web", 9005)
    # The policy's only ingress rule (spec.ingress[0]) decided, although it compiles into one model
    # rule per peer and protocol (the ipBlock/TCP one is the model's third).
    assert in_block.allowed and in_block.ingress.rule_index == 0
    assert "policy knp/prod/web, rule 0 (Allow protocol TCP from [nets 203.0.113.0/24" in in_block.explanation

    udp = verdict("10.2.0.1", "prod/web", 1234, proto=17)
    assert not udp.allowed  # dev/tool is not in prod: the UDP rule's peer does not match
    # egress Deny to a named port at the destination (http on web = 8080)
    denied = verdict("prod/web", "dev/tool", 8080)
    assert denied.allowed  # dev/tool has no port named http
    self_deny = verdict("prod/web", "prod/web", 8080)
    assert (
        not self_deny.allowed and self_deny.egress.policy == "gnp/audit" and self_deny.egress.rule_index == 0
    )

    no_policy = verdict("prod/web", "prod/db", 5432)
    assert no_policy.ingress.reason is Reason.NO_POLICY
    assert "no policy selects the pod" in no_policy.explanation
    passed = verdict("prod/web", "prod/db", 5432)
    assert passed.egress.reason is Reason.PROFILE and passed.allowed


def test_state_rejects_duplicates_and_missing_tiers() -> None:
    text = CLUSTER.replace("kind: Tier\nmetadata: {name: security}", "kind: Tier\nmetadata: {name: other}")
    with pytest.raises(ValidationError) as info:
        ClusterState.from_resources(load_documents(text + "---\n" + POLICIES, "t.yaml"))
    assert "GlobalNetworkPolicy audit: spec.tier: tier 'security' does not exist" in str(info.value)
    docs = load_documents(CLUSTER, "t.yaml")
    with pytest.raises(ValidationError, match="defined more than once"):
        ClusterState.from_resources([*docs, docs[1]])


def test_implied_namespaces_carry_the_name_label(state: ClusterState) -> None:
    assert state.namespaces["dev"].metadata.labels == {"kubernetes.io/metadata.name": "dev"}
    assert state.endpoint_labels(state.pod("dev/tool"))["pcns.kubernetes.io/metadata.name"] == "dev"


IPV6 = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: v6, labels: {pod: a}}
spec: {containers: [{name: c}]}
status: {podIP: "fd00::a", podIPs: [{ip: "fd00::a"}, {ip: 10.9.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: v6, labels: {pod: b}}
spec: {containers: [{name: c}]}
status: {podIP: "fd00:1::b"}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: v6, labels: {pod: c}}
spec: {containers: [{name: c}]}
status: {podIP: 10.9.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-fd00-0, namespace: v6}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{ipBlock: {cidr: "fd00::/16", except: ["fd00:1::/32"]}}]}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: v4-only, namespace: v6}
spec:
  selector: pod == 'c'
  ingress: [{action: Allow, ipVersion: 4}]
"""


def test_ipv6_and_ip_version() -> None:
    from vpcnet.policy.matrix import reachability

    state = ClusterState.from_resources(load_documents(IPV6, "v6.yaml"))
    got = reachability(state, 80, 6).to_dict()
    assert got["v6/a"]["v6/b"] is True  # fd00::a is in fd00::/16, not in the except
    assert got["v6/b"]["v6/b"] is False  # fd00:1::b is in the except
    assert got["v6/c"]["v6/b"] is False  # an IPv4 address never matches an IPv6 block
    assert got["v6/c"]["v6/c"] is True and got["v6/a"]["v6/c"] is False  # ipVersion 4 rule
    for s in got:
        for d in got[s]:
            verdict = evaluate(state, Flow(endpoint(state, s), endpoint(state, d), 6, 80))
            assert verdict.allowed == got[s][d], verdict.explanation
    assert selector_members(state, "pod == 'a'") == {
        ipaddress.ip_network("fd00::a/128"),
        ipaddress.ip_network("10.9.0.1/32"),
    }


SAME_NAME = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c}]}
status: {podIP: 10.3.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c}]}
status: {podIP: 10.3.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec: {selector: pod == 'b', types: [Ingress]}
"""


def test_kubernetes_and_calico_policies_of_the_same_name_are_different_objects() -> None:
    # Kubernetes and Calico both call their kind NetworkPolicy; a cluster can hold one of each with
    # the same namespace/name, and both apply.
    state = ClusterState.from_resources(load_documents(SAME_NAME, "t.yaml"))
    assert sorted(p.id for p in state.policies) == ["knp/x/web", "np/x/web"]
    flow = Flow(endpoint(state, "x/a"), endpoint(state, "x/b"), 6, 80)
    assert not evaluate(state, flow).allowed  # the Calico policy isolates x/b for ingress
    reverse = Flow(endpoint(state, "x/b"), endpoint(state, "x/a"), 6, 80)
    assert evaluate(state, reverse).allowed


def test_explanation_names_the_kubernetes_rule_as_written() -> None:
    text = SAME_NAME.split("---\napiVersion: projectcalico.org/v3")[0].replace(
        "ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
        "ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}, {podSelector: {matchLabels: {pod: d}}}],"
        " ports: [{port: 80}, {protocol: UDP}]}, {from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    )
    state = ClusterState.from_resources(load_documents(text, "t.yaml"))
    verdict = evaluate(state, Flow(endpoint(state, "x/b"), endpoint(state, "x/a"), 6, 80))
    assert verdict.allowed and verdict.ingress.rule_index == 1  # spec.ingress[1]; the model's 5th rule
    assert "policy knp/x/web, rule 1 (" in verdict.explanation


def test_calico_rules_of_a_direction_not_in_types_are_accepted_and_ignored() -> None:
    text = SAME_NAME.split("---\napiVersion: networking.k8s.io/v1")[0] + (
        "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
        "spec: {selector: pod == 'a', types: [Ingress],\n"
        "       ingress: [{action: Allow}], egress: [{action: Deny}]}\n"
    )
    state = ClusterState.from_resources(load_documents(text, "t.yaml"))
    (policy,) = state.policies
    assert policy.types == {Direction.INGRESS} and policy.egress == ()
    assert evaluate(state, Flow(endpoint(state, "x/a"), endpoint(state, "x/b"), 6, 80)).allowed
