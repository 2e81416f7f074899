"""A real runtime with IPv6 pods: Debian's containerd runs a container networked by vpcnet in Calico mode
(`ctr run --cni`), its addresses from real pools in a real etcd: IPv6 only (one address from the IPv6
pool's /122 block) and dual stack (one of each family). Removing it releases the addresses and leaves no
wiring. Isolation as in test_cni_containerd (the node's namespace, a private mount namespace for ctr)."""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cnienv import Node, sh, unique_prefix
from etcd_fixture import EtcdServer
from ociimage import build_archive
from test_cni_containerd import IMAGE, containerd, ctr, ctr_with_cni  # noqa: F401  (containerd: a fixture)

from vpcnet.cni.install import install
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.poolalloc import PoolAllocator, PoolIpam
from vpcnet.ipam.poolstore import read_state

pytestmark = [pytest.mark.root, pytest.mark.slow]

POOL4, POOL6 = "10.0.2.0/24", "fd00:10:244::/64"


def pool(name: str, cidr: str) -> dict[str, Any]:
    spec = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}}
    return spec | {"spec": {"cidr": cidr}}


@pytest.fixture(params=[(6,), (4, 6)], ids=["ipv6", "dual"])
def node(request: pytest.FixtureRequest, tmp_path: Path, fresh_etcd_server: EtcdServer) -> Iterator[Node]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (make system)")
    n = Node(unique_prefix(), tmp_path)
    versions: tuple[int, ...] = request.param
    stores: list[EtcdDatastore] = []

    async def pool_allocator() -> PoolAllocator:
        store = EtcdDatastore(fresh_etcd_server.settings())  # opened on the CNI service's loop
        stores.append(store)
        await ResourceStore(store).apply([pool("v4", POOL4), pool("v6", POOL6)])
        allocator = PoolAllocator(PoolIpam(ResourceStore(store), n.prefix), versions)
        allocator.set_ready()
        return allocator

    n.allocator = n.loop.run(pool_allocator())  # type: ignore[assignment]
    try:
        n.up()
        yield n
    finally:
        for store in stores:
            n.loop.run(store.close())
        n.down()


def test_ctr_run_ipv6_pod_with_vpcnet_pools(node: Node, containerd: Path, tmp_path: Path) -> None:  # noqa: F811
    archive = tmp_path / "busybox-oci.tar"
    build_archive(archive, IMAGE)
    ctr(containerd, "images", "import", str(archive))
    conf_dir = tmp_path / "net.d"
    install(node.bin_dir, conf_dir, str(node.socket), timeout=10, mtu=1500, native=False)
    script = "ip addr show eth0; ip -6 route; ip -4 route"
    proc = ctr_with_cni(
        node, containerd, conf_dir, "run", "--rm", "--cni", IMAGE, "c6", "/bin/sh", "-c", script
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    (v6,) = re.findall(r"inet6 (fd00:[0-9a-f:]+)/128", out)
    assert ipaddress.ip_address(v6) in ipaddress.ip_network(POOL6), out
    assert "default via fe80::1 dev eth0" in out, out
    v4 = re.findall(r"inet (10\.0\.2\.\d+)/32", out)
    dual = isinstance(node.allocator, PoolAllocator) and node.allocator.versions == (4, 6)
    assert len(v4) == (1 if dual else 0), out
    assert ("default via 169.254.1.1 dev eth0" in out) == dual, out

    # ctr removed the container and ran CNI DEL: the addresses are back in their blocks, no wiring left.
    node.drain()
    allocator = node.allocator
    assert isinstance(allocator, PoolAllocator)
    state = node.loop.run(read_state(allocator.ipam.store))
    assert [c.prefixlen for c in state.blocks if c.version == 6] == [122]
    assert all(block.empty for block, _ in state.blocks.values()) and not state.handles
    assert ctr(containerd, "containers", "ls", "-q").strip() == ""
    leftover = sh("ip", "-n", node.netns, "-6", "route") + sh("ip", "-n", node.netns, "-6", "neigh")
    assert v6 not in leftover
