"""The agent's route sync follows the datastore: a new node's block is routed, a gone node's withdrawn."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from etcd_fixture import EtcdServer

from vpcnet.agent.pool_routes import PoolRouteSync
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.poolroutes import vtep_mac
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.poolnodes import NodeRegistration

pytestmark = pytest.mark.root


@pytest.fixture
def node_ns() -> Iterator[str]:
    tag = "vt" + secrets.token_hex(2)
    name, peer = f"{tag}-node", f"{tag}-peer"
    try:
        for n in (name, peer):
            subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                peer,
            ],
            check=True,
        )
        for cmd in (
            ["ip", "addr", "add", "10.78.1.11/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        for n in (name, peer):
            subprocess.run(["ip", "netns", "del", n], check=False)


def routes(netns: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ip", "route", "show", "proto", "86"], capture_output=True, text=True
    )
    return out.stdout


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in 10 s: {what}")


def record(name: str, address: str, subnet: str) -> NodeRecord:
    return NodeRecord(name, IPv4Address(address), IPv4Network(subnet), vtep_mac(name))


def test_route_sync_follows_nodes_and_blocks(node_ns: str, fresh_etcd_server: EtcdServer) -> None:
    async def main() -> None:
        ds = EtcdDatastore(fresh_etcd_server.settings())
        local = record("local", "10.78.1.11", "10.78.1.0/24")
        sync = PoolRouteSync(ResourceStore(ds), local, runner=SubprocessRunner(node_ns), resync_interval=2)
        task = asyncio.create_task(sync.run())
        try:
            await ResourceStore(ds).apply(
                [
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "IPPool",
                        "metadata": {"name": "p"},
                        "spec": {"cidr": "10.246.0.0/16", "vxlanMode": "CrossSubnet"},
                    }
                ]
            )
            await asyncio.wait_for(sync.synced.wait(), 10)
            mine = await PoolIpam(ResourceStore(ds), "local").assign("h-local")
            await until(lambda: f"blackhole {mine.block}" in routes(node_ns), "own block blackholed")
            near = NodeRegistration(ResourceStore(ds), record("near", "10.78.1.12", "10.78.1.0/24"))
            far = NodeRegistration(ResourceStore(ds), record("far", "10.78.2.13", "10.78.2.0/24"))
            await near.register()
            await far.register()
            near_block = (await PoolIpam(ResourceStore(ds), "near").assign("h-near")).block
            far_block = (await PoolIpam(ResourceStore(ds), "far").assign("h-far")).block
            await until(lambda: f"{near_block} via 10.78.1.12 dev eth0" in routes(node_ns), "direct route")
            await until(
                lambda: f"{far_block} via 10.78.2.13 dev vxlan.calico" in routes(node_ns), "VXLAN route"
            )
            await far.stop(withdraw=True)  # the far node goes away: its route is withdrawn
            await until(lambda: str(far_block) not in routes(node_ns), "withdrawn")
            assert f"{near_block} via 10.78.1.12" in routes(node_ns)
            # An address taken in an existing block changes no route: nothing is sent to the kernel.
            await PoolIpam(ResourceStore(ds), "near").assign("h-near-2")
            await until(lambda: sync.skipped > 0, "an unchanged desired state skipped")
            # Someone deletes our route by hand: the periodic resync reads the kernel back and repairs it.
            subprocess.run(
                ["ip", "netns", "exec", node_ns, "ip", "route", "del", str(near_block)], check=True
            )
            await until(lambda: f"{near_block} via 10.78.1.12" in routes(node_ns), "repaired")
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await ds.close()

    asyncio.run(main())
