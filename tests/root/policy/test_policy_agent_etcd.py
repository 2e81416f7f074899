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
