"""The lab kubelet against a real etcd and real CNI plugins, on a node namespace this test makes itself.

The node's conflist chains Debian's reference plugins (ptp + host-local, then portmap), so this checks the
kubelet's half of the contract (exec, environment, prevResult chaining, DEL, rollback, records, status in the
datastore, pod servers, probes) without needing the rest of the lab.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import string
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubeapi_fixture import KubeApi, serve_kube_api

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceRef, ResourceStore
from vpcnet.lab.kubelet import ANNOTATION_CONTAINER_ID, Kubelet, LabNode, PodRuntime, SyncReport
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.podsource import StorePods
from vpcnet.lab.probe import ProbeEndpoint, probe_matrix

pytestmark = pytest.mark.root
T = TypeVar("T")


def pod(name: str, node: str | None = None, ports: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "ports": [{"containerPort": p, "protocol": proto} for p, proto in (ports or [(80, "TCP")])],
            }
        ]
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "x", "labels": {"pod": name}},
        "spec": spec,
    }


class Env:
    def __init__(self, layout: LabLayout, settings: Any, tmp: Path) -> None:
        self.layout = layout
        self.settings = settings
        self.tmp = tmp
        self.all_nodes = [LabNode("n1", "az1", "10.252.0.1"), LabNode("n2", "az1", "10.252.1.1")]
        self.nodes = list(self.all_nodes)

    def run(self, fn: Callable[[ResourceStore], Awaitable[T]]) -> T:
        async def go() -> T:
            datastore = EtcdDatastore(self.settings)
            try:
                return await fn(ResourceStore(datastore))
            finally:
                await datastore.close()

        return asyncio.run(go())

    def sync(self) -> SyncReport:
        return self.run(lambda store: Kubelet(self.layout, StorePods(store), self.nodes).sync())

    def apply(self, *docs: dict[str, Any]) -> None:
        self.run(lambda store: store.apply(list(docs)))

    def delete(self, *names: str) -> None:
        self.run(lambda store: store.delete([ResourceRef("pod", "x", n) for n in names]))

    def stored(self, name: str) -> dict[str, Any]:
        async def get(store: ResourceStore) -> dict[str, Any]:
            item = await store.get(ResourceRef("pod", "x", name))
            assert item is not None
            return item.body

        return self.run(get)

    def netns(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return sorted(
            line.split()[0] for line in out.splitlines() if line.startswith(self.layout.prefix + "-pod-")
        )

    def links(self, node: str) -> list[str]:
        out = subprocess.run(
            ["ip", "-n", self.layout.node_netns(node), "-o", "link", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@pytest.fixture
def env(etcd_server: Any, tmp_path: Path) -> Iterator[Env]:
    prefix = "vt" + "".join(random.choices(string.ascii_lowercase, k=4))
    layout = LabLayout(prefix)
    environment = Env(layout, etcd_server.settings(), tmp_path)
    try:
        for i, node in enumerate(environment.nodes):
            ns = layout.node_netns(node.name)
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            plugins: list[dict[str, Any]] = [
                {
                    "type": "ptp",
                    "ipam": {
                        "type": "host-local",
                        "subnet": f"10.252.{i}.0/24",
                        "dataDir": str(tmp_path / f"ipam-{node.name}"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]
            if node.name == "n2":
                plugins.append({"type": "vt-no-such-plugin"})  # every ADD on n2 fails at the last plugin
            conf_dir = layout.cni_conf_dir(node.name)
            conf_dir.mkdir(parents=True)
            (conf_dir / "10-vt.conflist").write_text(
                json.dumps({"cniVersion": "1.0.0", "name": "vt", "plugins": plugins})
            )
        yield environment
    finally:
        try:
            kubelet_nodes = environment.all_nodes
            environment.run(
                lambda store: asyncio.to_thread(Kubelet(layout, StorePods(store), kubelet_nodes).stop_all)
            )
        finally:
            for name in environment.netns():
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            for node in environment.all_nodes:
                subprocess.run(["ip", "netns", "del", layout.node_netns(node.name)], capture_output=True)

            async def wipe(store: ResourceStore) -> None:
                items, _ = await store.list("pod", "x")
                await store.delete([item.ref for item in items])

            environment.run(wipe)
            shutil.rmtree(layout.run_dir, ignore_errors=True)


def test_pods_start_talk_and_stop(env: Env) -> None:
    env.apply(
        pod("a", "n1", [(80, "TCP"), (80, "UDP"), (80, "SCTP")]),
        pod("b", "n1", [(80, "TCP"), (80, "UDP"), (80, "SCTP")]),
    )
    report = env.sync()
    assert report.ok, report.failed
    assert report.started == ["x/a", "x/b"]
    body = env.stored("a")
    ip = body["status"]["podIP"]
    assert ip.startswith("10.252.0.")
    assert body["status"]["phase"] == "Running"
    assert body["status"]["hostIP"] == "10.252.0.1"
    assert body["spec"]["nodeName"] == "n1"
    assert len(body["metadata"]["annotations"][ANNOTATION_CONTAINER_ID]) == 64
    assert env.netns() == [env.layout.pod_netns("x", "a"), env.layout.pod_netns("x", "b")]

    pods = [
        ProbeEndpoint(
            f"x/{n}", f"/run/netns/{env.layout.pod_netns('x', n)}", env.stored(n)["status"]["podIP"]
        )
        for n in ("a", "b")
    ]
    for protocol in ("TCP", "UDP", "SCTP"):
        matrix = asyncio.run(probe_matrix(pods, pods, 80, protocol, timeout=1.0)).matrix()
        assert matrix == {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": True, "x/b": True}}, protocol

    # A second sync changes nothing.
    again = env.sync()
    assert again.ok and again.started == [] and again.stopped == []
    assert env.stored("a")["status"]["podIP"] == ip

    env.delete("a")
    report = env.sync()
    assert report.stopped == ["x/a"]
    assert env.netns() == [env.layout.pod_netns("x", "b")]
    leases = sorted(p.name for p in (env.tmp / "ipam-n1" / "vt").iterdir() if p.name.startswith("10."))
    assert leases == [env.stored("b")["status"]["podIP"]]  # DEL reached host-local: a's address is free


def test_spread_scheduling_binds_pods_in_the_store(env: Env) -> None:
    env.nodes = env.nodes[:1]  # n2 fails every ADD; spread over n1 only here
    env.apply(pod("a"), pod("b"))
    report = env.sync()
    assert report.ok, report.failed
    assert {env.stored(n)["spec"]["nodeName"] for n in ("a", "b")} == {"n1"}
    assert env.stored("a")["metadata"]["uid"]


def test_a_failing_add_leaves_nothing(env: Env) -> None:
    before = env.links("n2")
    env.apply(pod("c", "n2"))
    report = env.sync()
    assert list(report.failed) == ["x/c"]
    assert "vt-no-such-plugin" in report.failed["x/c"]
    body = env.stored("c")
    assert body["status"]["phase"] == "Pending"
    assert "vt-no-such-plugin" in body["status"]["message"]
    assert "podIP" not in body["status"]
    assert env.netns() == []  # the pod's namespace is gone
    assert env.links("n2") == before  # ptp's host veth was removed by the rollback DEL
    ipam = env.tmp / "ipam-n2" / "vt"
    assert not [p for p in ipam.iterdir() if p.name.startswith("10.")]  # the address went back
    assert not list(env.layout.node_dir("n2").joinpath("pods").glob("*.json"))


@pytest.fixture
def lab_api(env: Env) -> Iterator[KubeApi]:
    """The lab's Kubernetes API over the same etcd (under a root of this test's), with the lab's CRDs, its
    kubeconfig where the lab writes it: what `vpcnet apply/get/delete` and `lab probe` talk to."""
    from vpcnet.datastore.open import open_kube_store
    from vpcnet.lab.labapi import crd_documents

    env.layout.run_dir.mkdir(parents=True, exist_ok=True)
    root = f"/{env.layout.prefix}/registry"
    with serve_kube_api(env.settings, env.layout.kubeconfig, root=root, bookmark_interval=0.2) as api:

        async def install_crds() -> None:
            store = await open_kube_store(api.kubeconfig)
            try:
                await store.apply(crd_documents())
            finally:
                await store.close()

        asyncio.run(install_crds())
        yield api


MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
    ports: [{containerPort: 80}]
"""


