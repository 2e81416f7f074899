"""kubectl drives the lab end to end: `lab up` writes a kubeconfig; `kubectl apply` of pods and a
NetworkPolicy -> the lab kubelet (watching the API) starts the pods and writes their status ->
kube-controllers mirrors the objects into etcd -> the node agents enforce the policy, which real packets
show; `kubectl delete` tears a pod down on its node. The official Python client lists pods and nodes.

Runs on both datastores: kubernetes (the agents watch the API) and etcd (kube-controllers mirrors the API
into etcd, which the agents read). Also measures policy-to-enforcement time (`kubectl apply` of a deny, until
a probe sees it dropped), p50/p99 over 10 trials, in each mode."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_fixture import LabCli, pod_doc, running_lab

from vpcnet.lab.kubectl import find_kubectl

pytestmark = pytest.mark.root

KUBECTL = find_kubectl()
if KUBECTL is None:
    pytest.skip("needs kubectl (Debian's kubernetes-client)", allow_module_level=True)

PLACEMENT = {"a": "node1", "b": "node2", "c": None}  # c: scheduled by the lab kubelet
DENY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b, namespace: kx}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, tmp: Path) -> None:
        self.kubeconfig = kubeconfig
        self.tmp = tmp

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        assert KUBECTL is not None
        argv = [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.tmp / "cache"), *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def json(self, *args: str) -> dict[str, object]:
        doc = json.loads(self("get", *args, "-o", "json"))
        assert isinstance(doc, dict)
        return doc


def manifest() -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: kx}\n"]
    for pod, node in PLACEMENT.items():
        doc = pod_doc(pod, node or "", "kx")
        docs.append(doc.replace("  nodeName: \n", "") if node is None else doc)
    return "---\n".join(docs)


def until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module", params=["kubernetes", "etcd"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LabCli, Kubectl]]:
    with running_lab(nodes=3, azs=2, agents=True, datastore=request.param) as lab:
        tmp = tmp_path_factory.mktemp("kubectl")
        kubeconfig = Path(lab.status()["kubeconfig"])
        assert kubeconfig == lab.layout.kubeconfig and kubeconfig.exists()
        yield LabCli(lab, tmp), Kubectl(kubeconfig, tmp)


def pods_running(kubectl: Kubectl) -> bool:
    items = kubectl.json("pods", "-n", "kx")["items"]
    assert isinstance(items, list)
    return len(items) == len(PLACEMENT) and all(
        i["status"].get("phase") == "Running" and i["status"].get("podIP") for i in items
    )


def reachable(cli: LabCli, src: str, dst_ip: str) -> bool:
    """A TCP connection from pod src to dst_ip:80 (the lab's pod server answers there)."""
    import socket

    from vpcnet.lab.podserver import in_netns

    with in_netns(f"/run/netns/{cli.lab.layout.pod_netns('kx', src)}"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(0.5)
        try:
            sock.connect((dst_ip, 80))
        except OSError:
            return False
        return True


def test_kubectl_drives_the_lab(cluster: tuple[LabCli, Kubectl]) -> None:
    cli, kubectl = cluster
    # Nodes, as a cloud kubelet registers them.
    nodes = kubectl("get", "nodes", "-o", "wide")
    for n in cli.lab.info.nodes:
        assert n.name in nodes and n.primary_ip in nodes, nodes
    node = kubectl.json("node", "node1")
    labels = node["metadata"]["labels"]  # type: ignore[index]
    assert labels["topology.kubernetes.io/zone"] == cli.lab.node("node1").az
    assert labels["node.kubernetes.io/instance-type"] == "t3.medium"

    out = kubectl("apply", "-f", "-", stdin=manifest())
    assert "pod/a created" in out, out
    until(lambda: pods_running(kubectl), "pods Running with IPs")
    wide = kubectl("get", "pods", "-n", "kx", "-o", "wide")
    pods = {i["metadata"]["name"]: i for i in kubectl.json("pods", "-n", "kx")["items"]}  # type: ignore[union-attr]
    for name, pod in pods.items():
        status = pod["status"]
        assert status["podIPs"] == [{"ip": status["podIP"]}] and status["podIP"] in wide, wide
        assert {c["type"] for c in status["conditions"] if c["status"] == "True"} >= {"Ready", "PodScheduled"}
        assert PLACEMENT[name] in (None, pod["spec"]["nodeName"])
    assert pods["c"]["spec"]["nodeName"] in cli.lab.node_names  # bound by the lab's scheduler
    # A second apply changes nothing (client-side apply: a strategic merge patch with no change).
    assert "unchanged" in kubectl("apply", "-f", "-", stdin=manifest())

    b_ip = pods["b"]["status"]["podIP"]
    cli.cli("lab", "wait", "--timeout", "60")
    assert reachable(cli, "a", b_ip)
    kubectl("apply", "-f", "-", stdin=DENY)
    assert "deny-b" in kubectl("get", "networkpolicies", "-n", "kx")
    until(lambda: not reachable(cli, "a", b_ip), "the deny enforced")
    kubectl("delete", "networkpolicy", "-n", "kx", "deny-b")
    until(lambda: reachable(cli, "a", b_ip), "the deny lifted")

    # The official Python client sees the same lab.
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kubectl.kubeconfig)))
    assert {p.metadata.name for p in api.list_namespaced_pod("kx").items} == set(PLACEMENT)
    assert {n.metadata.name for n in api.list_node().items} == set(cli.lab.node_names)

    # kubectl delete tears the pod down on its node.
    kubectl("delete", "pod", "-n", "kx", "c")
    netns = cli.lab.layout.pod_netns("kx", "c")
    until(lambda: not Path(f"/run/netns/{netns}").exists(), "pod c's namespace removed")
    assert "kx/c" not in cli.cli("lab", "pods")


def test_policy_to_enforcement_time_by_kubectl(cluster: tuple[LabCli, Kubectl]) -> None:
    cli, kubectl = cluster
    until(lambda: pods_running(kubectl) or len(kubectl.json("pods", "-n", "kx")["items"]) >= 2, "pods")  # type: ignore[arg-type]
    pods = {i["metadata"]["name"]: i for i in kubectl.json("pods", "-n", "kx")["items"]}  # type: ignore[union-attr]
    b_ip = pods["b"]["status"]["podIP"]
    cli.cli("lab", "wait", "--timeout", "60")
    path = cli.lab.info.datastore
    # The whole time, and its first part: kubectl's own run (start-up, discovery, the write), so that what
    # the datastore path adds after the write can be told apart from kubectl under load.
    times: dict[str, list[float]] = {path: [], "kubectl": []}
    for trial in range(10):
        until(lambda: reachable(cli, "a", b_ip), "reachable before the trial")
        start = time.monotonic()
        kubectl("apply", "-f", "-", stdin=DENY)
        times["kubectl"].append(time.monotonic() - start)
        until(lambda: not reachable(cli, "a", b_ip), f"deny enforced ({path}, trial {trial})", 30)
        times[path].append(time.monotonic() - start)
        kubectl("delete", "networkpolicy", "-n", "kx", "deny-b")
    report = {}
    for what, samples in times.items():
        samples.sort()
        p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
        report[what] = {"p50": round(statistics.median(samples), 3), "p99": round(p99, 3), "n": len(samples)}
    print("policy-to-enforcement seconds:", json.dumps(report), f"load {os.getloadavg()[0]:.1f}")
    # In etcd mode the mirror adds a hop; both stay within the same budget (the probe's timeout dominates).
    assert report[path]["p99"] < 10.0
