"""The official Python client (`kubernetes`) lists and watches the lab's API as it would a cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import KubeApi

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.informer import SharedInformer  # noqa: E402


def core(api: KubeApi) -> Any:
    return client.CoreV1Api(config.new_client_from_config(str(api.kubeconfig)))


def config_map(name: str) -> Any:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"lab": "yes"}), data={"k": name}
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_list_then_watch_resumes_from_the_last_version(kube_api: KubeApi) -> None:
    v1 = core(kube_api)
    v1.create_namespaced_config_map("default", config_map("one"))
    listing = v1.list_namespaced_config_map("default", label_selector="lab=yes")
    assert [c.metadata.name for c in listing.items] == ["one"]
    v1.create_namespaced_config_map("default", config_map("two"))
    seen: list[tuple[str, str]] = []
    stream = watch.Watch()
    for event in stream.stream(
        v1.list_namespaced_config_map,
        "default",
        label_selector="lab=yes",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=2,
    ):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "two")]
    # Resume where that watch stopped: only what happened since.
    v1.delete_namespaced_config_map("one", "default")
    resumed = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            v1.list_namespaced_config_map,
            "default",
            resource_version=stream.resource_version,
            timeout_seconds=2,
        )
    ]
    assert resumed == [("DELETED", "one")]


def test_compaction_gives_410_then_a_relist_works(fresh_kube_api: KubeApi) -> None:
    v1 = core(fresh_kube_api)
    v1.create_namespaced_config_map("default", config_map("a"))
    old = v1.list_namespaced_config_map("default").metadata.resource_version
    v1.create_namespaced_config_map("default", config_map("b"))
    v1.delete_namespaced_config_map("a", "default")  # history after `old` is then compacted away
    fresh_kube_api.compact()
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            v1.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5
        ):
            pass
    assert err.value.status == 410
    relisted = v1.list_namespaced_config_map("default")
    assert [c.metadata.name for c in relisted.items] == ["b"]
    assert int(relisted.metadata.resource_version) > int(old)


def test_informer_follows_changes_and_relists_after_410(fresh_kube_api: KubeApi) -> None:
    v1 = core(fresh_kube_api)
    v1.create_namespaced_config_map("default", config_map("before"))
    informer = SharedInformer(v1.list_namespaced_config_map, namespace="default", resync_period=1)
    deleted: list[str] = []
    lock = threading.Lock()

    def on_deleted(obj: Any) -> None:
        with lock:
            deleted.append(obj.metadata.name)

    informer.add_event_handler("DELETED", on_deleted)
    informer.start()
    try:
        names = lambda: sorted(o.metadata.name for o in informer.cache.list())  # noqa: E731
        wait_for(lambda: names() == ["before"], "the informer's first list")
        v1.create_namespaced_config_map("default", config_map("after"))
        wait_for(lambda: names() == ["after", "before"], "the informer to see a create")
        # Push its version out of history: changes, then a compaction; it must relist and lose nothing.
        v1.delete_namespaced_config_map("before", "default")
        v1.create_namespaced_config_map("default", config_map("late"))
        fresh_kube_api.compact()
        wait_for(lambda: names() == ["after", "late"], "the informer to converge after the compaction")
        wait_for(lambda: "before" in deleted, "the deletion to be reported")
    finally:
        informer.stop()