def test_cli_apply_get_delete(
    env: Env, lab_api: KubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from vpcnet.cli.main import app

    monkeypatch.delenv("VPCNET_ETCD_ENDPOINTS", raising=False)
    monkeypatch.delenv("VPCNET_DATASTORE_ENDPOINTS", raising=False)
    env.layout.run_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "nodes": [{"name": n.name, "az": n.az, "primary_ip": n.primary_ip} for n in env.all_nodes[:1]],
        "endpoints": {"etcd_host": env.settings.endpoints[0].target},
    }
    env.layout.state_file.write_text(json.dumps(state))
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(MANIFEST)
    runner = CliRunner()
    prefix = ["--prefix", env.layout.prefix]

    result = runner.invoke(app, ["apply", "-f", str(manifest), *prefix])
    assert result.exit_code == 0, result.output
    assert "namespace/x created" in result.output
    assert "pod/x/a created" in result.output
    assert "pod/x/a started" in result.output
    result = runner.invoke(app, ["apply", "-f", str(manifest), *prefix])
    assert result.exit_code == 0, result.output
    assert "pod/x/a unchanged" in result.output  # the kubelet's status survives a re-apply

    result = runner.invoke(app, ["get", "pod", "x/a", "-o", "json", *prefix])
    ip = json.loads(result.output)["status"]["podIP"]
    assert ip in {r.ip for r in PodRuntime(env.layout).records(["n1"])}  # the kubelet wrote what it made
    result = runner.invoke(app, ["get", "pods", "-n", "x", "-o", "wide", *prefix])
    assert result.exit_code == 0, result.output
    assert ip in result.output and "n1" in result.output and "Running" in result.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("nodeName: n1", "nodeName: n9").replace("name: a,", "name: b,"))
    result = runner.invoke(app, ["apply", "-f", str(bad), *prefix])
    assert result.exit_code == 2
    assert "spec.nodeName: 'n9' is not a lab node" in result.output
    result = runner.invoke(app, ["get", "pod", "x/b", *prefix])
    assert result.exit_code == 1  # nothing of the bad file was stored (not even its namespace change)

    result = runner.invoke(app, ["delete", "pod", "x/a", *prefix])
    assert result.exit_code == 0, result.output
    assert "pod/x/a deleted" in result.output and "pod/x/a stopped" in result.output
    assert env.netns() == []
    result = runner.invoke(app, ["delete", "pod", "x/a", *prefix])
    assert result.exit_code == 1 and "not found" in result.output


