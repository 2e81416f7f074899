"""Loading and validating resources: every fault reported with document and field path."""

from __future__ import annotations

import pytest

from vpcnet.api import (
    CalicoNetworkPolicy,
    GlobalNetworkPolicy,
    K8sNetworkPolicy,
    Namespace,
    Pod,
    ValidationError,
    dump_documents,
    kind_class,
    load_documents,
)

GOOD = """
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}, uid: "1234"}
spec:
  nodeName: node-1
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: [sleep, "1000"]
    ports: [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP}]
status: {podIP: 10.0.0.1, phase: Running}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.7/8, except: [10.1.0.0/16]}}]
    ports: [{port: 80, endPort: 90}, {port: http, protocol: UDP}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: cnp, namespace: x}
spec:
  order: 10
  selector: pod == 'a'
  egress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, "8000:8080", http], nets: [10.0.0.0/8], namespaceSelector: global()}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gnp}
spec:
  tier: security
  namespaceSelector: team == 'blue'
  ingress: [{action: Deny, protocol: ICMP, icmp: {type: 8, code: 0}}]
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: external, labels: {role: external}}
spec: {nets: [198.51.100.0/24, 203.0.113.7]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: x}
spec: {nets: [100.64.0.0/10]}
"""


def test_good_documents_load_with_defaults() -> None:
    resources = load_documents(GOOD, "good.yaml")
    kinds = [r.KIND for r in resources]
    assert kinds == [
        "Namespace",
        "Pod",
        "NetworkPolicy",
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "Tier",
        "GlobalNetworkSet",
        "NetworkSet",
    ]
    ns, pod, knp, cnp, gnp = resources[:5]
    assert isinstance(ns, Namespace) and ns.labels == {"team": "blue", "kubernetes.io/metadata.name": "x"}
    assert isinstance(pod, Pod) and pod.pod_ip == "10.0.0.1" and pod.node_name == "node-1"
    assert pod.named_port("http", "TCP") == 80 and pod.named_port("http", "UDP") is None
    assert isinstance(knp, K8sNetworkPolicy)
    assert knp.policy_types == ("Ingress", "Egress")  # defaulted: egress rules exist
    assert [p.protocol for p in knp.egress[0].ports] == ["TCP", "UDP"]
    assert isinstance(cnp, CalicoNetworkPolicy) and cnp.types == ("Egress",) and cnp.tier == "default"
    assert cnp.egress[0].action == "Allow" and cnp.egress[0].protocol == 6
    assert cnp.egress[0].destination.ports == (80, (8000, 8080), "http")
    assert isinstance(gnp, GlobalNetworkPolicy) and gnp.types == ("Ingress", "Egress")


def test_round_trip_through_dicts() -> None:
    resources = load_documents(GOOD, "good.yaml")
    again = load_documents(dump_documents(resources), "again.yaml")
    assert again == resources
    pod = resources[1].to_dict()
    assert pod["spec"]["restartPolicy"] == "Never" and pod["metadata"]["uid"] == "1234"
    assert pod["spec"]["containers"][0]["command"] == ["sleep", "1000"]


def test_registry() -> None:
    assert kind_class("networking.k8s.io/v1", "NetworkPolicy") is K8sNetworkPolicy
    assert kind_class("projectcalico.org/v3", "NetworkPolicy") is CalicoNetworkPolicy
    assert kind_class("v1", "Secret") is None


def _faults(text: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        load_documents(text, "f.yaml")
    return [str(f) for f in info.value.faults]


BAD_K8S = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: Bad_Name, namespace: x}
spec:
  podSelector:
    matchLabels: {"bad key!": v}
    matchExpressions:
    - {key: a, operator: In}
    - {key: b, operator: Exists, values: [x]}
    - {key: c, operator: Maybe}
  ingress:
  - from:
    - {}
    - {ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16, 10.0.0.0/8]}, podSelector: {}}
    - {ipBlock: {cidr: banana}}
    ports:
    - {port: 80, endPort: 79}
    - {port: http, endPort: 90}
    - {endPort: 90}
    - {port: 70000}
    - {port: Not_A_Name}
    - {port: 80, protocol: ICMP}
  policyTypes: [Ingress, Sideways]
  extra: 1
