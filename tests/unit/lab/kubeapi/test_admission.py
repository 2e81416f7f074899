"""Defaulting, server-owned metadata and validation (422 Invalid with field paths)."""

from __future__ import annotations

import pytest

from vpcnet.lab.kubeapi.admission import prepare_create, prepare_update
from vpcnet.lab.kubeapi.errors import ApiError
from vpcnet.lab.kubeapi.resources import CRD_TYPE, Registry, ResourceType

REGISTRY = Registry()


def rt(group: str, version: str, plural: str) -> ResourceType:
    found = REGISTRY.lookup(group, version, plural)
    assert found is not None
    return found


PODS = rt("", "v1", "pods")
NODES = rt("", "v1", "nodes")

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "eniconfigs.crd.k8s.amazonaws.com"},
    "spec": {
        "group": "crd.k8s.amazonaws.com",
        "scope": "Cluster",
        "names": {
            "plural": "eniconfigs",
            "singular": "eniconfig",
            "kind": "ENIConfig",
            "listKind": "ENIConfigList",
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["subnet"],
                                "properties": {
                                    "subnet": {"type": "string"},
                                    "securityGroups": {"type": "array", "items": {"type": "string"}},
                                    "mode": {"type": "string", "enum": ["a", "b"]},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def test_pod_create_defaults_and_owned_metadata() -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "uid": "forged", "resourceVersion": "9"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        "status": {"phase": "Running"},
    }
    obj = prepare_create(PODS, body, "default")
    meta = obj["metadata"]
    assert meta["name"].startswith("web-") and len(meta["name"]) == len("web-") + 5
    assert meta["uid"] != "forged" and "resourceVersion" not in meta
    assert meta["namespace"] == "default" and meta["generation"] == 1 and meta["creationTimestamp"]
    assert obj["status"] == {"phase": "Pending", "qosClass": "BestEffort"}  # status is the server's
    assert obj["spec"]["restartPolicy"] == "Always"
    assert obj["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert body["metadata"]["uid"] == "forged"  # the caller's object is not changed


def test_invalid_pod_lists_every_field() -> None:
    body = {"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}, {"image": "x"}]}}
    with pytest.raises(ApiError) as err:
        prepare_create(PODS, body, "default")
    assert err.value.code == 422 and err.value.reason == "Invalid"
    fields = [c["field"] for c in err.value.status()["details"]["causes"]]
    assert fields == ["metadata.name", "spec.containers[0].image", "spec.containers[1].name"]
    assert err.value.message.startswith('Pod "Bad_Name" is invalid: [metadata.name: Invalid value')


def test_namespace_mismatch_and_wrong_kind_are_400() -> None:
    pod = {
        "metadata": {"name": "a", "namespace": "other"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    with pytest.raises(ApiError) as err:
        prepare_create(PODS, pod, "default")
    assert err.value.code == 400
    with pytest.raises(ApiError) as err:
        prepare_create(PODS, {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "a"}}, "default")
    assert err.value.code == 400 and "kind" in err.value.message


def test_update_keeps_status_for_kinds_with_the_subresource() -> None:
    old = prepare_create(NODES, {"metadata": {"name": "n1"}, "status": {"phase": "Ready"}}, None)
    old["metadata"]["resourceVersion"] = "5"
    new = prepare_update(
        NODES,
        old,
        {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}, "status": {}},
        status_only=False,
    )
    assert new["status"] == {"phase": "Ready"}
    assert new["metadata"]["generation"] == 2 and new["metadata"]["uid"] == old["metadata"]["uid"]
    status = prepare_update(
        NODES,
        old,
        {"metadata": {"name": "n1"}, "spec": {"x": 1}, "status": {"phase": "Gone"}},
        status_only=True,
    )
    assert status["status"] == {"phase": "Gone"} and "spec" not in status


def test_crd_validation_and_served_kind() -> None:
    crd = prepare_create(CRD_TYPE, CRD, None)
    assert {c["type"] for c in crd["status"]["conditions"]} == {"Established", "NamesAccepted"}
    registry = Registry()
    registry.set_crd(crd)
    eni = registry.lookup("crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs")
    assert eni is not None and not eni.namespaced and eni.status_subresource and not eni.builtin
    obj = prepare_create(
        eni,
        {"metadata": {"name": "us-east-1a"}, "spec": {"subnet": "subnet-1", "extra": 1}, "status": {"x": 1}},
        None,
    )
    assert obj["spec"] == {"subnet": "subnet-1"}  # unknown fields pruned
    assert "status" not in obj  # status only through /status
    with pytest.raises(ApiError) as err:
        prepare_create(eni, {"metadata": {"name": "b"}, "spec": {"securityGroups": [1], "mode": "c"}}, None)
    fields = {c["field"] for c in err.value.status()["details"]["causes"]}
    assert fields == {"spec.subnet", "spec.securityGroups[0]", "spec.mode"}
    registry.remove_crd(crd["metadata"]["name"])
    assert registry.lookup("crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs") is None


def test_bad_crd_is_invalid() -> None:
    bad = {
        "metadata": {"name": "x.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "ys", "kind": "Y"},
            "scope": "Global",
            "versions": [],
        },
    }
    with pytest.raises(ApiError) as err:
        prepare_create(CRD_TYPE, bad, None)
    fields = {c["field"] for c in err.value.status()["details"]["causes"]}
    assert fields == {"metadata.name", "spec.scope", "spec.versions"}


NAMESPACES = rt("", "v1", "namespaces")


@pytest.mark.parametrize("field", ["spec", "status"])
def test_spec_or_status_not_an_object_is_400_not_a_crash(field: str) -> None:
    # found by the fault suite's manifest fuzz: a Namespace with `spec: [["1"]]` answered 500
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}, field: [["1"]]}
    with pytest.raises(ApiError) as err:
        prepare_create(NAMESPACES, body, "")
    assert err.value.code == 400 and field in err.value.message


def test_namespace_with_null_spec_gets_its_defaults() -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}, "spec": None, "status": None}
    out = prepare_create(NAMESPACES, body, "")
    assert out["spec"]["finalizers"] == ["kubernetes"] and out["status"]["phase"] == "Active"


@pytest.mark.parametrize("name", [True, 4.1652575598318984e16, ["a"], {"a": 1}])
def test_a_name_that_is_not_a_string_is_invalid_not_a_crash(name: object) -> None:
    # found by the fault suite's manifest fuzz: a Pod named `true` or a float answered 500 (len() of a bool)
    pod = {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    with pytest.raises(ApiError) as err:
        prepare_create(PODS, pod, "default")
    assert err.value.code == 422
    assert [c["field"] for c in err.value.status()["details"]["causes"]] == ["metadata.name"]


@pytest.mark.parametrize("generate", [7, True, ["web-"]])
def test_a_generate_name_that_is_not_a_string_is_invalid_not_a_crash(generate: object) -> None:
    pod = {"metadata": {"generateName": generate}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    with pytest.raises(ApiError) as err:
        prepare_create(PODS, pod, "default")
    assert err.value.code == 422
