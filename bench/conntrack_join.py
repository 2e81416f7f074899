"""Benchmark: what the flow log's conntrack counters cost each window, a dump of the table and the join.

A namespace of its own ("vb" + 4 random letters) with accounting on and conntrack engaged (one iptables rule
matching on state), holding N UDP connections (datagrams on lo to N ports from one socket; each is an entry).
Then, as the flow log does at each window's end: a dump of the whole table over ctnetlink, parsed and indexed
by join key (in a worker thread in the agent), and the join of N allowed records to it (on the event loop;
vpcnet.agent.flow_conntrack). Medians of RUNS.

Figures: conntrack.dump_ms.<N> (dump, parse and index), conntrack.join_ms.<N> (the join of N records),
conntrack.dump_entries.<N> (entries the dump returned: N, nothing else lives in a new namespace).

Runs as root; the namespace is removed at the end; traffic stays on its lo.
Usage: python bench/conntrack_join.py [--entries 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import string
import subprocess
import time
from typing import Any

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.agent.flow_conntrack import FlowConntrack, index
from vpcnet.dataplane import nsenter
from vpcnet.dataplane.conntrack_socket import ConntrackDumper, enable_accounting


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def fill(netns: str, entries: int) -> int:
    """N UDP entries: datagrams from one socket on lo to N destination ports; the source port."""
    with nsenter.entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        for port in range(20000, 20000 + entries):
            sock.sendto(b"x" * 64, ("127.0.0.1", port))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def records(source_port: int, entries: int) -> list[dict[str, Any]]:
    return [
        {
            "verdict": "allow",
            "direction": "egress",
            "protocol": "udp",
            "src": {"ip": "127.0.0.1", "port": source_port},
            "dst": {"ip": "127.0.0.1", "port": port},
        }
        for port in range(20000, 20000 + entries)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    name = "vb" + "".join(random.choices(string.ascii_lowercase, k=4)) + "-ct"
    netns = f"/run/netns/{name}"
    figures = Figures()
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        # conntrack runs in a namespace only once a rule needs it
        sh("ip", "netns", "exec", name, "iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW")
        enable_accounting(netns)
        source_port = fill(netns, args.entries)
        dumper = ConntrackDumper(netns)
        dumps, joins, found = [], [], 0
        try:
            for _ in range(args.runs):
                start = time.perf_counter()
                connections = dumper.dump()
                indexed = index(connections)
                dumps.append(time.perf_counter() - start)
                found = len(connections)
                batch = records(source_port, args.entries)
                join = FlowConntrack()
                start = time.perf_counter()
                join.annotate_indexed(batch, indexed)
                joins.append(time.perf_counter() - start)
                assert join.joined == args.entries, f"joined {join.joined} of {args.entries}"
        finally:
            dumper.close()
        dump_ms, join_ms = statistics.median(dumps) * 1000, statistics.median(joins) * 1000
        print(f"{found} entries: dump {dump_ms:.1f} ms, join of {args.entries} records {join_ms:.1f} ms")
        figures.add(f"conntrack.dump_ms.{args.entries}", dump_ms)
        figures.add(f"conntrack.join_ms.{args.entries}", join_ms)
        figures.add(f"conntrack.dump_entries.{args.entries}", found)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    figures.print()


if __name__ == "__main__":
    main()
