"""`vpcnet apply` merging, kind names, and the probe's comparison with the policy engine."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from vpcnet.api import load_documents
from vpcnet.cli.labprobe import disagreements, expected_matrix
from vpcnet.cli.main import app
from vpcnet.cli.resources import CliError, merge_pod, resolve_kind
from vpcnet.lab.kubelet import ANNOTATION_CONTAINER_ID


def pod_doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x", "labels": {"v": "1"}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}], **spec},
    }


def test_merge_keeps_what_the_kubelet_wrote() -> None:
    stored = pod_doc(nodeName="n1")
    stored["metadata"].update(uid="u1", annotations={ANNOTATION_CONTAINER_ID: "c", "mine": "old"})
    stored["status"] = {"phase": "Running", "podIP": "10.0.0.5"}
    new = pod_doc()
    new["metadata"]["labels"] = {"v": "2"}
    new["metadata"]["annotations"] = {"mine": "new"}
    merged = merge_pod(new, stored)
    assert merged["spec"]["nodeName"] == "n1"
    assert merged["metadata"]["uid"] == "u1"
    assert merged["metadata"]["labels"] == {"v": "2"}
    assert merged["metadata"]["annotations"] == {"mine": "new", ANNOTATION_CONTAINER_ID: "c"}
    assert merged["status"]["podIP"] == "10.0.0.5"
    assert merge_pod(new, None) is new


def test_merge_refuses_changes_kubernetes_refuses() -> None:
    stored = pod_doc(nodeName="n1")
    with pytest.raises(ValueError, match=r"spec.nodeName: the pod runs on n1"):
        merge_pod(pod_doc(nodeName="n2"), stored)
    changed = pod_doc()
    changed["spec"]["containers"][0]["ports"][0]["containerPort"] = 81
    with pytest.raises(ValueError, match=r"spec\.containers"):
        merge_pod(changed, stored)


def test_kind_names() -> None:
    assert resolve_kind("pods") == resolve_kind("po") == resolve_kind("Pod") == "pod"
    assert resolve_kind("ns") == "namespace"
    assert resolve_kind("netpol") == resolve_kind("networkpolicies") == "networkpolicy.networking.k8s.io"
    assert resolve_kind("networkpolicies.projectcalico.org") == "networkpolicy.projectcalico.org"
    assert resolve_kind("globalnetworkpolicies") == "globalnetworkpolicy.projectcalico.org"
    with pytest.raises(CliError, match="unknown resource type 'gadgets'"):
        resolve_kind("gadgets")


CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
"""


def test_expected_matrix_uses_the_policy_engine_and_the_served_ports() -> None:
    resources = load_documents(CLUSTER)
    refs = ["x/a", "x/b"]
    assert expected_matrix(resources, refs, 80, "TCP") == {
        "x/a": {"x/a": True, "x/b": False},
        "x/b": {"x/a": True, "x/b": True},
    }
    assert expected_matrix(resources, refs, 80, "UDP") == {
        "x/a": {"x/a": False, "x/b": False},
        "x/b": {"x/a": False, "x/b": True},
    }


DUAL_STACK = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-v6, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{ipBlock: {cidr: "fd00::/64"}}]}]
"""


def test_expected_matrix_over_one_family_of_dual_stack_pods() -> None:
    resources = load_documents(DUAL_STACK)
    refs = ["x/a", "x/b"]
    over = {v: expected_matrix(resources, refs, 80, "TCP", v) for v in (None, 4, 6)}
    assert over[None] == over[4] == {"x/a": {"x/a": True, "x/b": False}, "x/b": {"x/a": True, "x/b": False}}
    assert over[6] == {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": True, "x/b": True}}


def test_disagreements() -> None:
    measured = {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": False, "x/b": True}}
    expected = {"x/a": {"x/a": True, "x/b": False}, "x/b": {"x/a": False}}
    assert disagreements(measured, expected) == [("x/a", "x/b", True, False)]
    expected["x/a"]["x/a"] = False
    assert disagreements(measured, expected) == [("x/a", "x/a", True, False), ("x/a", "x/b", True, False)]
    assert disagreements(measured, expected, ignore_loopback=True) == [("x/a", "x/b", True, False)]


class FakeStore:
    """The three calls apply_resources makes, over a dict (this tests the CLI layer, not the datastore)."""

    def __init__(self, namespaces: list[str]) -> None:
        self.namespaces = namespaces
        self.applied: list[dict[str, Any]] = []

    async def list(self, kind: str) -> tuple[list[Any], int]:
        from types import SimpleNamespace

        assert kind == "namespace"
        return [SimpleNamespace(ref=SimpleNamespace(name=n)) for n in self.namespaces], 1

    async def get(self, ref: Any) -> None:
        return None

    async def apply(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.applied = docs
        return docs


POD_WITHOUT_NAMESPACE = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c}]}\n"


def test_the_default_namespace_exists_as_in_kubernetes() -> None:
    """A manifest that names no namespace works on a fresh lab: "default" is made with the pod."""
    import asyncio

    from vpcnet.cli.resources import apply_resources

    store = FakeStore([])
    asyncio.run(apply_resources(store, load_documents(POD_WITHOUT_NAMESPACE), ["node1"]))
    assert [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in store.applied] == [
        ("Namespace", None, "default"),
        ("Pod", "default", "web"),
    ]
    assert store.applied[0]["metadata"]["labels"] == {"kubernetes.io/metadata.name": "default"}
    # Once it exists it is left alone; any other missing namespace is still an error naming the field.
    store = FakeStore(["default"])
    asyncio.run(apply_resources(store, load_documents(POD_WITHOUT_NAMESPACE), ["node1"]))
    assert [d["kind"] for d in store.applied] == ["Pod"]
    store = FakeStore(["default"])
    other = POD_WITHOUT_NAMESPACE.replace("{name: web}", "{name: web, namespace: shop}")
    with pytest.raises(CliError, match=r"Pod shop/web: metadata.namespace: namespace 'shop' does not exist"):
        asyncio.run(apply_resources(store, load_documents(other), ["node1"]))
    assert store.applied == []


def test_lab_probe_refuses_a_family_that_is_neither_4_nor_6() -> None:
    result = CliRunner().invoke(app, ["lab", "probe", "--family", "5", "--prefix", "vtnone"])
    assert result.exit_code != 0 and "--family 5: expected 4 or 6" in result.output, result.output
