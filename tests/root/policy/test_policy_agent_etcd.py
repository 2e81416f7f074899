"""The policy agent end to end on one node: real etcd -> watch -> calculation -> kernel -> real packets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import policy_netkit as netkit
import pytest
from etcd_fixture import EtcdServer

from vpcnet.agent.policy import PolicyAgent
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.policy_backend import BACKENDS, make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceRef, ResourceStore, kind_path

pytestmark = pytest.mark.root


def pod_doc(pod: netkit.Pod, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"podIP": pod.ip, "podIPs": [{"ip": pod.ip}]},
    }


def web_policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}
            ],
        },
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_agent_enforces_policies_from_etcd(
    fresh_etcd_server: EtcdServer, backend: str, tmp_path: Path
) -> None:
    with netkit.node() as node:
        client, other, web = node.add_pod("client"), node.add_pod("other"), node.add_pod("web")
        ns = node.tag  # the pods' Kubernetes namespace: their veths are named from "<ns>.<pod>"
        status = tmp_path / "policy-status.json"

        async def main() -> None:
            datastore = EtcdDatastore(fresh_etcd_server.settings())
            store = ResourceStore(datastore)
            agent = PolicyAgent(
                store,
                PolicyCalculator("n1", ["eni"]),
                make_dataplane(backend, SubprocessRunner(node.netns)),
                status_path=status,
            )
            task = asyncio.create_task(agent.run())

            async def apply(*docs: dict[str, Any]) -> None:
                result = await store.apply(list(docs))
                for _ in range(200):
                    if agent.applied_revision >= result.revision:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"agent did not reach revision {result.revision}: {agent.status()}")

            def connects(src: netkit.Pod, dst: netkit.Pod, port: int) -> Any:
                return asyncio.to_thread(netkit.tcp_connects, src, dst, port)

            def reaches(src: netkit.Pod, dst: netkit.Pod, port: int) -> Any:
                return asyncio.to_thread(netkit.tcp_reaches, src, dst, port)

            try:
                await apply(
                    pod_doc(client, ns, role="client"), pod_doc(other, ns), pod_doc(web, ns, app="web")
                )
                assert await reaches(other, web, 80)
                await apply(web_policy(ns))
                assert await reaches(client, web, 80)
                assert not await connects(client, web, 81)
                assert not await connects(other, web, 80)
                await apply(pod_doc(other, ns, role="client"))  # a label change
                assert await reaches(other, web, 80)
                deleted = await store.delete(
                    [ResourceRef(kind_path("networking.k8s.io/v1", "NetworkPolicy"), ns, "web")]
                )
                assert deleted
                revision = await datastore.current_revision()
                for _ in range(200):
                    if agent.applied_revision >= revision:
                        break
                    await asyncio.sleep(0.05)
                assert await reaches(client, web, 81)
                reported = json.loads(status.read_text())
                assert reported["revision"] >= revision and reported["backend"] == backend
                assert reported["endpoints"] == 3 and reported["failures"] == 0
            finally:
                task.cancel()
                with __import__("contextlib").suppress(asyncio.CancelledError):
                    await task
                await make_dataplane(backend, SubprocessRunner(node.netns)).remove_all()
                await datastore.close()

        asyncio.run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_undecodable_policy_fails_closed_for_its_namespace_and_stops_nothing(
    fresh_etcd_server: EtcdServer, backend: str, tmp_path: Path
) -> None:
    """Issue 14, defects 2 and 3: `not json{` under the NetworkPolicy prefix, read by a running agent and by
    one started afterwards: the namespace's pods are denied both ways, later changes are still enforced,
    other namespaces are untouched, and deleting the bad key opens the namespace again."""
    with netkit.node() as node:
        client, web = node.add_pod("client"), node.add_pod("web")
        ns = node.tag
        knp = kind_path("networking.k8s.io/v1", "NetworkPolicy")
        bad_key = ResourceRef(knp, ns, "broken").key

        async def main() -> None:
            datastore = EtcdDatastore(fresh_etcd_server.settings())
            store = ResourceStore(datastore)

            def agent_for(status: Path) -> PolicyAgent:
                dataplane = make_dataplane(backend, SubprocessRunner(node.netns))
                return PolicyAgent(store, PolicyCalculator("n1", ["eni"]), dataplane, status_path=status)

            async def reached(agent: PolicyAgent, revision: int) -> None:
                for _ in range(200):
                    if agent.applied_revision >= revision:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"agent did not reach revision {revision}: {agent.status()}")

            def reaches(src: netkit.Pod, dst: netkit.Pod, port: int) -> Any:
                return asyncio.to_thread(netkit.tcp_reaches, src, dst, port)

            def connects(src: netkit.Pod, dst: netkit.Pod, port: int) -> Any:
                return asyncio.to_thread(netkit.tcp_connects, src, dst, port)

            tasks: list[asyncio.Task[None]] = []
            try:
                await store.apply([pod_doc(client, ns, role="client"), pod_doc(web, ns, app="web")])
                running = agent_for(tmp_path / "running.json")
                tasks.append(asyncio.create_task(running.run()))
                await reached(running, await datastore.current_revision())
                assert await reaches(client, web, 80)

                revision = await datastore.put(bad_key, b"not json{")
                await reached(running, revision)
                assert not await connects(client, web, 80)  # denied, in the namespace of the bad policy
                assert not await connects(web, client, 80)
                assert str(ResourceRef(knp, ns, "broken")) in running.status()["ignored_resources"]

                # A restarted agent (a fresh one) reads the same snapshot and enforces the same.
                stopped = tasks.pop()
                stopped.cancel()
                with __import__("contextlib").suppress(asyncio.CancelledError):
                    await stopped
                restarted = agent_for(tmp_path / "restarted.json")
                tasks.append(asyncio.create_task(restarted.run()))
                await reached(restarted, revision)
                assert not await connects(client, web, 80)

                # Later changes are still enforced (nothing froze at the bad revision).
                result = await store.apply([web_policy(ns)])
                await reached(restarted, result.revision)
                assert not await connects(client, web, 80)  # the fail-closed deny runs first
                deleted = await datastore.delete(bad_key)
                assert deleted
                await reached(restarted, await datastore.current_revision())
                assert await reaches(client, web, 80)  # web's policy allows role=client on 80
                assert not await connects(client, web, 81)
                assert restarted.status()["ignored_resources"] == {}
            finally:
                for task in tasks:
                    task.cancel()
                    with __import__("contextlib").suppress(asyncio.CancelledError):
                        await task
                await make_dataplane(backend, SubprocessRunner(node.netns)).remove_all()
                await datastore.close()

        asyncio.run(main())