DENY_B = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
"""


def test_cli_probe_compare_and_wait(
    env: Env, lab_api: KubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from vpcnet.cli.main import app
    from vpcnet.lab.converge import write_status

    monkeypatch.delenv("VPCNET_ETCD_ENDPOINTS", raising=False)
    monkeypatch.delenv("VPCNET_DATASTORE_ENDPOINTS", raising=False)
    env.layout.run_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "nodes": [{"name": "n1", "az": "az1", "primary_ip": "10.252.0.1"}],
        "endpoints": {"etcd_host": env.settings.endpoints[0].target},
        "datastore": "kubernetes",
    }
    env.layout.state_file.write_text(json.dumps(state))
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(
        MANIFEST
        + "---\n"
        + MANIFEST.split("---")[1].replace("name: a,", "name: b,").replace("pod: a", "pod: b")
    )
    runner = CliRunner()
    prefix = ["--prefix", env.layout.prefix]
    result = runner.invoke(app, ["apply", "-f", str(manifest), *prefix])
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["lab", "probe", "--port", "80", "--protocol", "TCP", *prefix])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": True, "x/b": True}}
    result = runner.invoke(app, ["lab", "probe", "--port", "81", "--compare", *prefix])
    assert result.exit_code == 0, result.output  # nobody serves 81, and the engine expects just that

    # A policy no agent enforces here: the kernel still lets everything to b through, and --compare says so.
    policy = tmp_path / "deny.yaml"
    policy.write_text(DENY_B)
    result = runner.invoke(app, ["lab", "probe", "--compare", "-f", str(policy), "-o", "table", *prefix])
    assert result.exit_code == 1, result.output
    assert "x/a -> x/b: kernel allows, policy engine says block" in result.output
    assert "x/b -> x/b" not in result.output  # the diagonal is ignored by default, as upstream does
    assert "1 disagreement(s)" in result.output
    result = runner.invoke(app, ["lab", "probe", "--compare", "-f", str(policy), "--count-loopback", *prefix])
    assert result.exit_code == 1, result.output
    pairs = {(d["from"], d["to"]) for d in json.loads(result.output)["disagreements"]}
    assert pairs == {("x/a", "x/b"), ("x/b", "x/b")}

    result = runner.invoke(app, ["lab", "wait", "--timeout", "0.2", *prefix])
    assert result.exit_code == 1 and "node n1" in result.output
    write_status(env.layout, "n1", 10**9)
    result = runner.invoke(app, ["lab", "wait", "--timeout", "5", *prefix])
    assert result.exit_code == 0, result.output


def test_concurrent_syncs_do_not_undo_each_other(env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env.nodes = env.nodes[:1]
    env.apply(*(pod(f"p{i}", "n1") for i in range(4)))
    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(lambda _: env.sync(), range(3)))
    assert all(r.ok for r in reports), [r.failed for r in reports]
    assert sorted(ref for r in reports for ref in r.started) == [f"x/p{i}" for i in range(4)]
    assert len(env.netns()) == 4


def test_stop_all_stops_the_pod_server_even_when_its_socket_is_gone(env: Env) -> None:
    from vpcnet.lab import procs

    env.nodes = env.nodes[:1]
    env.apply(pod("a", "n1"))
    assert env.sync().ok
    pid_file = env.layout.node_dir("n1") / "podserver.pid"
    socket_path = env.layout.node_dir("n1") / "podserver.sock"
    pid = procs.read_pid(pid_file, str(socket_path))
    assert pid is not None
    socket_path.unlink()  # it can no longer be asked to shut down
    report = env.run(
        lambda store: asyncio.to_thread(Kubelet(env.layout, StorePods(store), env.nodes).stop_all)
    )
    assert report.stopped == ["x/a"]
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
