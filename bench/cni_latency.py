"""CNI ADD/DEL latency: vpcnet-cni as `install-cni` installs it by default (the native client when one can be
had) and the Python shim fallback (`--python`), each -> agent CNI service, against the reference Go plugins
ptp + host-local (containernetworking-plugins, /usr/lib/cni), measured in the same run, in the same node
namespace, interleaved pod by pod so both see the same noise. Then 50 concurrent ADDs on one node, in several
rounds (--bursts), the plugins' order turning each round; the wall ratio is the median of the rounds' (one
burst is one sample: on a loaded machine a single round's ratio swung from 0.35x to 1.44x between runs).

Each sample is the wall time of one plugin process as a runtime sees it: exec, env + stdin, exit. The
agent is a process of its own in the node's namespace (this script in agent mode), as in production.
Warm path: the agent's allocator has free addresses in memory (no cloud call), as on a node with a warm pool.
Run as root: `python bench/cni_latency.py [--pods 100] [--concurrent 50] [--bursts 5] [--ip-family ipv6]`.
Creates namespaces "vb<4>node" and "vb<4>p<N>" / "vb<4>g<N>" only, and removes them.
--ip-family ipv6: IPv6 pods as Calico mode wires them (a /128 from fd00:10:244::/64, no node-local IPv4,
no VPC SNAT), against ptp + host-local with an IPv6 range; its figures are named cni.ipv6.* (the IPv4
run's names stay as they are).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.cni.handlers import CniSettings
from vpcnet.cni.install import install_binary, install_client
from vpcnet.cni.service import CniService
from vpcnet.dataplane import nsenter
from vpcnet.dataplane.hostnet import HostNetConfig
from vpcnet.testing.memalloc import MemoryAllocator

GO_PLUGINS = "/usr/lib/cni"
POD_RANGE6 = "fd00:10:244::/64"
REFERENCE = "ptp+host-local"


def plugin_env(command: str, cid: str, netns: str, args: str) -> dict[str, str]:
    """The CNI environment one plugin call runs with."""
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": args,
        "CNI_PATH": GO_PLUGINS,
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }


def run_plugin(path: str, command: str, cid: str, netns: str, conf: bytes, args: str = "") -> float:
    env = plugin_env(command, cid, netns, args)
    start = time.perf_counter()
    proc = subprocess.run([path], input=conf, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{path} {command} {cid}: {proc.stdout!r} {proc.stderr!r}")
    return elapsed


async def run_plugin_async(path: str, command: str, cid: str, netns: str, conf: bytes, args: str) -> float:
    env = plugin_env(command, cid, netns, args)
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate(conf)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{path} {command} {cid}: {out!r} {err!r}")
    return elapsed


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(label: str, ours: list[float], ref: list[float]) -> str:
    o50, r50, o99, r99 = pct(ours, 0.5), pct(ref, 0.5), pct(ours, 0.99), pct(ref, 0.99)
    return (
        f"{label:<36} p50 {o50:7.2f} ms p99 {o99:7.2f} ms | {REFERENCE} p50 {r50:7.2f} ms "
        f"p99 {r99:7.2f} ms | ratio p50 {o50 / r50:5.2f}x p99 {o99 / r99:5.2f}x"
    )


def serve_agent(socket_path: Path, stats: Path, addresses: int, family: str = "ipv4") -> int:
    """Agent mode (run by the benchmark inside the node's namespace, a process of its own as in production):
    the CNI service with an in-memory warm pool; on SIGTERM, the agent-side time per request goes to stats."""

    async def run() -> None:
        ipv6 = family == "ipv6"
        allocator = MemoryAllocator.from_ranges([(POD_RANGE6 if ipv6 else "10.0.0.0/16", addresses, 0)])
        service = CniService(
            socket_path,
            lambda: allocator,
            CniSettings(mtu=1500),
            host=None  # Calico mode's IPv6 pods: no VPC SNAT chain
            if ipv6
            else lambda: HostNetConfig(
                IPv4Address("10.0.0.5"), (IPv4Network("10.0.0.0/16"),), primary_interface="lo"
            ),
        )
        await service.start()
        agent_ms: dict[str, list[float]] = {}
        handle = service.handler.handle

        async def timed(data: bytes) -> bytes:
            start = time.perf_counter()
            reply = await handle(data)
            command = data.split(b"CNI_COMMAND=", 1)[-1][:3].decode(errors="replace")
            agent_ms.setdefault(command, []).append((time.perf_counter() - start) * 1000)
            return reply

        service.server.handler = timed
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await service.stop()
        stats.write_text(json.dumps(agent_ms))

    asyncio.run(run())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--bursts", type=int, default=5, help="rounds of the concurrent ADDs (median ratio)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # agent mode (internal)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--addresses", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ip-family", choices=("ipv4", "ipv6"), default="ipv4", help="the pods' family")
    opts = parser.parse_args()
    if opts.serve is not None:
        return serve_agent(opts.serve, opts.stats, opts.addresses, opts.ip_family)
    ipv6 = opts.ip_family == "ipv6"
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    prefix = "vb" + "".join(random.choices(string.ascii_lowercase, k=4))
    node = f"{prefix}node"
    tmp = Path(tempfile.mkdtemp(prefix="vpcnet-bench-"))
    made: list[str] = []
    agent: subprocess.Popen[str] | None = None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        subprocess.run(["ip", "netns", "add", node], check=True)
        made.append(node)
        subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
        count = 2 * (opts.pods + opts.bursts * opts.concurrent) + 10
        agent = subprocess.Popen(
            ["ip", "netns", "exec", node, sys.executable, __file__, "--serve", str(tmp / "agent.sock"),
             "--stats", str(tmp / "agent-stats.json"), "--addresses", str(count),
             "--ip-family", opts.ip_family],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert agent.stdout is not None
        if agent.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark's agent did not start")
        default = install_client(tmp / "bin-default", str(tmp / "agent.sock"))
        kind = "native" if default.read_bytes()[:4] == b"\x7fELF" else "python"
        clients = {
            f"vpcnet (default: {kind})": str(default),
            "vpcnet (python)": str(install_binary(tmp / "bin-py", str(tmp / "agent.sock"))),
        }
        ptp = os.path.join(GO_PLUGINS, "ptp")
        our_conf = json.dumps(
            {"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni", "mtu": 1500}
        ).encode()
        go_conf = json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "benchptp",
                "type": "ptp",
                "ipMasq": False,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "subnet": "fd00:10:245::/64" if ipv6 else "10.244.0.0/16",
                    "routes": [{"dst": "::/0" if ipv6 else "0.0.0.0/0"}],
                    "dataDir": str(tmp / "host-local"),
                },
            }
        ).encode()
        runs = [(label, path, our_conf) for label, path in clients.items()]
        runs.append((REFERENCE, ptp, go_conf))

        def netns(kind: str, i: int) -> str:
            name = f"{prefix}{kind}{i}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            if ipv6:  # no duplicate address detection for the reference either (ours adds with nodad):
                # ptp waits for its address to leave "tentative", which DAD makes take seconds
                dad = "net.ipv6.conf.default.accept_dad=0"
                subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", dad], check=True)
            return f"/run/netns/{name}"

        spaces = {
            label: [netns(f"s{k}x", i) for i in range(opts.pods)] for k, (label, _, _) in enumerate(runs)
        }
        # Plugins run in the node's namespace, as the runtime there would run them.
        fd = nsenter.open_netns(f"/run/netns/{node}")
        nsenter.setns(fd)
        os.close(fd)
        for _ in range(3):  # warm-up: page cache, bytecode
            for _, path, conf in runs:
                run_plugin(path, "VERSION", "w", "", conf)
        adds: dict[str, list[float]] = {label: [] for label, _, _ in runs}
        dels: dict[str, list[float]] = {label: [] for label, _, _ in runs}
        for command, samples in (("ADD", adds), ("DEL", dels)):
            for i in range(opts.pods):  # interleaved: each pod through every plugin in turn
                for k, (label, path, conf) in enumerate(runs):
                    # A pod name per plugin: one name would mean one host veth name for two pods.
                    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod{k}-{i}"
                    samples[label].append(
                        run_plugin(path, command, f"c{k}-{i}", spaces[label][i], conf, args)
                    )
        time.sleep(0.5)  # let the agent's reaper finish the veth deletions before the next phase

        async def burst(r: int, k: int, path: str, conf: bytes) -> tuple[float, list[float]]:
            burst_spaces = [netns(f"b{r}{k}x", i) for i in range(opts.concurrent)]
            start = time.perf_counter()
            samples = await asyncio.gather(
                *(
                    run_plugin_async(
                        path,
                        "ADD",
                        f"b{r}.{k}-{i}",
                        ns,
                        conf,
                        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=b;K8S_POD_NAME=b{r}.{k}-{i}",
                    )
                    for i, ns in enumerate(burst_spaces)
                )
            )
            return (time.perf_counter() - start) * 1000, list(samples)

        interpreter = Path(clients["vpcnet (python)"]).read_text().splitlines()[0][2:].split()[0]
        starts_py: list[float] = []
        starts_go: list[float] = []
        for _ in range(30):
            begin = time.perf_counter()
            subprocess.run([interpreter, "-IS", "-c", "pass"], check=True)
            starts_py.append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            subprocess.run(
                [ptp], input=b"{}", env={"CNI_COMMAND": "VERSION"}, capture_output=True, check=True
            )
            starts_go.append((time.perf_counter() - begin) * 1000)
        walls: dict[str, list[float]] = {label: [] for label, _, _ in runs}
        burst_samples: dict[str, list[float]] = {label: [] for label, _, _ in runs}
        for r in range(opts.bursts):
            turn = r % len(runs)  # who goes first turns: none always meets the machine as the others left it
            for k, (label, path, conf) in [*enumerate(runs)][turn:] + [*enumerate(runs)][:turn]:
                wall, round_samples = asyncio.run(burst(r, k, path, conf))
                walls[label].append(wall)
                burst_samples[label] += round_samples
        nsenter.setns(home)
        agent.terminate()
        agent.wait(30)
        agent_ms: dict[str, list[float]] = json.loads((tmp / "agent-stats.json").read_text())

        figs = Figures()
        # Figure prefix per client: the default install is the headline ("cni."), the fallback "cni.python.".
        base = "cni.ipv6." if ipv6 else "cni."
        prefixes = dict(zip(clients, (base, f"{base}python."), strict=True))
        print(
            f"CNI latency ({opts.ip_family} pods): {opts.pods} pods per plugin, warm path, one node "
            f"namespace, interleaved; load {os.getloadavg()[0]:.1f}"
        )
        for label in clients:
            print(line(f"ADD {label}", adds[label], adds[REFERENCE]))
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                figs.add(f"{prefixes[label]}add_{name}_ratio", pct(adds[label], q) / pct(adds[REFERENCE], q))
        for label in clients:
            print(line(f"DEL {label}", dels[label], dels[REFERENCE]))
            figs.add(f"{prefixes[label]}del_p50_ratio", pct(dels[label], 0.5) / pct(dels[REFERENCE], 0.5))
        print(
            f"breakdown (p50): agent ADD {pct(agent_ms['ADD'], 0.5):.2f} ms, "
            f"agent DEL {pct(agent_ms['DEL'], 0.5):.2f} ms;"
            f" bare start: {interpreter} -IS {pct(starts_py, 0.5):.2f} ms, a Go plugin (VERSION) "
            f"{pct(starts_go, 0.5):.2f} ms"
        )
        in_bursts = agent_ms["ADD"][-opts.bursts * opts.concurrent * len(clients) :]  # the last ADDs served
        per_burst = sum(in_bursts) / (opts.bursts * len(clients))
        print(
            f"agent ADD during the bursts: p50 {pct(in_bursts, 0.5):.2f} ms, p99 {pct(in_bursts, 0.99):.2f} "
            f"ms, sum per burst {per_burst:.0f} ms (the agent serves one at a time)"
        )
        # Absolute times beside the ratios: what the family costs is read across two runs' figures.
        headline = next(iter(clients))
        figs.add(f"{base}add_p50_ms", pct(adds[headline], 0.5))
        figs.add(f"{base}agent_add_p50_ms", pct(agent_ms["ADD"], 0.5))
        for label in clients:
            print(
                line(
                    f"{opts.concurrent} concurrent ADD {label}",
                    burst_samples[label],
                    burst_samples[REFERENCE],
                )
            )
            ratios = [w / ref for w, ref in zip(walls[label], walls[REFERENCE], strict=True)]
            rounds = ", ".join(
                f"{w:.0f}/{ref:.0f} ms" for w, ref in zip(walls[label], walls[REFERENCE], strict=True)
            )
            print(
                f"  wall for all {opts.concurrent} ({opts.bursts} rounds, vs the reference): {rounds}; "
                f"ratios {', '.join(f'{x:.2f}' for x in ratios)}, median {statistics.median(ratios):.2f}x"
            )
            figs.add(f"{prefixes[label]}burst_wall_ratio", statistics.median(ratios))
        figs.print()
        return 0
    finally:
        nsenter.setns(home)
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
