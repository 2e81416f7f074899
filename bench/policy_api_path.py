"""Benchmark: a NetworkPolicy written to the lab's Kubernetes API, until every node's agent has applied it,
on each datastore; no kubectl and no traffic probe, so what the datastore path adds can be seen alone.

A lab of 3 nodes (`vpcnet lab up`, agents on), one real pod per node (created through the API, started by the
lab kubelet), then CHANGES NetworkPolicies selecting those pods, created one at a time with a plain HTTP POST.
For each: the time until an independent watch on the API's networkpolicies sees it (the API's own fan-out),
and until every node's `policy-status.json` shows it applied. Over the Kubernetes datastore the agent's
revision is the API's resourceVersion (the etcd revision under both), so "applied" is revision >= the write's;
over etcd the agents read kube-controllers' mirror, whose revisions are its own, so "applied" is the first
revision change after the write (the lab is otherwise quiet: nothing else is written meanwhile, though a
status update of a lab object would count; the figure is then a lower bound).

Root. Labs named "vb" + 4 letters, removed at the end.
Usage: python bench/policy_api_path.py [--changes 20] [--datastores kubernetes,etcd]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import string
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.lab import labctl
from vpcnet.lab.kubeapi.kubeconfig import server_url
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.topology import build_topology

NAMESPACE = "bpath"
POLICIES = "/apis/networking.k8s.io/v1"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Api:
    """Plain HTTP to the lab's API (a client library's start-up stays out of the measurement)."""

    def __init__(self, kubeconfig: Path) -> None:
        url = urllib.parse.urlsplit(server_url(kubeconfig))
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        answer = self.conn.getresponse()
        text = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {text[:300]!r}")
        return dict(json.loads(text or b"{}"))

    def watch_policies(self, seen: dict[str, float]) -> None:
        """resourceVersion -> when this watch received it, until the stream ends (a daemon thread)."""
        conn = http.client.HTTPConnection(self.host, self.port)
        conn.request(
            "GET", f"{POLICIES}/networkpolicies?watch=true&allowWatchBookmarks=true&timeoutSeconds=900"
        )
        answer = conn.getresponse()
        while line := answer.readline():
            event = json.loads(line)
            if event["type"] != "BOOKMARK":
                seen[event["object"]["metadata"]["resourceVersion"]] = time.perf_counter()


def applied(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("revision", 0))
    except (OSError, ValueError):
        return 0


def measure(layout: LabLayout, nodes: list[str], datastore: str, changes: int) -> dict[str, list[float]]:
    api = Api(layout.kubeconfig)
    seen: dict[str, float] = {}
    threading.Thread(target=api.watch_policies, args=(seen,), daemon=True).start()
    api.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    for node in nodes:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"x-{node}", "namespace": NAMESPACE, "labels": {"app": "x"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        }
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    deadline = time.monotonic() + 120
    while not all(
        (item.get("status") or {}).get("podIP")
        for item in api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the pods got no IPs in 120 s")
        time.sleep(0.2)
    statuses = [layout.agent_socket(node).parent / "policy-status.json" for node in nodes]
    out: dict[str, list[float]] = {"write": [], "watch": [], "agents": []}
    for i in range(changes):
        time.sleep(0.3)  # let the previous change settle everywhere
        before = [applied(p) for p in statuses]
        doc = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"d{i}", "namespace": NAMESPACE},
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]},
        }
        start = time.perf_counter()
        rv = int(
            api.request("POST", f"{POLICIES}/namespaces/{NAMESPACE}/networkpolicies", doc)["metadata"][
                "resourceVersion"
            ]
        )
        out["write"].append((time.perf_counter() - start) * 1000)
        pending = set(range(len(statuses)))
        while pending:
            for j in list(pending):
                now = applied(statuses[j])
                if (now >= rv) if datastore == "kubernetes" else now > before[j]:
                    pending.discard(j)
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"change {i}: nodes {sorted(pending)} never applied it")
            time.sleep(0.002)
        out["agents"].append((time.perf_counter() - start) * 1000)
        if str(rv) in seen:
            out["watch"].append((seen[str(rv)] - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--datastores", default="kubernetes,etcd")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab)", file=sys.stderr)
        return 2
    figs = Figures()
    print(
        f"policy through the API, 3 nodes, {opts.changes} changes, load {os.getloadavg()[0]:.1f}", flush=True
    )
    for datastore in opts.datastores.split(","):
        layout = LabLayout("vb" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4)))
        try:
            info = labctl.up(build_topology(nodes=3, azs=2), layout, agents=True, datastore=datastore).info
            res = measure(layout, [n.name for n in info.nodes], datastore, opts.changes)
        finally:
            labctl.down(layout)
        for what, samples in res.items():
            if samples:
                print(
                    f"  {datastore}: {what:<6} p50 {percentile(samples, 0.5):7.1f} ms  "
                    f"p99 {percentile(samples, 0.99):7.1f} ms  (n {len(samples)})",
                    flush=True,
                )
        figs.add(f"policy.api_path.{datastore}.agents_p50_ms", percentile(res["agents"], 0.5))
        figs.add(f"policy.api_path.{datastore}.agents_p99_ms", percentile(res["agents"], 0.99))
    print(f"load at the end {os.getloadavg()[0]:.1f}", flush=True)
    figs.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
