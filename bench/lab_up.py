"""Benchmark: wall time of `vpcnet lab up --nodes 3` and `vpcnet lab down`, as a user runs them (the CLI as
a fresh process, each time), against a reference measured in the same run: the bare kernel work of the same
shape through `ip -batch` alone (5 namespaces, a bridge per subnet, a veth per node with its peer created in
the node, the internet veth, addresses) and its removal. The ratio says what the lab adds on top of the
namespaces themselves: etcd, the lab daemon (EC2 endpoint, IMDS), the EC2 state, nft, Python start-up.

Target: `lab up --nodes 3` under 5 s. Run as root: `python bench/lab_up.py [--runs 5] [--nodes 3]`.
Uses labs/namespaces named "vb" + 4 random letters only, and removes them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import string
import subprocess
import sys
import time

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

VPCNET = [sys.executable, "-c", "from vpcnet.cli.main import main; main()"]


def _prefix() -> str:
    return "vb" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))


def timed(argv: list[str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def reference(prefix: str, nodes: int) -> tuple[float, float]:
    """The same namespaces and links as the lab, with nothing else: one `ip -batch` per namespace."""
    vpc, inet = f"{prefix}-vpc", f"{prefix}-inet"
    names = [vpc, inet] + [f"{prefix}-node{i + 1}" for i in range(nodes)]
    start = time.perf_counter()
    timed(["ip", "-batch", "-"], "".join(f"netns add {n}\n" for n in names))
    vpc_lines = [
        "link set lo up",
        "link add br0 type bridge",
        "link add br1 type bridge",
        "address add 10.0.0.1/20 dev br0",
        "address add 10.0.16.1/20 dev br1",
        "link set br0 up",
        "link set br1 up",
        f"link add inet0 type veth peer name eth0 netns {inet}",
        "address add 198.51.100.1/24 dev inet0",
        "link set inet0 up",
    ]
    for i in range(nodes):
        vpc_lines += [
            f"link add p{i} type veth peer name eth0 netns {prefix}-node{i + 1}",
            f"link set p{i} master br{i % 2} up",
        ]
    timed(["ip", "-n", vpc, "-batch", "-"], "\n".join(vpc_lines) + "\n")
    for i in range(nodes):
        node_lines = [
            "link set lo up",
            f"address add 10.0.{16 * (i % 2)}.{4 + i}/20 dev eth0",
            "link set eth0 up",
            f"route add default via 10.0.{16 * (i % 2)}.1",
        ]
        timed(["ip", "-n", f"{prefix}-node{i + 1}", "-batch", "-"], "\n".join(node_lines) + "\n")
    up = time.perf_counter() - start
    start = time.perf_counter()
    timed(["ip", "-batch", "-"], "".join(f"netns del {n}\n" for n in names))
    down = time.perf_counter() - start
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    lab_up, lab_down, ref_up, ref_down = [], [], [], []
    for _ in range(args.runs):
        prefix = _prefix()
        try:
            lab_up.append(timed([*VPCNET, "lab", "up", "--nodes", str(args.nodes), "--prefix", prefix]))
        finally:
            lab_down.append(timed([*VPCNET, "lab", "down", "--prefix", prefix]))
        r_up, r_down = reference(_prefix(), args.nodes)
        ref_up.append(r_up)
        ref_down.append(r_down)
    cli_start = statistics.median(timed([*VPCNET, "--help"]) for _ in range(3))

    def row(name: str, samples: list[float]) -> str:
        return f"{name:<44} median {statistics.median(samples):6.3f} s   max {max(samples):6.3f} s"

    print(f"lab with {args.nodes} nodes, {args.runs} runs (node agents started when available)")
    print(row(f"vpcnet lab up --nodes {args.nodes}", lab_up))
    print(row("vpcnet lab down", lab_down))
    print(row("reference: ip -batch namespaces+veths up", ref_up))
    print(row("reference: ip -batch namespaces down", ref_down))
    print(f"{'vpcnet --help (CLI start-up alone)':<44} median {cli_start:6.3f} s")
    up_ratio = statistics.median(lab_up) / statistics.median(ref_up)
    down_ratio = statistics.median(lab_down) / statistics.median(ref_down)
    print(f"ratio lab up / reference up: {up_ratio:.1f}x   lab down / reference down: {down_ratio:.1f}x")
    verdict = "meets" if statistics.median(lab_up) < 5.0 else "MISSES"
    print(f"target: lab up under 5 s -> {verdict} (median {statistics.median(lab_up):.2f} s)")
    figs = Figures()
    figs.add("lab_up_median_s", statistics.median(lab_up))
    figs.add("lab_down_median_s", statistics.median(lab_down))
    figs.print()


if __name__ == "__main__":
    main()
