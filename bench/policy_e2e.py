"""Benchmark: policy change end to end, from the write to the datastore to the rules in every node's kernel.

A lab with several nodes and their agents (`vpcnet lab up`). The cluster lives in the datastore only: N pods
per node (Pod objects with IPs and labels, spec.nodeName a lab node; no containers, no veths: the agents
render their rules all the same) in 100 namespaces, and 1,000 NetworkPolicies (10 per namespace, each
selecting one app and allowing one role on one port). Each node holds pods of apps 0-3 in every namespace,
so every node enforces policies of every namespace.

A change: a new Pod (on no lab node) with a role a policy allows, so its IP enters a set on every node; then
its deletion. For each change, from just before the etcd write until:
  - kernel: the IP is in (or gone from) every node's sets, read in the node's namespace (`ipset save` or
    `nft list sets`) in a loop per node; the time is the end of the first dump that shows it (an upper
    bound: a dump takes a few ms, printed);
  - agent: every node's agent reports an applied revision >= the write's (its policy-status.json).
Each run measures CHANGES changes; RUNS runs back to back, p50/p99 per run. The agents' own
calculation + render + kernel time per apply (last_apply_seconds) is read with each status, so the
rest of the agent-status time is the datastore's fan-out (etcd watch) and the agent's batching.

Two datastores (--via): "etcd", a lab whose agents read etcd and every write goes straight into etcd; "api",
a lab on the Kubernetes datastore (as on EKS): the agents watch the lab's Kubernetes API, and the cluster and
every change are written through that API. In the API lab the lab kubelet is stopped first: the Pod
objects are only objects (their nodes' kubelet would otherwise try to run 1,200 containers).

Root. Uses a lab with a random prefix ("vb" + 4 letters), removed at the end.
Usage: python bench/policy_e2e.py [--nodes 3] [--pods 400] [--backends iptables,nftables] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import secrets
import string
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.datastore.open import open_datastore
from vpcnet.datastore.resources import ResourceRef, ResourceStore, ref_of
from vpcnet.lab import labctl
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.topology import build_topology

NAMESPACES = 100
POLICIES_PER_NS = 10
LOCAL_APPS = 4  # apps every node has pods of, in every namespace
BATCH = 100  # documents per etcd transaction (etcd's default limit is 128 operations)


def pod_doc(name: str, ns: str, node: str, ip: str, app: int, role: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": f"a{app}", "role": f"r{role}"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def policy_doc(ns: str, k: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"p{k}", "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"a{k}"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": f"r{k}"}}}], "ports": [{"port": 8000 + k}]}
            ],
        },
    }


def ip_of(index: int) -> str:
    return f"10.{200 + index // 65536}.{(index // 256) % 256}.{index % 256}"


def cluster(nodes: list[str], per_node: int) -> list[dict[str, Any]]:
    rng = random.Random(17)
    docs = [policy_doc(f"ns{n}", k) for n in range(NAMESPACES) for k in range(POLICIES_PER_NS)]
    index = 0
    for node in nodes:
        for j in range(per_node):
            ns = f"ns{(j // LOCAL_APPS) % NAMESPACES}"
            app = j % LOCAL_APPS
            docs.append(pod_doc(f"{node}-p{j}", ns, node, ip_of(index), app, rng.randrange(10)))
            index += 1
    return docs


class ApiWriter:
    """Writes to the lab's Kubernetes API over plain HTTP (no client library: its start-up and machinery stay
    out of the measurement). A Pod is created, then given its IP through /status, as a kubelet does (the
    API resets the status on create)."""

    def __init__(self, kubeconfig: Path) -> None:
        from vpcnet.lab.kubeapi.kubeconfig import server_url

        url = urllib.parse.urlsplit(server_url(kubeconfig))
        self.conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = ()
    ) -> None:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        answer = self.conn.getresponse()
        text = answer.read()
        if answer.status >= 300 and answer.status not in ok:
            raise RuntimeError(f"{method} {path}: {answer.status} {text[:300]!r}")

    def put(self, doc: dict[str, Any], with_status: bool = True) -> None:
        ns = doc["metadata"]["namespace"]
        if doc["kind"] == "NetworkPolicy":
            self.request("POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", doc)
            return
        self.request("POST", f"/api/v1/namespaces/{ns}/pods", doc)
        if with_status:
            self.set_status(doc)

    def set_status(self, doc: dict[str, Any]) -> None:
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        self.request("PUT", f"/api/v1/namespaces/{ns}/pods/{name}/status", doc)

    def delete_pod(self, doc: dict[str, Any]) -> None:
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        self.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}")

    def namespaces(self, count: int) -> None:
        for n in range(count):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{n}"}}
            self.request("POST", "/api/v1/namespaces", body, ok=(409,))

    def load(self, docs: list[dict[str, Any]]) -> None:
        self.namespaces(NAMESPACES)
        for doc in docs:
            self.put(doc)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class NodeWatch:
    """One node's kernel sets and agent status, polled in a thread of its own. nftables: the kernel's own
    notifications (`nft monitor`, one line per committed set change, read as it comes); iptables: `ipset
    save` in a loop (ipset has no monitor), so a time there includes up to one dump."""

    def __init__(self, layout: LabLayout, node: str, backend: str) -> None:
        self.netns = layout.node_netns(node)
        self.status_path = layout.agent_socket(node).parent / "policy-status.json"
        self.argv = ["ip", "netns", "exec", self.netns, "ipset", "save"]
        self.dump_ms: list[float] = []
        self.monitor: subprocess.Popen[str] | None = None
        self.events: dict[tuple[str, bool], list[float]] = {}  # (ip, added) -> when the kernel said so
        self.lock = threading.Lock()
        if backend == "nftables":
            # stdbuf: nft's stdout is a pipe here, block-buffered unless told otherwise
            argv = ["ip", "netns", "exec", self.netns, "stdbuf", "-oL", "nft", "monitor", "elements"]
            self.monitor = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read_monitor, daemon=True).start()

    def _read_monitor(self) -> None:
        assert self.monitor is not None and self.monitor.stdout is not None
        for line in self.monitor.stdout:
            now = time.perf_counter()
            verb = line.split(" ", 1)[0]
            if verb not in ("add", "delete"):
                continue
            with self.lock:
                for ip in re.findall(r"(?<![0-9.])\d+\.\d+\.\d+\.\d+(?![0-9.])", line):
                    self.events.setdefault((ip, verb == "add"), []).append(now)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.terminate()
            self.monitor.wait(10)

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (OSError, ValueError):
            return {}

    def kernel_has(self, ip: str) -> tuple[bool, float]:
        out = subprocess.run(self.argv, capture_output=True, text=True, check=True).stdout
        return re.search(re.escape(ip) + r"(?![0-9])", out) is not None, time.perf_counter()

    def wait_kernel(self, ip: str, present: bool, start: float, out: list[float]) -> None:
        if self.monitor is not None:
            self._wait_monitor(ip, present, start, out)
            return
        while True:
            begin = time.perf_counter()
            has, end = self.kernel_has(ip)
            self.dump_ms.append((end - begin) * 1000)
            if has == present:
                out.append((end - start) * 1000)
                return
            if end - start > 60:
                raise RuntimeError(f"{self.netns}: {ip} {'never appeared' if present else 'never left'}")

    def _wait_monitor(self, ip: str, present: bool, start: float, out: list[float]) -> None:
        while True:
            with self.lock:
                after = [t for t in self.events.get((ip, present), []) if t >= start]
            if after:
                out.append((min(after) - start) * 1000)
                return
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"{self.netns}: {ip} {'never appeared' if present else 'never left'}")
            time.sleep(0.001)

    def wait_agent(self, revision: int, start: float, out: list[float], apply_s: list[float]) -> None:
        while True:
            status = self.status()
            if int(status.get("revision", 0)) >= revision:
                out.append((time.perf_counter() - start) * 1000)
                apply_s.append(float(status.get("last_apply_seconds", 0.0)))
                return
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"{self.netns}: the agent never applied revision {revision}")
            time.sleep(0.001)


async def write(store: ResourceStore, doc: dict[str, Any] | None, ref: ResourceRef | None) -> int:
    if doc is not None:
        return (await store.apply([doc])).revision
    assert ref is not None
    await store.delete([ref])
    return await store.datastore.current_revision()


def measure(
    layout: LabLayout, nodes: list[str], backend: str, per_node: int, runs: int, changes: int, via: str
) -> dict[str, Any]:
    """via "etcd": the cluster and the changes written straight into etcd (what the agents read); via "api":
    all through the Kubernetes API the agents watch (only the kernel times count there: a change's revision
    is not known before the kernel shows it)."""
    watches = [NodeWatch(layout, node, backend) for node in nodes]
    api = ApiWriter(layout.kubeconfig) if via == "api" else None

    async def go() -> dict[str, Any]:
        datastore = await open_datastore(_settings(layout))
        store = ResourceStore(datastore)
        try:
            docs = cluster(nodes, per_node)
            started = time.perf_counter()
            if api is not None:
                await asyncio.to_thread(api.load, docs)
                # the API's resourceVersions are etcd revisions: the last write's is etcd's current one
                revision = await datastore.current_revision()
            else:
                for i in range(0, len(docs), BATCH):
                    revision = (await store.apply(docs[i : i + BATCH])).revision
            loaded = time.perf_counter()
            for w in watches:  # every agent has the whole cluster in its kernel
                await asyncio.to_thread(w.wait_agent, revision, started, [], [])
                if w.status().get("endpoints") != per_node:
                    raise RuntimeError(f"{w.netns}: {w.status().get('endpoints')} endpoints, not {per_node}")
            print(
                f"  {backend}: {len(docs)} objects written in {loaded - started:.1f} s, all agents applied "
                f"after {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            result: dict[str, Any] = {"runs": []}
            serial = 0
            for _ in range(runs):
                kernel: list[float] = []
                agent: list[float] = []
                apply_s: list[float] = []
                writes: list[float] = []
                for _ in range(changes // 2):
                    serial += 1
                    ip = ip_of(1_000_000 + serial)
                    k = serial % LOCAL_APPS
                    ns = (
                        f"ns{serial % min(NAMESPACES, max(1, per_node // LOCAL_APPS))}"  # one of every node's
                    )
                    doc = pod_doc(f"new{serial}", ns, "elsewhere", ip, 9, k)
                    ref = ref_of(doc)
                    if api is not None:
                        api.put(doc, with_status=False)  # created without an IP: nothing to enforce yet
                    for present in (True, False):
                        per_kernel: list[float] = []
                        per_agent: list[float] = []
                        start = time.perf_counter()
                        if api is not None:
                            await asyncio.to_thread(api.set_status if present else api.delete_pod, doc)
                        else:
                            rev = await write(store, doc if present else None, None if present else ref)
                        writes.append((time.perf_counter() - start) * 1000)
                        threads = [
                            threading.Thread(target=w.wait_kernel, args=(ip, present, start, per_kernel))
                            for w in watches
                        ]
                        if api is None:
                            threads += [
                                threading.Thread(target=w.wait_agent, args=(rev, start, per_agent, apply_s))
                                for w in watches
                            ]
                        for t in threads:
                            t.start()
                        for t in threads:
                            await asyncio.to_thread(t.join)
                        if len(per_kernel) != len(watches) or len(per_agent) != (0 if api else len(watches)):
                            raise RuntimeError("a node did not converge (see the thread's error above)")
                        kernel.append(max(per_kernel))  # every node's kernel
                        agent.append(max(per_agent, default=0.0))
                apply_ms = [s * 1000 for s in apply_s]
                result["runs"].append(
                    {"kernel": kernel, "agent": agent, "apply_ms": apply_ms, "write_ms": writes}
                )
            return result
        finally:
            await datastore.close()

    try:
        out = asyncio.run(go())
    finally:
        for w in watches:
            w.close()
    out["dump_ms"] = [ms for w in watches for ms in w.dump_ms]
    return out


def stop_kubelet(layout: LabLayout) -> None:
    """The lab kubelet would run the benchmark's Pod objects; stopped, they stay objects (`lab down` takes a
    stopped control process in its stride)."""
    from vpcnet.lab import procs

    name = "kubelet"
    if not procs.stop(labctl.control_pid_file(layout, name), labctl.control_marker(layout, name)):
        raise RuntimeError("the lab kubelet did not stop")


def _settings(layout: LabLayout) -> Any:
    from vpcnet.cli.resources import datastore_settings

    return datastore_settings(layout)


def report(res: dict[str, Any], backend: str, per_node: int, nodes: int, via: str, figs: Figures) -> None:
    worst_kernel = worst_agent = 0.0
    for i, run in enumerate(res["runs"]):
        k99 = percentile(run["kernel"], 0.99)
        worst_kernel = max(worst_kernel, k99)
        line = (
            f"  {backend} {per_node} pods/node via {via} run {i + 1}: kernel p50 "
            f"{percentile(run['kernel'], 0.5):6.1f} p99 {k99:6.1f} ms | write p50 "
            f"{percentile(run['write_ms'], 0.5):5.1f} ms"
        )
        if via == "etcd":
            a99 = percentile(run["agent"], 0.99)
            worst_agent = max(worst_agent, a99)
            # The agent-status time less the datastore write and the slowest agent's apply: the watch's
            # fan-out, the agent's event handling (parse, feed the calculation) and the status write.
            applies = [max(run["apply_ms"][j : j + nodes]) for j in range(0, len(run["apply_ms"]), nodes)]
            rest = [a - w - b for a, w, b in zip(run["agent"], run["write_ms"], applies, strict=True)]
            line += (
                f" | agent status p50 {percentile(run['agent'], 0.5):6.1f} p99 {a99:6.1f} ms | agent apply "
                f"p50 {percentile(run['apply_ms'], 0.5):6.1f} ms | rest (fan-out, event handling) p50 "
                f"{percentile(rest, 0.5):6.1f} ms"
            )
        print(line, flush=True)
    if res["dump_ms"]:
        print(f"  kernel dump per poll p50 {percentile(res['dump_ms'], 0.5):.1f} ms", flush=True)
    else:
        print("  kernel: nft monitor events (no dumps)", flush=True)
    tag = "" if via == "etcd" else "api."
    figs.add(f"policy.e2e.{tag}{backend}.p99_ms.{per_node}pods", worst_kernel)
    if via == "etcd":
        figs.add(f"policy.e2e.{backend}.agent_p99_ms.{per_node}pods", worst_agent)
        all_apply = [ms for run in res["runs"] for ms in run["apply_ms"]]
        all_agent = [ms for run in res["runs"] for ms in run["agent"]]
        share = percentile(all_apply, 0.5) / percentile(all_agent, 0.5)
        figs.add(f"policy.e2e.{backend}.apply_share.{per_node}pods", share)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--pods", type=str, default="400,1000", help="pods per node, comma-separated")
    parser.add_argument("--backends", default="iptables,nftables")
    parser.add_argument("--via", default="etcd,api", help="where changes are written: etcd, api or both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--changes", type=int, default=20, help="changes per run (half adds, half deletes)")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab)", file=sys.stderr)
        return 2
    figs = Figures()
    print(
        f"policy end to end: {opts.nodes} nodes, {NAMESPACES * POLICIES_PER_NS} policies, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for per_node in (int(p) for p in opts.pods.split(",")):
        for backend in opts.backends.split(","):
            for via in opts.via.split(","):
                if via == "api" and per_node != 400:
                    continue  # the API path once, at the headline size (its bulk load takes a while)
                layout = LabLayout("vb" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4)))
                try:
                    info = labctl.up(
                        build_topology(nodes=opts.nodes, azs=2),
                        layout,
                        agents=True,
                        agent_settings={"VPCNET_POLICY_BACKEND": backend},
                        datastore="kubernetes" if via == "api" else "etcd",
                    ).info
                    if via == "api":
                        stop_kubelet(layout)
                    nodes = [n.name for n in info.nodes]
                    res = measure(layout, nodes, backend, per_node, opts.runs, opts.changes, via)
                finally:
                    labctl.down(layout)
                report(res, backend, per_node, len(nodes), via, figs)
    figs.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