"""


def test_k8s_policy_faults_all_reported_with_paths() -> None:
    faults = _faults(BAD_K8S)
    where = "f.yaml:2 (document 1) NetworkPolicy x/Bad_Name: "
    expected_paths = [
        "metadata.name",
        "spec.extra",
        "spec.podSelector.matchLabels.bad key!",
        "spec.podSelector.matchExpressions[0].values",
        "spec.podSelector.matchExpressions[1].values",
        "spec.podSelector.matchExpressions[2].operator",
        "spec.ingress[0].ports[0].endPort",
        "spec.ingress[0].ports[1].endPort",
        "spec.ingress[0].ports[2].endPort",
        "spec.ingress[0].ports[3].port",
        "spec.ingress[0].ports[4].port",
        "spec.ingress[0].ports[5].protocol",
        "spec.ingress[0].from[0]",
        "spec.ingress[0].from[1].ipBlock.except[0]",
        "spec.ingress[0].from[1].ipBlock.except[1]",
        "spec.ingress[0].from[1]",
        "spec.ingress[0].from[2].ipBlock.cidr",
        "spec.policyTypes[1]",
    ]
    for path in expected_paths:
        assert any(f.startswith(where + path + ":") for f in faults), (path, faults)
    assert len(faults) == len(expected_paths), faults


def test_calico_faults() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  selector: "a == 'b' &&"
  namespaceSelector: global()
  serviceAccountSelector: x
  ingress:
  - {action: Nope}
  - action: Allow
    destination: {ports: [80]}
  - action: Allow
    protocol: TCP
    icmp: {code: 1}
    source: {selector: global(), nets: [10.0.0.0/33], ports: ["90:80", -1]}
    http: {methods: [GET]}
  - {action: Allow, protocol: 300}
  - {action: allow, protocol: tcp}
  - action: Deny
    source: {namespaceSelector: "global() && team == 'blue'"}
    destination: {namespaceSelector: "!global()"}
  - action: Deny
    source: {namespaceSelector: "(a == 'b' || global())"}
  - action: Allow
    protocol: ICMPv6
    ipVersion: 4
    source: {nets: [10.0.0.0/8]}
    destination: {nets: ["fd00::/8"]}
  - {action: Allow, protocol: ICMP, ipVersion: 4, source: {nets: [10.0.0.0/8], notNets: [10.1.0.0/16]}}
  doNotTrack: true
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t}
spec: {defaultAction: Allow}
"""
    faults = _faults(text)
    for fragment in [
        "GlobalNetworkPolicy g: spec.selector: invalid selector",
        "at position 11",
        "spec.namespaceSelector: global() may only be used",
        "spec.serviceAccountSelector: not supported",
        "spec.ingress[0].action: must be Allow, Deny, Log or Pass",
        "spec.ingress[1].destination: ports and notPorts need protocol",
        "spec.ingress[2]: icmp and notICMP need protocol ICMP",
        "spec.ingress[2].icmp.code: code may only be given together with type",
        "spec.ingress[2].source.selector: global() may only be used",
        "spec.ingress[2].source.nets[0]: invalid CIDR",
        "spec.ingress[2].source.ports[0]: invalid port range",
        "spec.ingress[2].source.ports[1]: port must be 0-65535",
        "spec.ingress[2].http: not supported",
        "spec.ingress[3].protocol: protocol number must be 1-255",
        "spec.ingress[4].action: must be Allow, Deny, Log or Pass, got 'allow'",
        "spec.ingress[4].protocol: must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite",
        "spec.ingress[5].source.namespaceSelector: global() cannot be combined",
        "spec.ingress[6].source.namespaceSelector: global() cannot be combined",
        "spec.ingress[7].ipVersion: must be 6 with protocol ICMPv6",
        "spec.ingress[7].destination.nets: CIDR version does not match the rule's ipVersion 4",
        "spec.ingress[7].destination.nets: a rule may not mix IPv4 and IPv6 CIDRs",
        "spec.applyOnForward: must be true",
        "(document 2) Tier t: spec.defaultAction: must be Deny or Pass",
    ]:
        assert any(fragment in f for f in faults), (fragment, faults)
    assert not any("ingress[5].destination" in f for f in faults), faults  # !global() alone is fine
    assert not any("ingress[8]" in f for f in faults), faults  # consistent IPv4 rule
    assert sum("protocol" in f for f in faults if "ingress[4]" in f) == 1, faults


def test_empty_rule_selectors_mean_not_given_and_round_trip() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  ingress: [{action: Allow, source: {selector: "", notSelector: "", namespaceSelector: ""}}]
"""
    (policy,) = load_documents(text, "f.yaml")
    assert isinstance(policy, CalicoNetworkPolicy)
    assert policy.ingress[0].source.selector is None and policy.ingress[0].source.namespace_selector is None
    assert load_documents(dump_documents([policy]), "again.yaml") == [policy]


def test_pre_dnat_policies_are_ingress_only() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec: {preDNAT: true, applyOnForward: true, types: [Ingress, Egress]}
"""
    faults = _faults(text)
    assert len(faults) == 1 and "spec.types: preDNAT policy cannot have the Egress type" in faults[0]


