"""The console's data assembly (pure): topology, matrix beside a probe, flows merged, explain's text."""

from __future__ import annotations

from typing import Any

import pytest
from pictures_data import PODS, STATUS

from vpcnet.api import load_documents
from vpcnet.cli.console import data
from vpcnet.cli.topology_picture import topology
from vpcnet.policy.evaluate import Flow, endpoint, evaluate
from vpcnet.policy.state import ClusterState

RESOURCES = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.2.21}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-nobody, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
"""


def resources() -> list[Any]:
    return load_documents(RESOURCES.encode(), "test")


def flow(src: str, dst: str, verdict: str, end: float, **extra: Any) -> dict[str, Any]:
    ns, pod = dst.split("/")
    return {
        "start": end - 1, "end": end, "node": "node2", "direction": "ingress", "verdict": verdict,
        "reason": "end-of-tier", "tier": "default", "policy": None, "rule": None, "protocol": "tcp",
        "src": {"ip": "10.0.1.12", "port": 40000, "namespace": src.split("/")[0], "pod": src.split("/")[1]},
        "dst": {"ip": "10.0.2.21", "port": 80, "namespace": ns, "pod": pod},
        "packets": 2, "bytes": 120, "explain": "ingress to x/b: denied", **extra,
    }  # fmt: skip


def test_topology_doc_names_every_node_and_pod_and_carries_the_picture() -> None:
    doc = data.topology_doc(topology(STATUS, PODS))
    assert doc["nodes"] == ["node1", "node2"]
    assert doc["pods"] == ["x/a", "x/b", "y/c"]
    assert doc["svg"].startswith("<svg") and 'data-ref="y/c"' in doc["svg"]
    assert doc["subnets"][0]["nodes"][0]["enis"][0]["warm"] == ("10.0.1.11", "10.0.1.13")


def test_node_topology_from_the_agents_ipam() -> None:
    ipam = {
        "instanceId": "i-9", "instanceType": "m5.large", "ready": True,
        "ENIs": [{
            "id": "eni-9", "deviceNumber": 0, "primaryIP": "10.0.1.5", "subnet": "subnet-a",
            "subnetCIDR": "10.0.1.0/24", "prefixes": [],
            "ips": [
                {"address": "10.0.1.6", "assigned": True, "cooling": False, "pod": "x/a"},
                {"address": "10.0.1.7", "assigned": False, "cooling": True, "pod": ""},
                {"address": "10.0.1.8", "assigned": False, "cooling": False, "pod": ""},
            ],
        }],
    }  # fmt: skip
    topo = data.node_topology("me", ipam)
    (node,) = topo.nodes()
    assert node.instance_id == "i-9" and node.primary_ip == "10.0.1.5" and node.agent == "ready"
    (eni,) = node.enis
    assert [p.ref for p in eni.pods] == ["x/a"] and eni.warm == ("10.0.1.8",)  # cooling is not warm


def test_matrix_is_the_engines_with_the_kernels_beside_and_the_differences() -> None:
    refs = ["x/a", "x/b", "x/gone"]  # a running pod the API no longer knows is left out
    doc = data.matrix_doc(resources(), refs, 80, "TCP", None)
    assert doc["refs"] == ["x/a", "x/b"]
    assert doc["expected"] == {"x/a": {"x/a": True, "x/b": False}, "x/b": {"x/a": True, "x/b": False}}
    assert doc["measured"] is None and doc["disagreements"] == []
    measured = {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": True, "x/b": True}}
    doc = data.matrix_doc(resources(), refs, 80, "TCP", measured)
    # x/b -> x/b is a pod's traffic to itself: never leaves its namespace, not a disagreement
    assert doc["disagreements"] == [{"from": "x/a", "to": "x/b", "measured": True, "expected": False}]
    assert 'data-from="x/a" data-to="x/b" data-expected="deny" data-measured="allow"' in doc["svg"]


def test_port_and_protocol_from_the_query() -> None:
    assert data.port_protocol("") == (80, "TCP")
    assert data.port_protocol("port=53&protocol=udp") == (53, "UDP")
    for bad, word in (("port=0", "port"), ("port=x", "port"), ("protocol=ICMP", "protocol")):
        with pytest.raises(data.BadQuery, match=word):
            data.port_protocol(bad)


def test_flows_are_merged_newest_first_and_a_silent_agent_is_named() -> None:
    per_node: dict[str, Any] = {
        "node2": [flow("x/a", "x/b", "deny", 10.0), flow("x/a", "x/b", "allow", 30.0)],
        "node1": [{"enabled": False, "mode": "off", "error": ""}, flow("x/b", "x/a", "deny", 20.0)],
        "node3": "its agent does not answer: refused",
    }
    doc = data.flows_doc(per_node)
    assert [(f["end"], f["from"], f["to"]) for f in doc["flows"]] == [
        (30.0, "x/a", "x/b"), (20.0, "x/b", "x/a"), (10.0, "x/a", "x/b")
    ]  # fmt: skip
    assert doc["denied"] == 2 and doc["total"] == 3
    assert doc["errors"] == {"node1": "flow logs are off", "node3": "its agent does not answer: refused"}
    assert len(data.flows_doc(per_node, limit=1)["flows"]) == 1


def test_explain_is_policy_explains_text() -> None:
    doc = data.explain_doc(resources(), "from=x/a&to=x/b&protocol=tcp&port=80")
    state = ClusterState.from_resources(resources())
    want = evaluate(state, Flow(endpoint(state, "x/a"), endpoint(state, "x/b"), 6, 80)).explanation
    assert doc["text"] == want and "DENIED" in want and "end of tier" in want
    assert doc["allowed"] is False
    assert doc["command"] == "vpcnet policy explain --from x/a --to x/b --protocol TCP --port 80"
    # an address that is no pod is an address; an unknown pod a clear error
    assert "10.9.9.9" in data.explain_doc(resources(), "from=10.9.9.9&to=x/a")["text"]
    with pytest.raises(data.BadQuery, match="x/nope"):
        data.explain_doc(resources(), "from=x/nope&to=x/a")
    with pytest.raises(data.BadQuery, match="from"):
        data.explain_doc(resources(), "to=x/a")
