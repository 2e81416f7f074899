"""The pool IPAM under contention, on both datastores (etcd, and the Kubernetes API over etcd): allocators
on different nodes and several on one node hammer one small pool; no address is ever held by two handles,
every release returns its address, and at the end the blocks are empty and no handle is left. Every write
is a compare-and-swap on one object, so the same test must give the same results on both stores."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from etcd_fixture import EtcdServer
from kubeapi_fixture import KubeApi, serve_kube_api

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.kube import KubeResourceStore
from vpcnet.datastore.kube_client import KubeApi as KubeClient
from vpcnet.datastore.kube_settings import KubeSettings
from vpcnet.datastore.resources import ResourceStore
from vpcnet.datastore.store import ResourceStoreLike
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.poolstore import read_state
from vpcnet.ipam.types import AddressExhausted

if shutil.which("etcd") is None:
    pytest.skip("needs etcd (Debian's etcd-server)", allow_module_level=True)

CRDS = Path(__file__).parents[3] / "deploy" / "crds" / "calico.yaml"
POOL = "10.244.0.0/26"  # 8 blocks of /29: nodes race for blocks, then borrow from each other
ALLOCATORS = [("n1", 2), ("n2", 1), ("n3", 1), ("n4", 2)]  # node -> allocators on it (no shared lock)
ROUNDS = 25


def pool_document() -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "contended"},
        "spec": {"cidr": POOL, "blockSize": 29, "vxlanMode": "Always", "natOutgoing": False},
    }


@pytest.fixture
def kube_api(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[KubeApi]:
    with serve_kube_api(etcd_server, tmp_path / "kubeconfig") as api:
        yield api


@asynccontextmanager
async def etcd_store(etcd: EtcdServer) -> AsyncIterator[ResourceStoreLike]:
    datastore = EtcdDatastore(etcd.settings())
    try:
        yield ResourceStore(datastore)
    finally:
        await datastore.close()


@asynccontextmanager
async def kube_store(api: KubeApi) -> AsyncIterator[ResourceStoreLike]:
    client = await KubeClient.connect(KubeSettings(api.kubeconfig))
    store = KubeResourceStore(client, sync_timeout=30)
    try:
        for crd in yaml.safe_load_all(CRDS.read_text()):
            if crd:
                status, answer = await client.request(
                    "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd
                )
                assert status in (201, 409), answer
        yield store
    finally:
        await store.close()


async def hammer(store: ResourceStoreLike, seed: int) -> dict[str, int]:
    await store.apply([pool_document()])
    held: dict[IPv4Address, str] = {}  # address -> the handle holding it, across every allocator
    stats = {"assigned": 0, "released": 0, "exhausted": 0, "conflicts": 0, "borrowed": 0}

    async def allocator(node: str, index: int) -> None:
        ipam = PoolIpam(store, node, rng=random.Random(seed + index))
        rng = random.Random(seed * 31 + index)
        mine: list[tuple[str, IPv4Address]] = []

        async def release(handle: str, address: IPv4Address) -> None:
            # Once asked to release, the address may go to someone else before release() returns.
            assert held.pop(address) == handle
            freed = await ipam.release(handle)
            assert freed is not None and freed.address == address, (handle, address, freed)
            stats["released"] += 1

        for i in range(ROUNDS):
            handle = f"{node}.a{index}.h{i}"
            try:
                record = await ipam.assign(handle, "default", f"p-{node}-{index}-{i}")
            except AddressExhausted:
                stats["exhausted"] += 1
            else:
                other = held.get(record.address)
                assert other is None, f"{record.address} given to {handle} while {other} holds it"
                held[record.address] = handle
                mine.append((handle, record.address))
                stats["assigned"] += 1
            if mine and rng.random() < 0.4:
                await release(*mine.pop(rng.randrange(len(mine))))
        for victim in mine:
            await release(*victim)
        stats["conflicts"] += ipam.counters.conflicts
        stats["borrowed"] += ipam.counters.borrowed

    tasks = [allocator(node, n * 10 + k) for n, (node, count) in enumerate(ALLOCATORS) for k in range(count)]
    await asyncio.wait_for(asyncio.gather(*tasks), 240)
    assert held == {}
    state = await read_state(store)
    assert all(block.empty and not block.check() for block, _ in state.blocks.values()), state.blocks
    assert sum(block.free for block, _ in state.blocks.values()) == 8 * len(state.blocks)
    assert state.handles == {}
    return stats


def check(stats: dict[str, int]) -> None:
    total = sum(count for _, count in ALLOCATORS) * ROUNDS
    assert stats["assigned"] + stats["exhausted"] == total
    assert stats["released"] == stats["assigned"]
    assert stats["assigned"] > total // 2, stats  # the pool (64 addresses) was really used


def test_contention_on_etcd(etcd_server: EtcdServer) -> None:
    async def main() -> dict[str, int]:
        async with etcd_store(etcd_server) as store:
            return await hammer(store, seed=7)

    check(asyncio.run(main()))


def test_contention_on_the_kubernetes_api(kube_api: KubeApi) -> None:
    async def main() -> dict[str, int]:
        async with kube_store(kube_api) as store:
            return await hammer(store, seed=7)

    check(asyncio.run(main()))
