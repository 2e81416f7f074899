"""Benchmark: Calico-mode pool IPAM against a real etcd, and subnet addresses used, VPC mode vs Calico mode.

1. Allocations per second with N allocators at once (N nodes, each its own etcd connection, each assigning
   pod after pod and claiming blocks as they fill; releases afterwards, untimed), every allocation a
   compare-and-swap on the pod's IPAMHandle then one on the node's IPAMBlock. Reference measured in the same
   run: the raw etcd rate of the same kind of write (read a key, then a two-key conditional transaction, on
   N connections, no IPAM logic), so the ratio says what the IPAM logic costs. Also counted: CAS conflicts,
   blocks claimed. Last row: N concurrent ADDs on one node through its one agent (serialized by the
   per-node lock, as Calico's CNI does with its host lock).
2. VPC subnet addresses consumed for the same pods: VPC mode (the VPC CNI's defaults: WARM_ENI_TARGET=1, so
   every attached ENI's full set of secondary addresses plus its primary address, computed with the warm
   pool engine's own formula) against Calico mode (one primary address per node; pods come from the pool).
3. Route computation per change on one node (render + diff) for 10 to 500 nodes.

Starts its own etcd (Debian's etcd-server) on free ports in a temporary directory; removed at the end.
Usage: python bench/pool_ipam.py [--allocators 1,5,20] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from figures import Figures  # ends the run with its headline FIGURE <name> <value> lines

from vpcnet.api.base import ObjectMeta
from vpcnet.api.ippool import IPPool
from vpcnet.dataplane.poolroutes import render, render_ip_batch, vtep_mac
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.datastore.settings import EtcdSettings
from vpcnet.datastore.types import PutOp, RevisionIs
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.limits import instance_limits
from vpcnet.ipam.maxpods import max_pods
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.warm import HOST_NETWORK_PODS, Capacity, WarmTargets, desired_total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Etcd:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vb-etcd-"))
        self.port, peer = free_port(), free_port()
        url, peer_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{peer}"
        argv = ["etcd", "--name", "vb", "--data-dir", str(self.dir / "d"), "--listen-client-urls", url]
        argv += ["--advertise-client-urls", url, "--listen-peer-urls", peer_url]
        argv += ["--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"vb={peer_url}"]
        self.proc = subprocess.Popen(
            [*argv, "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(400):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if b"true" in r.read():
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("etcd did not start")

    def settings(self) -> EtcdSettings:
        return EtcdSettings.from_strings([f"127.0.0.1:{self.port}"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def ipam_rate(
    etcd: Etcd, n: int, seconds: float, round_no: int, one_node: bool = False
) -> tuple[float, int, int]:
    """Allocations per second with n allocators, each assigning pod after pod (claiming blocks as they
    fill); the releases afterwards are not timed."""
    stores = [EtcdDatastore(etcd.settings()) for _ in range(n)]
    # one_node: n concurrent CNI ADDs on one node, served by that node's agent (one PoolIpam).
    ipams = [
        PoolIpam(ResourceStore(stores[0 if one_node else i]), f"r{round_no}-node{0 if one_node else i}")
        for i in range(n)
    ]
    if one_node:
        ipams = [ipams[0]] * n
    counts = [0] * n
    deadline = time.perf_counter() + seconds

    async def node(i: int) -> None:
        k = 0
        while time.perf_counter() < deadline:
            handle = f"bench.r{round_no}-{i}-{k}.eth0"
            await ipams[i].assign(handle, "bench", f"p{k}")
            counts[i] += 1
            k += 1

    async def release_all(i: int) -> None:
        for k in range(counts[i]):
            await ipams[i].release(f"bench.r{round_no}-{i}-{k}.eth0")

    start = time.perf_counter()
    await asyncio.gather(*(node(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(release_all(i) for i in range(n)))
    unique = list({id(ipam): ipam for ipam in ipams}.values())
    conflicts = sum(ipam.counters.conflicts for ipam in unique)
    blocks = sum(ipam.counters.blocks_claimed for ipam in unique)
    for store in stores:
        await store.close()
    return sum(counts) / elapsed, conflicts, blocks


async def raw_rate(etcd: Etcd, n: int, seconds: float, round_no: int) -> float:
    """Reference: read a key, then a two-key conditional transaction (the shape of one allocation)."""
    stores = [EtcdDatastore(etcd.settings()) for _ in range(n)]
    counts = [0] * n
    deadline = time.perf_counter() + seconds

    async def writer(i: int) -> None:
        key = f"/bench/raw/{round_no}/{i}"
        k = 0
        while time.perf_counter() < deadline:
            kv = await stores[i].get(key)
            handle = f"{key}/h{k}"
            ok = await stores[i].commit(
                [RevisionIs(key, kv.mod_revision if kv else 0), RevisionIs(handle, 0)],
                [PutOp(key, b"x" * 600), PutOp(handle, b"y" * 120)],
            )
            assert ok is not None
            counts[i] += 1
            k += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    for store in stores:
        await store.close()
    return sum(counts) / elapsed


def vpc_addresses(instance_type: str, pods: int) -> tuple[int, int]:
    """(VPC subnet addresses one node holds for `pods` pods with the VPC CNI defaults, its pod limit)."""
    limits = instance_limits(instance_type)
    enis = limits.enis_on_default_card
    cap = Capacity(instance_type, enis, limits.ipv4_per_eni - 1, 1, enis, max_pods(limits))
    if pods > cap.pod_limit:
        return -1, cap.pod_limit
    held = desired_total(pods, WarmTargets(), cap)
    enis_attached = -(-held // cap.per_eni)
    return held + enis_attached, cap.pod_limit  # secondary addresses + each ENI's primary address


def render_costs() -> None:
    """Route computation per datastore change on one node: render all routes, then diff (no change)."""
    print("== route sync per change on one node: render + diff against the kernel's routes (pure)")
    print(f"{'nodes':>6} {'blocks':>7} {'pods':>6} {'routes':>7} {'render ms':>10} {'diff ms':>8}")
    pool = IPPool(ObjectMeta(name="p"), IPv4Network("10.96.0.0/12"), vxlan_mode="CrossSubnet")
    for nodes, pods_per_node in ((10, 30), (100, 100), (500, 110)):
        records = {}
        blocks = []
        cidrs = IPv4Network("10.96.0.0/12").subnets(new_prefix=26)
        for i in range(nodes):
            name = f"n{i}"
            subnet = IPv4Network(f"10.{i % 3}.0.0/16")
            address = IPv4Address(int(subnet.network_address) + 10 + i)
            records[name] = NodeRecord(name, address, subnet, vtep_mac(name))
            left = pods_per_node
            while left > 0:
                block = Block.new(next(cidrs), name)
                for k in range(min(64, left)):
                    block.allocate(f"h{i}-{left}-{k}", name)
                left -= 64
                blocks.append(block)
        local = records["n0"]
        start = time.perf_counter()
        desired = render(local, records, blocks, [pool])
        rendered = time.perf_counter()
        lines = render_ip_batch(set(desired.routes), desired, set(desired.neighbors))
        diffed = time.perf_counter()
        assert lines == []
        render_ms, diff_ms = (rendered - start) * 1000, (diffed - rendered) * 1000
        total = nodes * pods_per_node
        row = f"{nodes:>6} {len(blocks):>7} {total:>6} {len(desired.routes):>7}"
        print(f"{row} {render_ms:>10.1f} {diff_ms:>8.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocators", default="1,5,20")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    etcd = Etcd()
    try:
        setup = EtcdDatastore(etcd.settings())
        pool = {"cidr": "10.96.0.0/12", "blockSize": 26, "vxlanMode": "CrossSubnet"}
        doc = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "bench"},
            "spec": pool,
        }
        await ResourceStore(setup).apply([doc])
        await setup.close()
        figs = Figures()
        print("== allocations per second, N allocators on one etcd (each a CAS transaction)")
        print(f"{'N':>4} {'ipam alloc/s':>13} {'raw txn/s':>10} {'ratio':>6} {'conflicts':>10} {'blocks':>7}")
        for round_no, n in enumerate(int(x) for x in args.allocators.split(",")):
            raw = await raw_rate(etcd, n, args.seconds, round_no)
            rate, conflicts, blocks = await ipam_rate(etcd, n, args.seconds, round_no)
            print(f"{n:>4} {rate:>13.0f} {raw:>10.0f} {rate / raw:>6.2f} {conflicts:>10} {blocks:>7}")
            figs.add(f"alloc_{n}_nodes_ratio_to_raw_txn", rate / raw)
        n = max(int(x) for x in args.allocators.split(","))
        raw = await raw_rate(etcd, n, args.seconds, 100)
        rate, conflicts, blocks = await ipam_rate(etcd, n, args.seconds, 100, one_node=True)
        print(f"{n:>4} {rate:>13.0f} {raw:>10.0f} {rate / raw:>6.2f} {conflicts:>10} {blocks:>7}  (one node)")
        figs.add(f"alloc_{n}_on_one_node_ratio_to_raw_txn", rate / raw)
        print()
        print("== VPC subnet addresses consumed for the same pods (VPC CNI defaults vs Calico pool)")
        print(f"{'type':>11} {'nodes':>6} {'pods/node':>10} {'VPC mode':>9} {'Calico':>7}  note")
        for instance_type, nodes, pods in (
            ("t3.medium", 10, 10),
            ("t3.medium", 10, 15),
            ("t3.medium", 10, 100),
            ("m5.large", 10, 20),
            ("m5.4xlarge", 10, 50),
            ("m5.4xlarge", 100, 110),
        ):
            per_node, limit = vpc_addresses(instance_type, pods)
            calico = nodes  # one primary address per node; pods use the pool
            vpc = "n/a" if per_node < 0 else str(per_node * nodes)
            note = f"VPC mode holds at most {limit} pods/node" if per_node < 0 else ""
            print(f"{instance_type:>11} {nodes:>6} {pods:>10} {vpc:>9} {calico:>7}  {note}")
        print(
            f"(VPC mode counts warm addresses too; {HOST_NETWORK_PODS} host-network pods per node need none.)"
        )
        print()
        render_costs()
        figs.print()
    finally:
        etcd.stop()


if __name__ == "__main__":
    asyncio.run(main())
