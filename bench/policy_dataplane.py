"""Benchmark: time from a datastore change to enforcement in the kernel, for the policy data plane.

Cluster: 10,000 pods in 100 namespaces, 1,000 Kubernetes NetworkPolicies (10 per namespace, each selecting
one app and allowing one role on one port); 100 or 400 of the pods on this node. Changes measured (each
REPEAT times): a new pod matching a policy's selector, a label change moving a pod into a selector, and a
new policy selecting local pods. Time = calculation + render + diff + the kernel writes (ipset restore and
iptables-restore, or one nft transaction) until the tool returns, i.e. the rules are in the kernel.

Also: the full resync (re-read the kernel and compare), and, as the reference measured in the same run,
a full rewrite of the whole ruleset through one restore into an empty namespace (what an agent without
diffing sends for every change). Bytes per incremental change vs the full ruleset's bytes.
Anchor: Calico felix p90 ~1.7 s at 400 pods/node (felix#2072). Goal: p99 <= 100 ms.

--families 6 (or 4,6) runs the same with IPv6 pods (ip6tables + inet6 sets, or an ip6 table): the policy
programming time of the IPv6 plane of a node with IPv6 pods, beside IPv4's in the same run.

Runs as root in a network namespace of its own ("vb" + 4 random letters), removed at the end.
Usage: python bench/policy_dataplane.py [--repeat N] [--backends iptables,nftables] [--local 100,400]
       [--families 4,6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import random
import statistics
import string
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.api.core import Pod
from vpcnet.api.loader import parse_resource
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.policy_backend import PolicyDataplane, make_dataplane
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.policy.compile import compile_policy
from vpcnet.policy.model import Policy

CLUSTER_PODS = 10_000
NAMESPACES = 100
POLICIES_PER_NS = 10
APPS = 10
ROLES = 10


def pod(name: str, ns: str, node: str, ip: str, **labels: str) -> Pod:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }
    resource = parse_resource(doc, name)
    assert isinstance(resource, Pod)
    return resource


def policy(name: str, ns: str, app: str, role: str, port: int) -> Policy:
    doc: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": role}}}], "ports": [{"port": port}]}
            ],
        },
    }
    resource = parse_resource(doc, name)
    return compile_policy(resource)  # type: ignore[arg-type]


FAMILY = IpFamily.V4  # the pods' family of the case being run (set by run_case)


def ip_of(index: int) -> str:
    if FAMILY is IpFamily.V6:
        return str(ipaddress.IPv6Address(f"2001:db8:40:{index // 65536:x}::{index % 65536:x}"))
    return f"10.{64 + index // 65536}.{(index // 256) % 256}.{index % 256}"


def build_cluster(calc: PolicyCalculator, local: int) -> list[int]:
    """Feeds the cluster to calc; returns the indices of the pods on this node."""
    # Local pods are spread over the namespaces (a fixed random sample); the rest live on 49 other nodes.
    here = set(random.Random(1).sample(range(CLUSTER_PODS), local))
    for i in range(CLUSTER_PODS):
        ns = f"ns{i % NAMESPACES}"
        node = "n1" if i in here else f"n{2 + i % 49}"
        calc.upsert_pod(
            pod(f"p{i}", ns, node, ip_of(i), app=f"app{(i // NAMESPACES) % APPS}", role=f"r{i % ROLES}")
        )
    for n in range(NAMESPACES):
        for k in range(POLICIES_PER_NS):
            calc.upsert_policy(policy(f"pol{k}", f"ns{n}", f"app{k}", f"r{(k + n) % ROLES}", 8000 + k))
    return sorted(here)


def label_change(here: list[int], i: int) -> Pod:
    """A remote pod of a local pod's namespace gets the role that the policy selecting that local pod
    allows (or, every other time, loses it): the change always moves an address in or out of an ipset."""
    local = here[i % len(here)]
    n, k = local % NAMESPACES, (local // NAMESPACES) % APPS
    victim = n + NAMESPACES * (1 + (i * 13) % (CLUSTER_PODS // NAMESPACES - 1))
    if victim in here:
        victim = (victim + NAMESPACES) % CLUSTER_PODS
    wanted = (k + n) % ROLES
    role = wanted if (i // len(here)) % 2 == 0 else (wanted + 1) % ROLES
    return pod(
        f"p{victim}",
        f"ns{n}",
        f"n{2 + victim % 49}",
        ip_of(victim),
        app=f"app{(victim // NAMESPACES) % APPS}",
        role=f"r{role}",
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_apply(calc: PolicyCalculator, dp: PolicyDataplane) -> tuple[float, int]:
    started = time.perf_counter()
    stats = await dp.apply(calc.desired())
    return time.perf_counter() - started, stats.total


class TimedRunner(SubprocessRunner):
    """Adds up the wall time spent in the kernel tools (iptables-restore, ipset, nft)."""

    tool_seconds = 0.0

    async def run(self, argv: Any, stdin: bytes | None = None) -> Any:
        started = time.perf_counter()
        try:
            return await super().run(argv, stdin)
        finally:
            self.tool_seconds += time.perf_counter() - started


def netns(name: str, add: bool) -> None:
    subprocess.run(["ip", "netns", "add" if add else "del", name], check=add, capture_output=True)


async def run_case(
    backend: str, local: int, repeat: int, tag: str, family: IpFamily = IpFamily.V4
) -> dict[str, Any]:
    global FAMILY
    FAMILY = family
    ns_name = f"{tag}-{backend[:3]}{local}v{family.value}"
    netns(ns_name, True)
    ref_ns = ns_name + "r"
    netns(ref_ns, True)
    try:
        calc = PolicyCalculator("n1", ["eni"], family=family)
        t0 = time.perf_counter()
        here = build_cluster(calc, local)
        calc_setup = time.perf_counter() - t0
        state = calc.desired()
        runner = TimedRunner(ns_name)
        dp = make_dataplane(backend, runner, family)
        initial, initial_bytes = await timed_apply(calc, dp)
        # Reference, same run: the whole ruleset written through one restore into an empty namespace.
        reference = []
        for _ in range(3):
            ref_dp = make_dataplane(backend, SubprocessRunner(ref_ns), family)
            started = time.perf_counter()
            await ref_dp.apply(state)
            reference.append(time.perf_counter() - started)
            await ref_dp.remove_all()
        results: dict[str, list[float]] = {"new pod": [], "label change": [], "new policy": []}
        tools: dict[str, list[float]] = {k: [] for k in results}
        sizes: dict[str, list[int]] = {k: [] for k in results}

        @contextlib.asynccontextmanager
        async def measured(kind: str) -> AsyncIterator[None]:
            """Times the change made in the block, from the calculator update until the kernel has it."""
            before = runner.tool_seconds
            started = time.perf_counter()
            yield
            _, sent = await timed_apply(calc, dp)
            results[kind].append(time.perf_counter() - started)
            tools[kind].append(runner.tool_seconds - before)
            sizes[kind].append(sent)

        next_ip = CLUSTER_PODS
        for i in range(repeat):
            # A new pod (alternately on this node and elsewhere) matching a policy's source selector.
            node = "n1" if i % 2 == 0 else "n7"
            ns = f"ns{i % NAMESPACES}"
            new_pod = pod(
                f"new{i}", ns, node, ip_of(next_ip), app=f"app{i % APPS}", role=f"r{(i + 3) % ROLES}"
            )
            next_ip += 1
            async with measured("new pod"):
                calc.upsert_pod(new_pod)
            # A label change moving an existing remote pod into (or out of) an active selector.
            moved = label_change(here, i)
            async with measured("label change"):
                calc.upsert_pod(moved)
            # A new policy selecting local pods of one app in one namespace.
            async with measured("new policy"):
                calc.upsert_policy(
                    policy(f"extra{i}", f"ns{i % NAMESPACES}", f"app{i % APPS}", f"r{i % ROLES}", 9000 + i)
                )
        # Full resync: re-read the kernel, compare, write nothing.
        resync = []
        for _ in range(3):
            dp.resync()
            seconds, sent = await timed_apply(calc, dp)
            assert sent == 0, "a resync of an unchanged kernel must write nothing"
            resync.append(seconds)
        idle, idle_sent = await timed_apply(calc, dp)
        final = calc.desired()
        return {
            "backend": backend,
            "family": family,
            "local": local,
            "endpoints": len(final.endpoints),
            "active_policies": len({pid for pid, _ in final.policies}),
            "ipsets": len(final.ipsets),
            "calc_setup": calc_setup,
            "initial": initial,
            "initial_bytes": initial_bytes,
            "reference": statistics.median(reference),
            "resync": statistics.median(resync),
            "idle": idle,
            "idle_sent": idle_sent,
            "results": results,
            "tools": tools,
            "sizes": sizes,
        }
    finally:
        netns(ns_name, False)
        netns(ref_ns, False)


def report(case: dict[str, Any], figs: Figures) -> None:
    ms = 1000.0
    print(
        f"\n== {case['backend']}, IPv{case['family'].value}: {case['local']} pods on the node "
        f"({case['endpoints']} endpoints), "
        f"{CLUSTER_PODS} pods / {NAMESPACES * POLICIES_PER_NS} policies in the cluster; "
        f"{case['active_policies']} policies active here, {case['ipsets']} sets"
    )
    print(
        f"   calculation of the initial state: {case['calc_setup']:.2f} s; "
        f"first apply {case['initial'] * ms:.0f} ms, "
        f"{case['initial_bytes'] / 1024:.0f} KiB"
    )
    ref = case["reference"]
    print(
        f"   reference, full rewrite through one restore: {ref * ms:.1f} ms "
        f"({case['initial_bytes'] / 1024:.0f} KiB)"
    )
    print(
        f"   {'change':<13} {'p50 ms':>8} {'p99 ms':>8} {'p99/ref':>8} {'tools p50':>10} "
        f"{'bytes p50':>10} {'bytes/full':>10}"
    )
    for name, values in case["results"].items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        size = statistics.median(case["sizes"][name])
        tools = statistics.median(case["tools"][name])
        print(
            f"   {name:<13} {p50 * ms:8.1f} {p99 * ms:8.1f} {p99 / ref:8.2f} {tools * ms:10.1f} {size:10.0f} "
            f"{size / max(1, case['initial_bytes']):10.4f}"
        )
    print(
        f"   full resync (read back + compare, nothing written): {case['resync'] * ms:.1f} ms "
        f"= {case['resync'] / ref:.2f} x reference"
    )
    print(f"   idle apply: {case['idle'] * 1e6:.0f} us, {case['idle_sent']} bytes sent")
    print("   (tools p50: wall time inside iptables-restore/ipset/nft of that change; the rest is Python)")
    worst = max(percentile(v, 0.99) for v in case["results"].values())
    print(
        f"   worst p99 {worst * ms:.1f} ms vs goal 100 ms; "
        f"vs felix#2072 p90 ~1700 ms: {1.7 / worst:.0f}x faster"
    )
    family = "_ipv6" if case["family"] is IpFamily.V6 else ""
    figs.add(f"{case['backend']}_{case['local']}pods{family}_worst_p99_ms", worst * ms)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--backends", default="iptables,nftables")
    parser.add_argument("--local", default="100,400")
    parser.add_argument("--families", default="4", help="4, 6 or 4,6: the pods' address families")
    args = parser.parse_args()
    families = [IpFamily(int(f)) for f in args.families.split(",")]
    tag = "vb" + "".join(random.choices(string.ascii_lowercase, k=4))
    figs = Figures()
    for backend in args.backends.split(","):
        for local in (int(x) for x in args.local.split(",")):
            for family in families:
                report(await run_case(backend, local, args.repeat, tag, family), figs)
    figs.print()


if __name__ == "__main__":
    asyncio.run(main())
