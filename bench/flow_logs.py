"""Benchmark: the flow log under a flood of denied packets, and what it costs the agent's other work.

One node namespace with two pods (veths named as the CNI names them); pod b's ingress denies UDP from
everyone by a rule. A sender process in pod a sends RATE denied datagrams per second (source ports cycling
over 1,000, so the window holds many flows) for SECONDS. Meanwhile, on the same asyncio loop that reads
NFLOG and aggregates flows (as in the agent), a policy change is applied to the kernel every 0.2 s, and its
latency recorded. The same is run with flow logs off (no NFLOG rules, no reader) as the reference.

Figures: flow_log_policy_p99_ratio_on_vs_off (p99 apply latency during the flood, flow logs on / off),
flow_log_rss_growth_mb (the process's RSS after the flood minus before it, flow logs on),
flow_log_seen_fraction (packets the flow log counted / packets sent; the rest the kernel dropped for us).

Runs as root in namespaces of its own ("vb" + 4 random letters), removed at the end; traffic stays in them.
Usage: python bench/flow_logs.py [--rate 10000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import string
import subprocess
import sys
import time
from pathlib import Path

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.agent.flow_logs import FlowLog
from vpcnet.api import load_documents
from vpcnet.dataplane.calc.feed import delete_resource, feed_resource, ref_of
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.names import host_veth_name
from vpcnet.dataplane.nflog_socket import NflogSocket
from vpcnet.dataplane.policy_backend import make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.dataplane.policy_state import FlowLogSpec

NS = "bench"
DENY = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-no-udp, namespace: bench}
spec:
  selector: app == 'b'
  types: [Ingress]
  ingress: [{action: Deny, protocol: UDP}, {action: Allow}]
"""
CHURN = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: churn, namespace: bench}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{ports: [{port: %d}]}]
"""
SENDER = """
import socket, sys, time
rate, seconds, dst = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
socks = []
for port in range(30000, 31000):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", port)); socks.append(s)
sent, start = 0, time.monotonic()
while (now := time.monotonic() - start) < seconds:
    due = int(now * rate)
    while sent < due:
        socks[sent % 1000].sendto(b"x" * 32, (dst, 9)); sent += 1
    time.sleep(0.001)
print(sent)
"""


def sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Node:
    def __init__(self) -> None:
        self.tag = "vb" + "".join(random.choices(string.ascii_lowercase, k=4))
        self.netns = f"{self.tag}-node"
        self.pods: dict[str, tuple[str, str, str]] = {}  # name -> (netns, ip, veth)

    def up(self) -> None:
        sh("ip", "netns", "add", self.netns)
        sh("ip", "-n", self.netns, "-batch", "-", stdin="link set lo up\naddr add 10.78.255.1/32 dev lo\n")
        sh("ip", "netns", "exec", self.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, name in enumerate(("a", "b")):
            netns, ip, veth = f"{self.tag}-{name}", f"10.78.0.{i + 2}", host_veth_name("eni", NS, name)
            sh("ip", "netns", "add", netns)
            sh(
                "ip",
                "-n",
                self.netns,
                "link",
                "add",
                veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                netns,
            )
            sh("ip", "-n", self.netns, "link", "set", veth, "up")
            sh("ip", "-n", self.netns, "route", "add", f"{ip}/32", "dev", veth)
            mac = sh("ip", "-n", self.netns, "-br", "link", "show", veth).split()[2]
            pod_batch = (
                f"link set lo up\nlink set eth0 up\naddr add {ip}/32 dev eth0\n"
                "route add 169.254.1.1 dev eth0 scope link\nroute add default via 169.254.1.1 dev eth0\n"
                f"neigh add 169.254.1.1 lladdr {mac} dev eth0 nud permanent\n"
            )
            sh("ip", "-n", netns, "-batch", "-", stdin=pod_batch)
            self.pods[name] = (netns, ip, veth)

    def down(self) -> None:
        for netns, _, _ in self.pods.values():
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


def resources(node: Node) -> str:
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n", DENY]
    for name, (_, ip, _) in node.pods.items():
        docs.append(
            f"apiVersion: v1\nkind: Pod\n"
            f"metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}\n"
            f"spec: {{nodeName: n1, containers: [{{name: c, image: x}}]}}\n"
            f"status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
        )
    return "---\n".join(docs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_case(node: Node, flow_logs: bool, rate: int, seconds: float) -> dict[str, float]:
    spec = FlowLogSpec("denied", group=29) if flow_logs else None
    calc = PolicyCalculator("n1", ["eni"], spec)
    for resource in load_documents(resources(node), "bench"):
        feed_resource(calc, resource)
    dataplane = make_dataplane("iptables", SubprocessRunner(node.netns))
    await dataplane.apply(calc.desired())
    flow_log = FlowLog(calc, "n1", sink=None)
    sock: NflogSocket | None = None
    if flow_logs:
        sock = NflogSocket(29, spec.snaplen if spec else 128, netns=f"/run/netns/{node.netns}")
        sock.open()
        sock.start_reading(flow_log.add)
    rss_before = rss_mb()
    sender = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        node.pods["a"][0],
        sys.executable,
        "-c",
        SENDER,
        str(rate),
        str(seconds),
        node.pods["b"][1],
        stdout=subprocess.PIPE,
    )
    latencies: list[float] = []
    records = 0
    churn = None
    next_flush = time.monotonic() + 1.0
    while sender.returncode is None:
        port = 1000 + len(latencies) % 50
        if churn is not None:
            delete_resource(calc, ref_of(churn))
        (churn,) = load_documents(CHURN % port, "churn")
        feed_resource(calc, churn)
        started = time.perf_counter()
        await dataplane.apply(calc.desired())
        latencies.append(time.perf_counter() - started)
        if time.monotonic() >= next_flush:
            records += len(flow_log.flush())
            next_flush += 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sender.wait(), 0.2)
    out, _ = await sender.communicate()
    await asyncio.sleep(0.5)
    records += len(flow_log.flush())
    rss_after = rss_mb()
    lost = sock.lost if sock else 0
    if sock is not None:
        sock.close()
    await dataplane.remove_all()
    return {
        "sent": float(out.decode().strip() or 0),
        "seen": float(flow_log.packets),
        "lost_messages": float(lost),
        "records": float(records),
        "applies": float(len(latencies)),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "rss_growth_mb": rss_after - rss_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    node = Node()
    figs = Figures()
    try:
        node.up()
        off = asyncio.run(run_case(node, False, args.rate, args.seconds))
        on = asyncio.run(run_case(node, True, args.rate, args.seconds))
    finally:
        node.down()
    for name, case in (("off", off), ("on", on)):
        print(
            f"flow logs {name}: sent {case['sent']:.0f} denied packets in {args.seconds:.0f} s; flow log saw"
            f" {case['seen']:.0f} ({case['lost_messages']:.0f} messages lost), {case['records']:.0f} records;"
            f" policy apply p50 {case['p50_ms']:.1f} ms p99 {case['p99_ms']:.1f} ms"
            f" over {case['applies']:.0f} changes; RSS growth {case['rss_growth_mb']:.1f} MB"
        )
    figs.add("flow_log_policy_p99_ratio_on_vs_off", on["p99_ms"] / off["p99_ms"])
    figs.add("flow_log_policy_p99_ms_on", on["p99_ms"])
    figs.add("flow_log_rss_growth_mb", on["rss_growth_mb"])
    figs.add("flow_log_seen_fraction", on["seen"] / on["sent"] if on["sent"] else 0.0)
    figs.print()


if __name__ == "__main__":
    main()
