"""The Kubernetes store against the lab's Kubernetes API (vpcnet.lab.kubeapi) over a real etcd: the watch is
cut (the API restarted), etcd is compacted under it while objects are deleted in the gap, and the
consumer's view (built from snapshot + watch events alone) converges to the API's, nothing missed, nothing
stale. Calico kinds go through a CustomResourceDefinition in crd.projectcalico.org/v1."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest
from etcd_fixture import EtcdServer

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.kube_client import KubeApi
from vpcnet.datastore.kube_settings import KubeSettings
from vpcnet.datastore.reflector import ReflectorSettings
from vpcnet.datastore.resources import ResourceEvent, ResourceRef
from vpcnet.datastore.types import EventType

# The lab's Kubernetes API (vpcnet/lab/kubeapi, from the wt/kubeapi branch). Imported by name so that the
# import block sorts the same with and without it in the tree; absent, this module fails to import (no skip).
lab_server = importlib.import_module("vpcnet.lab.kubeapi.server")
lab_kubeconfig = importlib.import_module("vpcnet.lab.kubeapi.kubeconfig")

if shutil.which("etcd") is None:
    pytest.skip("needs etcd (Debian's etcd-server)", allow_module_level=True)

SETTINGS = ReflectorSettings(
    watch_timeout=5, idle_timeout=3, hang_grace=2, resync_period=0, backoff_base=0.05
)
CALICO_NP = "networkpolicy.projectcalico.org"
DEADLINE = 60.0


def pod(name: str, ip: str, tag: str = "first") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name, "tag": tag}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"podIP": ip},
    }


CALICO_NP_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "networkpolicies.crd.projectcalico.org"},
    "spec": {
        "group": "crd.projectcalico.org",
        "scope": "Namespaced",
        "names": {"plural": "networkpolicies", "singular": "networkpolicy", "kind": "NetworkPolicy"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


class Lab:
    def __init__(self, etcd: EtcdServer, tmp: Path) -> None:
        self.etcd = etcd
        self.tmp = tmp
        self.root = f"/vt-{secrets.token_hex(3)}/registry"
        self.running: Any = None
        self.port = 0

    async def start(self) -> None:
        self.running = await lab_server.start(
            self.etcd.settings(), "127.0.0.1", self.port, root=self.root, bookmark_interval=0.5
        )
        self.port = self.running.port

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.close()
            self.running = None


async def until(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await condition():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_the_view_converges_through_a_restart_a_compaction_and_deletions_in_the_gap(
    fresh_etcd_server: EtcdServer, tmp_path: Path
) -> None:
    async def main() -> None:
        lab = Lab(fresh_etcd_server, tmp_path)
        await lab.start()
        assert lab.running is not None
        kubeconfig = lab_kubeconfig.write_kubeconfig(tmp_path / "kubeconfig", lab.running.url)
        api = await KubeApi.connect(KubeSettings(kubeconfig))
        store = KubeResourceStore(api, SETTINGS, sync_timeout=30)
        etcd = EtcdDatastore(fresh_etcd_server.settings())
        events: list[ResourceEvent] = []
        watcher: asyncio.Task[None] | None = None
        try:
            status, answer = await api.request(
                "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=CALICO_NP_CRD
            )
            assert status == 201, answer
            await store.apply([pod(f"p{i}", f"10.0.0.{i + 1}") for i in range(4)])
            policy = {
                "apiVersion": "projectcalico.org/v3",
                "kind": "NetworkPolicy",
                "metadata": {"name": "allow", "namespace": "default"},
                "spec": {"order": 10, "selector": "app == 'p0'"},
            }
            await store.apply([policy])
            kinds = {"pod", CALICO_NP}
            items, revision = await store.snapshot(kinds)
            view = {i.ref: i.body for i in items}
            assert ResourceRef(CALICO_NP, "default", "allow") in view

            async def pump() -> None:
                async for event in store.watch(kinds, revision + 1):
                    events.append(event)
                    if event.type is EventType.PUT:
                        assert event.resource is not None
                        view[event.ref] = event.resource.body
                    else:
                        view.pop(event.ref, None)

            watcher = asyncio.create_task(pump())
            await store.apply([pod("p4", "10.0.0.5")])

            async def truth() -> dict[ResourceRef, int]:
                found = {}
                for kind in kinds:
                    for item in (await store.list(kind))[0]:
                        found[item.ref] = item.revision
                return found

            async def converged() -> bool:
                expected = await truth()
                return {r: int(b["metadata"]["resourceVersion"]) for r, b in view.items()} == expected

            await until(converged, "p4 through the watch")

            # Cut: the API goes away. In the gap (written to etcd behind a second API instance) objects are
            # deleted, changed and created, and etcd is compacted past all of it.
            await lab.stop()
            other = await lab_server.start(fresh_etcd_server.settings(), "127.0.0.1", 0, root=lab.root)
            other_config = lab_kubeconfig.write_kubeconfig(tmp_path / "other", other.url)
            other_api = await KubeApi.connect(KubeSettings(other_config))
            other_store = KubeResourceStore(other_api, SETTINGS)
            try:
                await other_store.delete(
                    [ResourceRef("pod", "default", "p1"), ResourceRef("pod", "default", "p2")]
                )
                await other_store.apply([pod("p3", "10.0.0.33", "changed"), pod("p9", "10.0.0.9")])
                await other_store.delete([ResourceRef(CALICO_NP, "default", "allow")])
            finally:
                await other_store.close()
                await other.close()
            await etcd.compact(await etcd.current_revision())
            await lab.start()  # the same port: the store's client reconnects to it

            await until(converged, "convergence after the restart and compaction")
            assert store.reflectors["pod"].stats.gone >= 1, "the resume point was compacted: expected a 410"
            names = {ref.name for ref in view}
            assert names == {"p0", "p3", "p4", "p9"}
            assert view[ResourceRef("pod", "default", "p3")]["metadata"]["labels"]["tag"] == "changed"
            deleted = {e.ref.name for e in events if e.type is EventType.DELETE}
            assert {"p1", "p2", "allow"} <= deleted
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await store.close()
            await etcd.close()
            await lab.stop()

    asyncio.run(main())
