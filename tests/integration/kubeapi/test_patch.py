"""PATCH through the lab's API: the content types map to the patch engines (vpcnet/lab/kubeapi/patch.py).

Merge, JSON and strategic patches over HTTP, kubectl apply twice (client-side apply sends a strategic merge
patch), kubectl label, and the media types the server refuses (415)."""

from __future__ import annotations

import pytest
from conftest import KubeApi
from test_http import call, pod
from test_kubectl import KUBECTLS, Kubectl

POD_PATH = "/api/v1/namespaces/default/pods"


def test_unknown_patch_type_is_415(kube_api: KubeApi) -> None:
    call(kube_api, "POST", POD_PATH, pod("p"))
    status, doc = call(kube_api, "PATCH", f"{POD_PATH}/p", b"{}", "application/x-unknown")
    assert (status, doc["reason"]) == (415, "UnsupportedMediaType")


def test_merge_json_and_strategic_patches(kube_api: KubeApi) -> None:
    call(kube_api, "POST", POD_PATH, pod("p"))
    status, doc = call(
        kube_api,
        "PATCH",
        f"{POD_PATH}/p",
        {"metadata": {"labels": {"tier": "front"}}},
        "application/merge-patch+json",
    )
    assert status == 200 and doc["metadata"]["labels"] == {"app": "web", "tier": "front"}
    ops = [{"op": "replace", "path": "/metadata/labels/app", "value": "db"}]
    status, doc = call(kube_api, "PATCH", f"{POD_PATH}/p", ops, "application/json-patch+json")
    assert status == 200 and doc["metadata"]["labels"]["app"] == "db"
    strategic = {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
    status, doc = call(
        kube_api, "PATCH", f"{POD_PATH}/p", strategic, "application/strategic-merge-patch+json"
    )
    assert status == 200 and [c["image"] for c in doc["spec"]["containers"]] == ["busybox:2"]
    status, doc = call(
        kube_api,
        "PATCH",
        f"{POD_PATH}/p/status",
        {"status": {"phase": "Running"}},
        "application/merge-patch+json",
    )
    assert status == 200 and doc["status"]["phase"] == "Running"
    bad = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    assert call(kube_api, "PATCH", f"{POD_PATH}/p", bad, "application/json-patch+json")[0] in (409, 422, 400)


@pytest.mark.skipif(not KUBECTLS, reason="needs kubectl")
@pytest.mark.parametrize("binary", KUBECTLS)
def test_kubectl_apply_twice_and_label(
    kube_api: KubeApi, tmp_path: pytest.TempPathFactory, binary: str
) -> None:
    kubectl = Kubectl(binary, kube_api, tmp_path / "cache")  # type: ignore[operator]
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: {value}\n"
    assert "created" in kubectl("apply", "-f", "-", stdin=manifest.format(value="one"))
    assert "configured" in kubectl("apply", "-f", "-", stdin=manifest.format(value="two"))
    assert kubectl("get", "configmap", "applied", "-o", "jsonpath={.data.k}") == "two"
    kubectl("label", "configmap", "applied", "lab=yes")
    assert kubectl("get", "configmaps", "-l", "lab=yes", "-o", "name").split() == ["configmap/applied"]
