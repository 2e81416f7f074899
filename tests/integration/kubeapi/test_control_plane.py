"""The lab's control plane over the lab's API through the datastore's Kubernetes store: the status
subresource write the kubelet makes, Lease leader election (compare-and-swap on resourceVersion), and
kube-controllers' mirror of the API into etcd, following the API through the reflectors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from conftest import KubeApi

from vpcnet.controllers.lease import LeaderElector
from vpcnet.controllers.mirror import Mirror
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.open import open_kube_store
from vpcnet.datastore.resources import ResourceRef, ResourceStore

T = TypeVar("T")
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def with_store(api: KubeApi, body: Callable[[KubeResourceStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = await open_kube_store(api.kubeconfig, sync_timeout=30)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_status_is_written_through_the_subresource_under_compare_and_swap(kube_api: KubeApi) -> None:
    async def body(store: KubeResourceStore) -> None:
        await store.apply([NAMESPACE, POD])
        pod = await store.get(ResourceRef("pod", "default", "web"))
        assert pod is not None
        running = {**pod.body, "status": {"phase": "Running", "podIP": "10.0.0.5"}}
        assert await store.replace_status(running, pod.revision - 1) is None  # stale: refused
        written = await store.replace_status({**running, "spec": {"nodeName": "elsewhere"}}, pod.revision)
        assert written is not None and written.revision > pod.revision
        assert written.body["status"]["podIP"] == "10.0.0.5"
        assert written.body["spec"]["nodeName"] == "n1"  # the subresource writes status only

    with_store(kube_api, body)


def test_one_lease_holder_at_a_time(kube_api: KubeApi) -> None:
    async def body(store: KubeResourceStore) -> None:
        await store.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}])
        a, b = LeaderElector(store, "a", duration=15), LeaderElector(store, "b", duration=15)
        results = await asyncio.gather(a.try_acquire(), b.try_acquire())
        assert sorted(results) == [False, True]  # both raced to create it: one won
        winner, loser = (a, b) if results[0] else (b, a)
        assert await winner.try_acquire() and not await loser.try_acquire()
        await winner.release()
        assert await loser.try_acquire()

    with_store(kube_api, body)


def test_the_mirror_copies_the_api_into_etcd_and_follows_deletions(fresh_kube_api: KubeApi) -> None:
    assert fresh_kube_api.etcd is not None
    etcd = EtcdDatastore(fresh_kube_api.etcd.settings())

    async def body(api: KubeResourceStore) -> None:
        target = ResourceStore(etcd)
        progress: list[int] = []
        result = await api.apply([NAMESPACE, POD])
        mirror = Mirror(api, target, kinds=["namespace", "pod"], on_progress=progress.append)
        task = asyncio.create_task(mirror.run())
        try:

            async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
                async with asyncio.timeout(60):  # `what` names the condition in the traceback
                    while not await check():
                        await asyncio.sleep(0.05)

            async def has_pod() -> bool:
                return await target.get(ResourceRef("pod", "default", "web")) is not None

            await until("the pod mirrored", has_pod)
            await until("progress", lambda: _true(bool(progress) and progress[-1] >= result.revision))
            copied = await target.get(ResourceRef("pod", "default", "web"))
            assert copied is not None and copied.body["spec"]["nodeName"] == "n1"
            assert "managedFields" not in copied.body["metadata"]
            await api.delete([ResourceRef("pod", "default", "web")])

            async def gone() -> bool:
                return not await has_pod()

            await until("the pod gone from etcd", gone)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await etcd.close()

    with_store(fresh_kube_api, body)


async def _true(value: bool) -> bool:
    return value
