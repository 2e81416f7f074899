"""IP-in-IP on a kernel without ipip says so clearly; `vpcnet ipam show/check/release` on a real etcd."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from etcd_fixture import EtcdServer
from typer.testing import CliRunner

from vpcnet.agent.pool_routes import PoolRouteSync
from vpcnet.api.base import ObjectMeta
from vpcnet.api.ippool import IPPool
from vpcnet.cli.main import app
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.poolroutes import render, vtep_mac
from vpcnet.dataplane.poolroutes_apply import IpipUnsupported, apply_pool_dataplane
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.blocks import Block
from vpcnet.ipam.node_record import NodeRecord
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.poolnodes import NodeRegistration

pytestmark = pytest.mark.root


def kernel_has_ipip() -> bool:
    return os.path.isdir("/sys/module/ipip")


@pytest.fixture
def netns() -> Iterator[str]:
    name = "vt" + secrets.token_hex(2) + "-ipip"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_ipip_pool_on_a_kernel_without_ipip_is_a_clear_error(netns: str) -> None:
    if kernel_has_ipip():
        pytest.skip("this kernel has the ipip module")
    local = NodeRecord("n1", IPv4Address("10.79.1.1"), IPv4Network("10.79.1.0/24"))
    pool = IPPool(ObjectMeta(name="p"), IPv4Network("10.247.0.0/16"), ipip_mode="Always")
    desired = render(local, {"n1": local}, [], [pool])
    assert [t.kind for t in desired.tunnels] == ["ipip"]
    with pytest.raises(IpipUnsupported, match=r"ipip module.*use vxlanMode"):
        asyncio.run(apply_pool_dataplane(desired, SubprocessRunner(netns)))


def test_an_ipip_pool_on_a_kernel_without_ipip_leaves_the_other_pools_routed(
    netns: str, fresh_etcd_server: EtcdServer
) -> None:
    """The IP-in-IP pool's routes cannot be made here; the VXLAN pool's (tunnel, route, neighbour, FDB)
    and the NAT are programmed anyway, and the route sync reports the problem once instead of failing."""
    if kernel_has_ipip():
        pytest.skip("this kernel has the ipip module")
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"], check=True
    )
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.79.1.1/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "up"], check=True)
    local = NodeRecord("n1", IPv4Address("10.79.1.1"), IPv4Network("10.79.1.0/24"), vtep_mac("n1"))
    peer = NodeRecord("n2", IPv4Address("10.79.2.1"), IPv4Network("10.79.2.0/24"), vtep_mac("n2"))
    vx = IPPool(ObjectMeta(name="vx"), IPv4Network("10.246.0.0/16"), vxlan_mode="Always", nat_outgoing=True)
    ip = IPPool(ObjectMeta(name="ip"), IPv4Network("10.247.0.0/16"), ipip_mode="Always")
    blocks = [Block.new(IPv4Network("10.246.0.0/26"), "n2"), Block.new(IPv4Network("10.247.0.0/26"), "n2")]
    desired = render(local, {"n1": local, "n2": peer}, blocks, [vx, ip])
    runner = SubprocessRunner(netns)
    with pytest.raises(IpipUnsupported, match=r"ipip module"):
        asyncio.run(apply_pool_dataplane(desired, runner))
    shown = subprocess.run(
        ["ip", "-n", netns, "route", "show", "proto", "86"], capture_output=True, text=True, check=True
    ).stdout
    assert "10.246.0.0/26 via 10.79.2.1 dev vxlan.calico" in shown
    assert "10.247.0.0/26" not in shown
    nat = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"], capture_output=True, text=True
    ).stdout
    assert "-s 10.246.0.0/16 -j MASQUERADE" in nat

    async def sync() -> PoolRouteSync:
        ds = EtcdDatastore(fresh_etcd_server.settings())
        try:
            store = ResourceStore(ds)
            await store.apply([_pool_doc("vx", "10.246.0.0/16", vxlanMode="Always")])
            await store.apply([_pool_doc("ip", "10.247.0.0/16", ipipMode="Always")])
            routes = PoolRouteSync(ResourceStore(ds), local, runner=runner)
            await routes.sync_once()  # does not raise: everything else is in place
            await routes.sync_once(force=False)
            return routes
        finally:
            await ds.close()

    routes = asyncio.run(sync())
    assert "ipip module" in routes.status()["unsupported"]
    assert routes.applies == 1 and routes.skipped == 1, "a known lack is not retried on every change"


def _pool_doc(name: str, cidr: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec},
    }


def test_ipam_cli_show_check_release(
    fresh_etcd_server: EtcdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPCNET_ETCD_ENDPOINTS", fresh_etcd_server.endpoint)

    async def setup() -> None:
        ds = EtcdDatastore(fresh_etcd_server.settings())
        try:
            store = ResourceStore(ds)
            pool = {"cidr": "10.248.0.0/24", "blockSize": 28, "natOutgoing": True}
            await store.apply(
                [
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "IPPool",
                        "metadata": {"name": "p"},
                        "spec": pool,
                    }
                ]
            )
            await store.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}])
            await store.apply(
                [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "alive", "namespace": "ns"}}]
            )
            await NodeRegistration(
                ResourceStore(ds), NodeRecord("n1", IPv4Address("10.79.1.1"), IPv4Network("10.79.1.0/24"))
            ).register()
            ipam = PoolIpam(ResourceStore(ds), "n1")
            await ipam.assign("h-alive", "ns", "alive")
            await ipam.assign("h-dead", "ns", "dead")
        finally:
            await ds.close()

    asyncio.run(setup())
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["ipam", "show", "-o", "json"]).output)
    assert shown["pools"][0]["inUse"] == 2 and shown["blocks"][0]["affinity"] == "n1"
    assert "10.248.0.0/24" in runner.invoke(app, ["ipam", "show"]).output
    report = tmp_path / "report.json"
    checked = runner.invoke(app, ["ipam", "check", "-o", str(report)])
    assert checked.exit_code == 1 and "ns/dead on n1): pod-gone" in checked.output, checked.output
    released = runner.invoke(app, ["ipam", "release", "--from-report", str(report)])
    assert released.exit_code == 0 and "1 released, 0 skipped" in released.output, released.output
    clean = runner.invoke(app, ["ipam", "check"])
    assert clean.exit_code == 0 and "clean" in clean.output and "allocations in use: 1" in clean.output
    again = runner.invoke(app, ["ipam", "release", "--from-report", str(report)])
    assert "0 released, 1 skipped" in again.output  # already done: nothing changes
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = runner.invoke(app, ["ipam", "release", "--from-report", str(bad)])
    assert refused.exit_code == 2 and "not a check report" in refused.output
