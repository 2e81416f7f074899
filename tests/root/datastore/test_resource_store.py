"""The resource store on a real etcd: one transaction per apply, exact reports, kind-filtered watches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from etcd_fixture import EtcdServer

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceError, ResourceEvent, ResourceRef, ResourceStore, kind_path
from vpcnet.datastore.types import EventType

pytestmark = pytest.mark.root

T = TypeVar("T")
K8S_NP = kind_path("networking.k8s.io/v1", "NetworkPolicy")
CALICO_NP = kind_path("projectcalico.org/v3", "NetworkPolicy")


def run(server: EtcdServer, body: Callable[[ResourceStore], Awaitable[T]]) -> T:
    async def main() -> T:
        ds = EtcdDatastore(server.settings())
        try:
            return await asyncio.wait_for(body(ResourceStore(ds)), 60)
        finally:
            await ds.close()

    return asyncio.run(main())


def doc(api_version: str, kind: str, name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def test_kind_paths_keep_k8s_and_calico_kinds_apart() -> None:
    assert kind_path("v1", "Pod") == "pod"
    assert K8S_NP == "networkpolicy.networking.k8s.io"
    assert CALICO_NP == "networkpolicy.projectcalico.org"
    assert ResourceRef("namespace", None, "ns1").key == "/vpcnet/v1/namespace/_cluster/ns1"


def test_apply_is_one_transaction_with_exact_report(etcd_server: EtcdServer) -> None:
    ns = "vt" + "apply"

    async def body(store: ResourceStore) -> None:
        batch = [
            doc("v1", "Namespace", ns),
            doc("networking.k8s.io/v1", "NetworkPolicy", "deny", ns, podSelector={}),
            doc("projectcalico.org/v3", "NetworkPolicy", "deny", ns, selector="all()"),
        ]
        first = await store.apply(batch)
        assert len(first.created) == 3 and not first.configured and not first.unchanged
        stored = [await store.get(ref) for ref in first.created]
        assert {s.revision for s in stored if s} == {first.revision}  # one revision: one transaction
        k8s = await store.get(ResourceRef(K8S_NP, ns, "deny"))
        assert k8s is not None and k8s.body["spec"] == {"podSelector": {}}
        assert k8s.body["metadata"]["resourceVersion"] == str(first.revision)

        batch[1] = doc(
            "networking.k8s.io/v1", "NetworkPolicy", "deny", ns, podSelector={"matchLabels": {"a": "b"}}
        )
        # A document read back (with its resourceVersion) applies as unchanged.
        batch[2] = (await store.get(ResourceRef(CALICO_NP, ns, "deny"))).body  # type: ignore[union-attr]
        second = await store.apply(batch)
        assert second.configured == [ResourceRef(K8S_NP, ns, "deny")]
        assert len(second.unchanged) == 2 and not second.created

        again = await store.apply(batch)
        assert len(again.unchanged) == 3 and again.revision == second.revision  # nothing written

        items, _ = await store.list(K8S_NP, ns)
        assert [i.ref.name for i in items] == ["deny"]
        assert await store.delete([ResourceRef(K8S_NP, ns, "deny"), ResourceRef(K8S_NP, ns, "nope")]) == [
            ResourceRef(K8S_NP, ns, "deny")
        ]
        assert await store.get(ResourceRef(K8S_NP, ns, "deny")) is None

    run(etcd_server, body)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"kind": "Pod", "metadata": {"name": "p"}}, "document 2: apiVersion"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad/Name"}}, "metadata.name"),
        (
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "_cluster"}},
            "metadata.namespace",
        ),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {1, 2}}, "not plain JSON"),
        ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vtbad"}}, "appears twice"),
    ],
)
def test_bad_batch_is_refused_whole(etcd_server: EtcdServer, bad: dict[str, Any], message: str) -> None:
    async def body(store: ResourceStore) -> None:
        before = await store.datastore.current_revision()
        with pytest.raises(ResourceError, match=message):
            await store.apply([doc("v1", "Namespace", "vtbad"), bad])
        assert await store.datastore.current_revision() == before
        assert await store.get(ResourceRef("namespace", None, "vtbad")) is None

    run(etcd_server, body)


def test_watch_kinds_in_store_order(etcd_server: EtcdServer) -> None:
    ns = "vtwatch"

    async def body(store: ResourceStore) -> None:
        _, revision = await store.snapshot({"pod", K8S_NP})
        await store.apply([doc("v1", "Pod", "p1", ns)])
        await store.apply([doc("v1", "Namespace", ns)])  # kind not watched
        await store.apply([doc("networking.k8s.io/v1", "NetworkPolicy", "np", ns)])
        await store.delete([ResourceRef("pod", ns, "p1")])
        events: list[ResourceEvent] = []
        async for event in store.watch({"pod", K8S_NP}, revision + 1):
            events.append(event)
            if len(events) == 3:
                break
        assert [(e.type, e.ref.kind, e.ref.name) for e in events] == [
            (EventType.PUT, "pod", "p1"),
            (EventType.PUT, K8S_NP, "np"),
            (EventType.DELETE, "pod", "p1"),
        ]
        assert events[0].resource is not None and events[0].resource.body["metadata"]["namespace"] == ns

    run(etcd_server, body)


def test_values_are_compact_json(etcd_server: EtcdServer) -> None:
    async def body(store: ResourceStore) -> None:
        result = await store.apply([doc("v1", "Namespace", "vtjson")])
        kv = await store.datastore.get(result.created[0].key)
        assert kv is not None
        assert json.loads(kv.value) == {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "vtjson"},
            "spec": {},
        }

    run(etcd_server, body)


def test_batch_too_big_for_one_transaction_is_refused_whole(etcd_server: EtcdServer) -> None:
    async def body(store: ResourceStore) -> None:
        before = await store.datastore.current_revision()
        batch = [doc("v1", "Pod", f"p{i}", "vtbig") for i in range(200)]  # conditions + writes > 128
        with pytest.raises(ResourceError, match="max-txn-ops"):
            await store.apply(batch)
        assert await store.datastore.current_revision() == before

    run(etcd_server, body)


def test_compare_and_swap_per_object(etcd_server: EtcdServer) -> None:
    """create / replace(expected) / delete_at(expected): per-object CAS, as the Kubernetes store has."""
    ns = "vtcas"

    async def body(store: ResourceStore) -> None:
        first = await store.create(doc("projectcalico.org/v3", "NetworkPolicy", "ipam", ns, order=1))
        assert first is not None and first.body["metadata"]["resourceVersion"] == str(first.revision)
        assert await store.create(doc("projectcalico.org/v3", "NetworkPolicy", "ipam", ns, order=9)) is None
        second = await store.replace(
            doc("projectcalico.org/v3", "NetworkPolicy", "ipam", ns, order=2), first.revision
        )
        assert second is not None and second.revision > first.revision
        stale = doc("projectcalico.org/v3", "NetworkPolicy", "ipam", ns, order=3)
        assert await store.replace(stale, first.revision) is None
        assert await store.replace(stale, 0) is None  # 0 never means "absent" here: that is create
        got = await store.get(second.ref)
        assert got is not None and got.body["spec"] == {"order": 2} and got.revision == second.revision
        assert not await store.delete_at(second.ref, first.revision)
        assert await store.delete_at(second.ref, second.revision)
        assert await store.get(second.ref) is None and not await store.delete_at(second.ref, second.revision)

    run(etcd_server, body)
