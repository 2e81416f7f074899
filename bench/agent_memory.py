"""Benchmark: the node agent's resident memory, with no pods and with N pods on its node and 1,000 policies.

A one-node lab with its agent (`vpcnet lab up --nodes 1`; the agent is the real `vpcnet agent` process).
RSS is read from /proc/<agent pid>/status (VmRSS now, VmHWM the peak) once the agent is ready, then after
the cluster of bench/policy_e2e.py (N pods on the node in 100 namespaces, 1,000 NetworkPolicies) is in
etcd and the agent has applied it. Also: which heavy libraries the agent process has mapped (a library
a node does not use should not be loaded). Goal: <= 100 MB at 400 pods and 1,000 policies.

Root. Uses a lab with a random prefix ("vb" + 4 letters), removed at the end.
Usage: python bench/agent_memory.py [--pods 400] [--backend iptables]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import string
import sys
import time
from pathlib import Path

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines
from policy_e2e import BATCH, NodeWatch, cluster

from vpcnet.datastore.open import open_datastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.lab import labctl
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.topology import build_topology

# Packages whose presence in the agent is worth knowing (their shared objects show in /proc/<pid>/maps).
WATCHED = ("boto", "botocore", "kubernetes_asyncio", "aiohttp", "pyroute2", "grpc", "yaml", "cryptography")


def memory(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def mapped(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name in WATCHED if f"/{name}" in maps]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=400)
    parser.add_argument("--backend", default="iptables")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the agent (repeatable)")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab)", file=sys.stderr)
        return 2
    layout = LabLayout("vb" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4)))
    figs = Figures()
    try:
        info = labctl.up(
            build_topology(nodes=1, azs=1),
            layout,
            agents=True,
            agent_settings={"VPCNET_POLICY_BACKEND": opts.backend, **dict(e.split("=", 1) for e in opts.env)},
            # the agents read etcd, where this benchmark writes its cluster (a lab defaults to its API)
            datastore="etcd",
        ).info
        node = info.nodes[0].name
        pid = int(labctl.agent_pid_file(layout, node).read_text().split()[0])
        time.sleep(2.0)  # let start-up settle (the first warm-pool round, the first policy apply)
        idle = memory(pid)
        print(
            f"agent, 0 pods: RSS {idle['VmRSS']:.1f} MB "
            f"(peak {idle['VmHWM']:.1f}, anon {idle['RssAnon']:.1f})"
        )
        print(f"  libraries mapped: {', '.join(mapped(pid)) or 'none of ' + ', '.join(WATCHED)}")

        async def load() -> None:
            datastore = await open_datastore(_settings(layout))
            try:
                store = ResourceStore(datastore)
                docs = cluster([node], opts.pods)
                revision = 0
                for i in range(0, len(docs), BATCH):
                    revision = (await store.apply(docs[i : i + BATCH])).revision
                watch = NodeWatch(layout, node, opts.backend)
                await asyncio.to_thread(watch.wait_agent, revision, time.perf_counter(), [], [])
                if watch.status().get("endpoints") != opts.pods:
                    raise RuntimeError(
                        f"the agent has {watch.status().get('endpoints')} endpoints, not {opts.pods}"
                    )
            finally:
                await datastore.close()

        asyncio.run(load())
        time.sleep(1.0)
        full = memory(pid)
        print(
            f"agent, {opts.pods} pods + 1,000 policies ({opts.backend}): RSS {full['VmRSS']:.1f} MB "
            f"(peak {full['VmHWM']:.1f}, anon {full['RssAnon']:.1f})"
        )
        print(f"  libraries mapped: {', '.join(mapped(pid)) or 'none of ' + ', '.join(WATCHED)}")
        figs.add("agent.rss_mb.0pods", idle["VmRSS"])
        figs.add(f"agent.rss_mb.{opts.pods}pods", full["VmRSS"])
        figs.add(f"agent.peak_rss_mb.{opts.pods}pods", full["VmHWM"])
    finally:
        labctl.down(layout)
    figs.print()
    return 0


def _settings(layout: LabLayout) -> object:
    from vpcnet.cli.resources import datastore_settings

    return datastore_settings(layout)


if __name__ == "__main__":
    sys.exit(main())
