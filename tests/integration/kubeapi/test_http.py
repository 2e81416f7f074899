"""The lab's Kubernetes API over a real etcd, driven with plain HTTP: the answers the clients depend on."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from conftest import KubeApi


def call(
    api: KubeApi,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(api.url + path, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def pod(name: str, node: str = "node-a", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }


def watch_lines(api: KubeApi, path: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(api.url + path, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def test_discovery_and_version(kube_api: KubeApi) -> None:
    assert call(kube_api, "GET", "/version")[1]["major"] == "1"
    assert call(kube_api, "GET", "/api")[1]["versions"] == ["v1"]
    groups = {g["name"] for g in call(kube_api, "GET", "/apis")[1]["groups"]}
    assert "coordination.k8s.io" in groups
    assert {"apps", "policy", "rbac.authorization.k8s.io"} <= groups  # stored for deploy/'s objects
    status, doc = call(kube_api, "GET", "/apis/batch/v1")
    assert status == 404 and doc["kind"] == "Status" and doc["reason"] == "NotFound"
    status, doc = call(kube_api, "GET", "/openapi/v3")
    assert status == 404


def test_crud_conflicts_and_errors(kube_api: KubeApi) -> None:
    status, created = call(kube_api, "POST", "/api/v1/namespaces/default/pods", pod("p1"))
    assert status == 201 and created["metadata"]["resourceVersion"].isdigit()
    status, doc = call(kube_api, "POST", "/api/v1/namespaces/default/pods", pod("p1"))
    assert (status, doc["reason"]) == (409, "AlreadyExists")
    status, doc = call(kube_api, "POST", "/api/v1/namespaces/nowhere/pods", pod("p1"))
    assert (status, doc["reason"], doc["message"]) == (404, "NotFound", 'namespaces "nowhere" not found')
    status, doc = call(kube_api, "GET", "/api/v1/namespaces/default/pods/missing")
    assert (status, doc["reason"], doc["details"]["kind"]) == (404, "NotFound", "pods")
    bad = pod("p2")
    bad["spec"]["containers"][0].pop("image")
    status, doc = call(kube_api, "POST", "/api/v1/namespaces/default/pods", bad)
    assert (status, doc["reason"]) == (422, "Invalid")
    assert doc["details"]["causes"][0]["field"] == "spec.containers[0].image"

    # Optimistic concurrency: a replace from a stale version is a 409 Conflict, and changes nothing.
    fresh = dict(created, metadata=dict(created["metadata"], labels={"app": "v2"}))
    status, updated = call(kube_api, "PUT", "/api/v1/namespaces/default/pods/p1", fresh)
    assert status == 200 and int(updated["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )
    stale = dict(created, metadata=dict(created["metadata"], labels={"app": "v3"}))
    status, doc = call(kube_api, "PUT", "/api/v1/namespaces/default/pods/p1", stale)
    assert (status, doc["reason"]) == (409, "Conflict")
    assert call(kube_api, "GET", "/api/v1/namespaces/default/pods/p1")[1]["metadata"]["labels"] == {
        "app": "v2"
    }

    # Status: the main resource ignores status changes, /status takes only them.
    updated["status"] = {"phase": "Running"}
    updated["spec"]["containers"][0]["image"] = "busybox:2"
    status, doc = call(kube_api, "PUT", "/api/v1/namespaces/default/pods/p1", updated)
    assert status == 200 and doc["status"]["phase"] == "Pending"
    doc["status"] = {"phase": "Running", "podIP": "10.1.2.3"}
    doc["metadata"]["labels"] = {"app": "ignored"}
    status, done = call(kube_api, "PUT", "/api/v1/namespaces/default/pods/p1/status", doc)
    assert (
        status == 200
        and done["status"]["podIP"] == "10.1.2.3"
        and done["metadata"]["labels"] == {"app": "v2"}
    )

    # Verbs a path does not take, patches the lab does not serve, media it does not speak.
    assert call(kube_api, "POST", "/api/v1/namespaces/default/pods/p1", pod("p1"))[0] == 405
    assert call(kube_api, "DELETE", "/api/v1/namespaces/default/pods/p1/status")[0] == 405
    assert call(kube_api, "POST", "/api/v1/pods", pod("x"))[0] == 405
    status, doc = call(
        kube_api, "PATCH", "/api/v1/namespaces/default/pods/p1", b"{}", "application/apply-patch+yaml"
    )
    assert (status, doc["reason"]) == (415, "UnsupportedMediaType") and "server-side apply" in doc["message"]
    status, doc = call(
        kube_api, "GET", "/api/v1/pods", headers={"Accept": "application/vnd.kubernetes.protobuf"}
    )
    assert status == 406

    # Delete with a stale precondition is refused; then the real delete.
    status, doc = call(
        kube_api, "DELETE", "/api/v1/namespaces/default/pods/p1", {"preconditions": {"uid": "not-the-uid"}}
    )
    assert (status, doc["reason"]) == (409, "Conflict")
    status, doc = call(kube_api, "DELETE", "/api/v1/namespaces/default/pods/p1")
    assert status == 200 and doc["metadata"]["name"] == "p1"
    assert call(kube_api, "GET", "/api/v1/namespaces/default/pods/p1")[0] == 404


def test_list_selectors_and_watch_from_a_version(kube_api: KubeApi) -> None:
    for name, node in (("a", "node-a"), ("b", "node-b"), ("c", "node-a")):
        assert call(kube_api, "POST", "/api/v1/namespaces/default/pods", pod(name, node))[0] == 201
    status, listing = call(kube_api, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")
    assert status == 200 and [p["metadata"]["name"] for p in listing["items"]] == ["a", "c"]
    version = listing["metadata"]["resourceVersion"]
    assert call(kube_api, "GET", "/api/v1/pods?labelSelector=app%20in%20(db)")[1]["items"] == []

    # Changes after the list: b moves onto node-a (ADDED to this watch), a leaves it (DELETED), c is deleted.
    b = call(kube_api, "GET", "/api/v1/namespaces/default/pods/b")[1]
    b["spec"]["nodeName"] = (
        "node-a"  # spec.nodeName is set once in a real cluster; the stand-in does not care
    )
    call(kube_api, "PUT", "/api/v1/namespaces/default/pods/b", b)
    a = call(kube_api, "GET", "/api/v1/namespaces/default/pods/a")[1]
    a["spec"]["nodeName"] = "node-z"
    call(kube_api, "PUT", "/api/v1/namespaces/default/pods/a", a)
    call(kube_api, "DELETE", "/api/v1/namespaces/default/pods/c")
    events = watch_lines(
        kube_api,
        f"/api/v1/pods?watch=1&resourceVersion={version}&timeoutSeconds=2&allowWatchBookmarks=true"
        "&fieldSelector=spec.nodeName%3Dnode-a",
    )
    changes = [(e["type"], e["object"]["metadata"].get("name")) for e in events if e["type"] != "BOOKMARK"]
    assert changes == [("ADDED", "b"), ("DELETED", "a"), ("DELETED", "c")]
    assert any(e["type"] == "BOOKMARK" for e in events)  # bookmarks every 0.5 s in these tests
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(version)

    # Without a version: the current objects first, as ADDED.
    initial = watch_lines(kube_api, "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1")
    assert sorted(e["object"]["metadata"]["name"] for e in initial) == ["a", "b"]


def test_compacted_version_is_410_expired(fresh_kube_api: KubeApi) -> None:
    call(
        fresh_kube_api,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "x"}, "data": {"k": "v"}},
    )
    old = call(fresh_kube_api, "GET", "/api/v1/configmaps")[1]["metadata"]["resourceVersion"]
    call(fresh_kube_api, "DELETE", "/api/v1/namespaces/default/configmaps/x")
    call(fresh_kube_api, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "y"}})
    fresh_kube_api.compact()
    events = watch_lines(fresh_kube_api, f"/api/v1/configmaps?watch=1&resourceVersion={old}&timeoutSeconds=5")
    assert [e["type"] for e in events] == ["ERROR"]
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")
    assert "too old resource version" in events[0]["object"]["message"]


def test_crd_makes_a_kind_servable_and_takes_it_away(kube_api: KubeApi) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.lab.example.com"},
        "spec": {
            "group": "lab.example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    path = "/apis/lab.example.com/v1/namespaces/default/widgets"
    assert call(kube_api, "GET", path)[0] == 404
    assert call(kube_api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    assert "lab.example.com" in {g["name"] for g in call(kube_api, "GET", "/apis")[1]["groups"]}
    widget = {
        "apiVersion": "lab.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 3},
    }
    status, created = call(kube_api, "POST", path, widget)
    assert status == 201 and created["spec"] == {"size": 3}
    status, doc = call(kube_api, "POST", path, dict(widget, metadata={"name": "bad"}, spec={"size": "big"}))
    assert (status, doc["reason"]) == (422, "Invalid") and doc["details"]["causes"][0]["field"] == "spec.size"
    status, doc = call(kube_api, "PATCH", f"{path}/w", b"{}", "application/strategic-merge-patch+json")
    assert status == 415  # strategic merge patch is for built-in kinds only
    created["status"] = {"ready": True}
    status, done = call(kube_api, "PUT", f"{path}/w/status", created)
    assert status == 200 and done["status"] == {"ready": True}
    assert (
        call(
            kube_api,
            "DELETE",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.lab.example.com",
        )[0]
        == 200
    )
    assert call(kube_api, "GET", path)[0] == 404


def test_watch_ends_when_the_client_goes(kube_api: KubeApi) -> None:
    """A watcher that hangs up releases its connection and its etcd watch."""
    for _ in range(5):
        with urllib.request.urlopen(kube_api.url + "/api/v1/pods?watch=1", timeout=10) as response:
            assert response.status == 200
    deadline = time.monotonic() + 30
    while kube_api.running.server.open_connections and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kube_api.running.server.open_connections == 0
    assert call(kube_api, "GET", "/healthz")[0] == 200
