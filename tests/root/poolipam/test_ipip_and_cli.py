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

from vpcnet.api.base import ObjectMeta
from vpcnet.api.ippool import IPPool
from vpcnet.cli.main import app
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.poolroutes import render
from vpcnet.dataplane.poolroutes_apply import IpipUnsupported, apply_pool_dataplane
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.resources import ResourceStore
from vpcnet.ipam.poolalloc import PoolIpam
from vpcnet.ipam.poolnodes import NodeRegistration
from vpcnet.ipam.poolstore import NodeRecord

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
                ds, NodeRecord("n1", IPv4Address("10.79.1.1"), IPv4Network("10.79.1.0/24"))
            ).register()
            ipam = PoolIpam(ds, "n1")
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
