"""The agent's ENIConfig choice following the datastore, on both: the lab API over etcd (through the
Kubernetes store) and etcd itself. Relabelling, editing and deleting are followed; other nodes' changes
are not; after a compaction of etcd under the watch the view still converges."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import KubeApi
from etcd_fixture import EtcdServer

from vpcnet.agent.eniconfig import EniConfigChooser
from vpcnet.agent.node_events import NodeConfigFeed
from vpcnet.api.eniconfig import EniConfigKeys
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.open import open_kube_store
from vpcnet.datastore.resources import ResourceRef, ResourceStore
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.ipam.eni_target import EniTargets
from vpcnet.lab.labapi import crd_documents

KIND = "eniconfig.crd.k8s.amazonaws.com"


def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def eniconfig(name: str, subnet: str) -> dict[str, Any]:
    return {
        "apiVersion": "crd.k8s.amazonaws.com/v1alpha1",
        "kind": "ENIConfig",
        "metadata": {"name": name},
        "spec": {"subnet": subnet, "securityGroups": ["sg-0aaaaaaa"]},
    }


@contextlib.asynccontextmanager
async def kube_store(api: KubeApi) -> AsyncIterator[ResourceStoreLike]:
    store = await open_kube_store(api.kubeconfig, sync_timeout=30)
    try:
        await store.apply([d for d in crd_documents() if "eniconfig" in d["metadata"]["name"]])
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def etcd_store(etcd: EtcdServer) -> AsyncIterator[ResourceStore]:
    datastore = EtcdDatastore(etcd.settings())
    try:
        yield ResourceStore(datastore)
    finally:
        await datastore.close()


async def until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
    assert check(), what


async def follow(store: ResourceStoreLike, compact: Callable[[], object]) -> None:
    await store.apply([node("n1", {"k8s.amazonaws.com/eniConfig": "a"}), node("n2", {})])
    await store.apply([eniconfig("a", "subnet-0aaaaaaa"), eniconfig("b", "subnet-0bbbbbbb")])
    targets = EniTargets(custom_networking=True)
    chooser = EniConfigChooser(targets, "n1", EniConfigKeys())
    feed = NodeConfigFeed(store, "n1", chooser.on_view)
    task = asyncio.create_task(feed.run())
    try:
        await until("a", lambda: targets.describe()["subnet"] == "subnet-0aaaaaaa")
        await store.apply([node("n1", {"k8s.amazonaws.com/eniConfig": "b"})])
        await until("relabelled to b", lambda: targets.describe()["subnet"] == "subnet-0bbbbbbb")
        changes = targets.changes
        await store.apply([node("n2", {"k8s.amazonaws.com/eniConfig": "a"})])  # not ours
        await store.apply([eniconfig("b", "subnet-0ccccccc")])  # ours, edited
        await until("b edited", lambda: targets.describe()["subnet"] == "subnet-0ccccccc")
        assert targets.changes == changes + 1
        await asyncio.to_thread(compact)  # the watch's history is gone; what follows must still arrive
        await store.delete([ResourceRef(KIND, None, "b")])
        await until("b deleted", lambda: "'b'" in targets.problem and "does not exist" in targets.problem)
        await store.apply([node("n1", {"k8s.amazonaws.com/eniConfig": "a"})])
        await until("back to a", lambda: targets.describe()["subnet"] == "subnet-0aaaaaaa")
        # the API's schema lets a malformed subnet through (as the real one does): the agent refuses it
        await store.apply([eniconfig("a", "subnet-a")])
        await until(
            "a refused", lambda: "is not usable" in targets.problem and "spec.subnet" in targets.problem
        )
        assert targets.describe()["subnet"] == ""
        await store.delete([ResourceRef("node", None, "n1")])
        await until("node gone", lambda: "Node 'n1' is not in the datastore" in targets.problem)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_feed_follows_the_lab_api(fresh_kube_api: KubeApi) -> None:
    async def body() -> None:
        async with kube_store(fresh_kube_api) as store:
            await follow(store, fresh_kube_api.compact)

    asyncio.run(body())


def test_the_feed_follows_etcd(fresh_etcd_server: EtcdServer, tmp_path: Path) -> None:
    async def body() -> None:
        async with etcd_store(fresh_etcd_server) as store:
            datastore = store.datastore
            loop = asyncio.get_running_loop()

            def compact() -> None:
                async def go() -> None:
                    await datastore.compact(await datastore.current_revision())

                asyncio.run_coroutine_threadsafe(go(), loop).result(timeout=30)

            await follow(store, compact)

    asyncio.run(body())


pytestmark = pytest.mark.slow
