"""Discovery documents, OpenAPI, and how request paths are read."""

from __future__ import annotations

from vpcnet.lab.kubeapi import discovery
from vpcnet.lab.kubeapi.resources import Registry
from vpcnet.lab.kubeapi.routing import Target, parse_resource_path


def test_group_list_and_resource_lists() -> None:
    registry = Registry()
    groups = {g["name"]: g for g in discovery.api_group_list(registry)["groups"]}
    assert set(groups) == {
        "coordination.k8s.io",
        "networking.k8s.io",
        "apiextensions.k8s.io",
        # stored for deploy/'s objects (kubectl apply -k deploy/)
        "apps",
        "policy",
        "rbac.authorization.k8s.io",
    }
    assert groups["networking.k8s.io"]["preferredVersion"]["groupVersion"] == "networking.k8s.io/v1"
    core = discovery.resource_list(registry, "", "v1")
    assert core is not None and core["groupVersion"] == "v1"
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/status", "nodes", "nodes/status", "namespaces", "configmaps", "events"} <= names
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert (
        pods["namespaced"]
        and pods["kind"] == "Pod"
        and "watch" in pods["verbs"]
        and "po" in pods["shortNames"]
    )
    apps = discovery.resource_list(registry, "apps", "v1")
    assert apps is not None and {"deployments", "daemonsets", "deployments/status"} <= {
        r["name"] for r in apps["resources"]
    }
    assert discovery.resource_list(registry, "batch", "v1") is None
    assert discovery.api_group(registry, "batch") is None


def test_openapi_protobuf_is_a_gnostic_document() -> None:
    raw = discovery.openapi_v2_protobuf()
    assert raw.startswith(b"\x0a\x032.0\x12")  # field 1 "2.0", then field 2 (info)
    info_len = raw[6]
    info = raw[7 : 7 + info_len]
    assert info.startswith(b"\x0a" + bytes([len(discovery.OPENAPI_TITLE)]) + discovery.OPENAPI_TITLE.encode())
    assert raw[7 + info_len :] == b"\x42\x00"  # field 8: empty paths


def test_paths() -> None:
    assert parse_resource_path(["v1", "namespaces", "a", "pods", "p", "status"]) == Target(
        "", "v1", "pods", "a", "p", "status"
    )
    assert parse_resource_path(["v1", "namespaces", "a", "status"]) == Target(
        "", "v1", "namespaces", None, "a", "status"
    )
    assert parse_resource_path(["v1", "namespaces", "a"]) == Target("", "v1", "namespaces", None, "a")
    assert parse_resource_path(["v1", "watch", "pods"]) == Target("", "v1", "pods", watch_path=True)
    assert parse_resource_path(["crd.example.com", "v1", "foos"]) == Target("crd.example.com", "v1", "foos")
    assert parse_resource_path(["v1", "namespaces", "a", "pods", "p", "status", "x"]) is None