def test_network_sets_may_not_carry_the_namespace_label() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: g, labels: {projectcalico.org/namespace: x}}
spec: {nets: [10.0.0.0/8]}
"""
    faults = _faults(text)
    assert len(faults) == 1 and "metadata.labels.projectcalico.org/namespace: reserved label" in faults[0]


def test_k8s_policy_types_as_the_api_server_checks_them() -> None:
    def doc(types: str) -> str:
        return (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
            f"spec: {{podSelector: {{}}, policyTypes: {types}}}\n"
        )

    # A repeated type is accepted (ValidateNetworkPolicySpec only checks the count and the values).
    (policy,) = load_documents(doc("[Egress, Egress]"), "f.yaml")
    assert isinstance(policy, K8sNetworkPolicy) and set(policy.policy_types) == {"Egress"}
    faults = _faults(doc("[Ingress, Egress, Ingress]"))
    assert len(faults) == 1 and "spec.policyTypes: may not specify more than two policyTypes" in faults[0]


def test_document_level_faults() -> None:
    faults = _faults("kind: Pod\n---\n- a list\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n")
    assert any("f.yaml:1 (document 1)" in f and "apiVersion: required" in f for f in faults)
    assert any("f.yaml:3 (document 2)" in f and "must be a mapping" in f for f in faults)
    assert any("f.yaml:5 (document 3)" in f and "unknown kind 'Secret'" in f for f in faults)


def test_invalid_yaml_names_the_line() -> None:
    faults = _faults("apiVersion: v1\nkind: [unclosed\n")
    assert faults[0].startswith("f.yaml:line") and "not valid YAML" in faults[0]


def test_pod_faults() -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: Bad}
spec:
  containers:
  - name: c
    ports: [{containerPort: 0, name: web}, {containerPort: 80, name: web, protocol: ICMP}]
status: {podIP: 10.0.0.300}
---
apiVersion: v1
kind: Pod
metadata: {name: q}
spec: {}
"""
    faults = _faults(text)
    for fragment in [
        "Pod Bad/p: metadata.namespace:",
        "spec.containers[0].ports[0].containerPort: must be between 1 and 65535",
        "spec.containers[0].ports[1].protocol: must be one of",
        "spec.containers[0].ports[1].name: duplicate port name 'web'",
        "status.podIP: invalid IP address",
        "(document 2) Pod q: spec.containers: required",
    ]:
        assert any(fragment in f for f in faults), (fragment, faults)


def test_nothing_returned_when_any_document_is_bad() -> None:
    with pytest.raises(ValidationError) as info:
        load_documents(GOOD + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: BAD}\n", "g.yaml")
    assert len(info.value.faults) == 1
    assert "(document 9) Namespace BAD: metadata.name" in str(info.value)


def test_calicoctl_and_kubectl_output_shapes_load() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g, resourceVersion: "12", uid: abc, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  tier: default
  selector: all()
  serviceAccountSelector: ""
  performanceHints: [AssumeNeededOnEveryNode]
  ingress: [{action: Allow, source: {serviceAccounts: null}, http: null}]
  types: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: n, namespace: x, generation: 1}
spec: {podSelector: {}}
status: {}
"""
    gnp, knp = load_documents(text, "out.yaml")
    assert isinstance(gnp, GlobalNetworkPolicy) and gnp.performance_hints == ("AssumeNeededOnEveryNode",)
    assert gnp.to_dict()["metadata"]["resourceVersion"] == "12"
    assert isinstance(knp, K8sNetworkPolicy) and knp.policy_types == ("Ingress",)


@pytest.mark.parametrize(
    ("kind", "namespace", "order"),
    [
        ("NetworkPolicy", "x", ".nan"),
        ("NetworkPolicy", "x", "-.inf"),
        ("GlobalNetworkPolicy", None, ".inf"),
        ("GlobalNetworkPolicy", None, "1.0e+400"),
        ("GlobalNetworkPolicy", None, "1" + "0" * 400),
    ],
)
def test_order_must_be_a_finite_number(kind: str, namespace: str | None, order: str) -> None:
    """Defect 7 (issue 14): NaN has no order (policy ordering became nondeterministic) and neither JSON
    nor the kernel's view of the order can carry it: refused with the field's path."""
    ns = f", namespace: {namespace}" if namespace else ""
    text = f"apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: p{ns}}}\n"
    text += f"spec:\n  order: {order}\n"
    faults = _faults(text)
    assert len(faults) == 1 and "spec.order" in faults[0] and "finite number" in faults[0], faults
