"""The Kubernetes resource store through kubernetes_asyncio against an in-process fake API server: kind
mapping (Calico v3 <-> crd.projectcalico.org/v1), snapshot + watch driven by reflectors (a 410 never
reaches the consumer), object-by-object apply, compare-and-swap on resourceVersion, bad input refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_kube_server import FakeKubeServer

from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.kube_client import KubeApi
from vpcnet.datastore.kube_settings import KubeSettings
from vpcnet.datastore.reflector import ReflectorSettings
from vpcnet.datastore.resources import ResourceError, ResourceEvent, ResourceRef
from vpcnet.datastore.types import DatastoreError, EventType, WatchCompacted

CALICO_NP = "networkpolicy.projectcalico.org"
FAST = ReflectorSettings(watch_timeout=0.5, idle_timeout=5, hang_grace=2, resync_period=0, backoff_base=0.01)


def calico_policy(name: str, order: int = 1, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"order": order, "selector": "all()"},
    }


def pod(name: str, ip: str = "10.0.0.1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"nodeName": "n1"},
        "status": {"podIP": ip},
    }


def run(body: Callable[[FakeKubeServer, KubeResourceStore], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        server = FakeKubeServer()
        await server.start()
        api = await KubeApi.connect(KubeSettings(server.kubeconfig(tmp_path)))
        store = KubeResourceStore(api, FAST, sync_timeout=10)
        try:
            await body(server, store)
        finally:
            await store.close()
            await server.stop()

    asyncio.run(main())


async def until(condition: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def collecting(
    store: KubeResourceStore, kinds: set[str], start: int, progress: list[int]
) -> AsyncIterator[list[ResourceEvent]]:
    events: list[ResourceEvent] = []

    async def pump() -> None:
        async for event in store.watch(kinds, start, progress.append):
            events.append(event)

    task = asyncio.create_task(pump())
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_calico_kinds_are_stored_as_crds_and_read_back_as_v3(tmp_path: Path) -> None:
    async def body(server: FakeKubeServer, store: KubeResourceStore) -> None:
        result = await store.apply([calico_policy("allow"), pod("web")])
        assert [str(r) for r in result.created] == [f"{CALICO_NP} default/allow", "pod default/web"]
        stored = server.objects[("networkpolicies", "default", "allow")]
        assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["kind"] == "NetworkPolicy"
        assert stored["spec"] == {"order": 1, "selector": "all()"}
        assert (
            "POST",
            "/apis/crd.projectcalico.org/v1/namespaces/default/networkpolicies",
        ) in server.requests
        got = await store.get(ResourceRef(CALICO_NP, "default", "allow"))
        assert got is not None and got.body["apiVersion"] == "projectcalico.org/v3"
        assert got.revision == int(stored["metadata"]["resourceVersion"])
        again = await store.apply([calico_policy("allow"), pod("web")])
        assert len(again.unchanged) == 2 and not again.created and not again.configured
        changed = await store.apply([calico_policy("allow", order=5)])
        assert len(changed.configured) == 1 and changed.revision == server.rv
        items, revision = await store.list(CALICO_NP, "default")
        assert [i.body["spec"]["order"] for i in items] == [5] and revision == server.rv
        assert await store.delete(
            [ResourceRef("pod", "default", "web"), ResourceRef("pod", "default", "x")]
        ) == [ResourceRef("pod", "default", "web")]

    run(body, tmp_path)


def test_snapshot_then_watch_misses_nothing_and_never_shows_a_410(tmp_path: Path) -> None:
    async def body(server: FakeKubeServer, store: KubeResourceStore) -> None:
        server.write("pods", pod("a"))
        server.write("networkpolicies", {**calico_policy("p"), "apiVersion": "crd.projectcalico.org/v1"})
        kinds = {"pod", CALICO_NP}
        items, revision = await store.snapshot(kinds)
        assert sorted(str(i.ref) for i in items) == [f"{CALICO_NP} default/p", "pod default/a"]
        assert next(i for i in items if i.ref.kind == CALICO_NP).body["apiVersion"] == "projectcalico.org/v3"
        server.write("pods", pod("b"))  # before the watch starts: replayed from the feed
        progress: list[int] = []
        async with collecting(store, kinds, revision + 1, progress) as events:
            await until(lambda: any(e.ref.name == "b" for e in events), "b")
            # A gap the watch cannot bridge: a is deleted, c created, and the history compacted at once.
            server.write("pods", server.objects[("pods", "default", "a")], "DELETED")
            server.write("pods", pod("c"))
            server.compact()
            await until(lambda: any(e.ref.name == "c" for e in events), "c after the relist")
            await until(
                lambda: any(e.type is EventType.DELETE and e.ref.name == "a" for e in events), "a's deletion"
            )
            assert store.reflectors["pod"].stats.gone >= 1
            await until(lambda: bool(progress) and progress[-1] >= server.rv - 0, "progress to the present")
        view = {str(i.ref) for i in items}
        for event in events:
            (view.add if event.type is EventType.PUT else view.discard)(str(event.ref))
        assert view == {f"{CALICO_NP} default/p", "pod default/b", "pod default/c"}

    run(body, tmp_path)


def test_a_watch_from_a_revision_not_handed_out_must_resnapshot(tmp_path: Path) -> None:
    async def body(server: FakeKubeServer, store: KubeResourceStore) -> None:
        _, revision = await store.snapshot({"pod"})
        with pytest.raises(WatchCompacted):
            async for _ in store.watch({"pod"}, revision + 7):
                pass

    run(body, tmp_path)


def test_compare_and_swap_per_object(tmp_path: Path) -> None:
    async def body(server: FakeKubeServer, store: KubeResourceStore) -> None:
        created = await store.create(calico_policy("ipam"))
        assert created is not None
        assert await store.create(calico_policy("ipam")) is None
        assert await store.replace(calico_policy("ipam", 2), created.revision - 1) is None
        replaced = await store.replace(calico_policy("ipam", 2), created.revision)
        assert replaced is not None and replaced.revision > created.revision
        assert await store.replace(calico_policy("ipam", 3), created.revision) is None  # stale now
        ref = replaced.ref
        assert not await store.delete_at(ref, created.revision)
        assert await store.delete_at(ref, replaced.revision)
        assert await store.get(ref) is None
        assert not await store.delete_at(ref, replaced.revision)

    run(body, tmp_path)


def test_bad_input_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async def body(server: FakeKubeServer, store: KubeResourceStore) -> None:
        no_namespace = calico_policy("x")
        del no_namespace["metadata"]["namespace"]
        unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        for documents, problem in [
            ([pod("ok"), no_namespace], "metadata.namespace: required"),
            ([pod("ok"), unknown], "widget.example.com"),
            ([pod("ok"), pod("ok")], "appears twice"),
        ]:
            before = len(server.requests)
            with pytest.raises(ResourceError, match=problem):
                await store.apply(documents)
            assert len(server.requests) == before and not server.objects

    run(body, tmp_path)


def test_a_server_with_opaque_resource_versions_is_refused_clearly(tmp_path: Path) -> None:
    async def body(server: FakeKubeServer, store: KubeResourceStore) -> None:
        server.objects[("pods", "default", "odd")] = {
            **pod("odd"),
            "metadata": {"name": "odd", "namespace": "default", "resourceVersion": "abc"},
        }
        with pytest.raises(DatastoreError, match="'abc' is not an integer"):
            await store.list("pod")

    run(body, tmp_path)
