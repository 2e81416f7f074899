from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from vpcnet.agent.http import HttpServer, Response
from vpcnet.cli.main import app

DOC = {
    "instanceId": "i-0abc",
    "instanceType": "m5.large",
    "ready": True,
    "prefixDelegation": False,
    "totalIPs": 18,
    "assignedIPs": 4,
    "coolingIPs": 1,
    "availableIPs": 13,
    "targetIPs": 18,
    "maxENIs": 3,
    "maxIPs": 27,
    "maxPods": 29,
    "lastError": "",
    "ENIs": [
        {
            "id": "eni-primary", "mac": "02:00:00:00:00:01", "deviceNumber": 0, "routeTableId": 254,
            "primaryIP": "10.0.0.10", "subnet": "subnet-a", "subnetCIDR": "10.0.0.0/20", "isPrimary": True,
            "carriesPods": True, "prefixes": [], "addresses": 9, "assigned": 4, "cooling": 1, "ips": [],
        },
        {
            "id": "eni-second", "mac": "02:00:00:00:00:02", "deviceNumber": 1, "routeTableId": 2,
            "primaryIP": "10.0.0.11", "subnet": "subnet-a", "subnetCIDR": "10.0.0.0/20", "isPrimary": False,
            "carriesPods": True, "prefixes": [], "addresses": 9, "assigned": 0, "cooling": 0, "ips": [],
        },
    ],
}  # fmt: skip


@pytest.fixture
def agent_address() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    server = HttpServer("introspection")

    async def ipam(query: str) -> Response:
        return 200, "application/json", json.dumps(DOC).encode()

    server.route("/v1/ipam", ipam)
    loop.run_until_complete(server.start("127.0.0.1:0"))
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(server.stop())
    loop.close()


def test_status_table_and_json(agent_address: str) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["ipam", "status", "--address", agent_address], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "eni-second" in out.output and "18 addresses, 4 assigned, 1 cooling" in out.output
    out = runner.invoke(app, ["ipam", "status", "-o", "json", "--address", agent_address])
    assert out.exit_code == 0 and json.loads(out.output) == DOC


def test_status_without_an_agent_is_a_clear_error() -> None:
    out = CliRunner().invoke(app, ["ipam", "status", "--address", "127.0.0.1:9"])
    assert out.exit_code == 1
    assert "no agent answers at 127.0.0.1:9" in out.output


def test_bad_output_format() -> None:
    out = CliRunner().invoke(app, ["ipam", "status", "-o", "yaml"])
    assert out.exit_code == 2 and "table or json" in out.output


@pytest.mark.parametrize(
    ("args", "env", "prefix"),
    [
        (["--prefix", "zqxa"], {}, "zqxa"),
        ([], {"VPCNET_LAB": "zqxb"}, "zqxb"),
        (["--prefix", "zqxc"], {"VPCNET_LAB": "zqxb"}, "zqxc"),  # the option wins over the environment
        (["--lab-prefix", "zqxd"], {}, "zqxd"),  # the old spelling still works
    ],
)
def test_node_lab_prefix_from_option_or_env(args: list[str], env: dict[str, str], prefix: str) -> None:
    from vpcnet.lab.layout import LabLayout

    out = CliRunner().invoke(app, ["ipam", "status", "--node", "node1", *args], env=env)
    assert out.exit_code == 2, out.output
    assert f"no lab node namespace {LabLayout(prefix).node_netns('node1')}" in out.output


def test_node_bad_lab_prefix_names_the_option() -> None:
    out = CliRunner().invoke(app, ["ipam", "status", "--node", "node1", "--prefix", "Bad!"])
    assert out.exit_code == 2 and "--prefix" in out.output and "'Bad!'" in out.output
    assert "Traceback" not in out.output


def test_lab_prefix_alias_is_hidden() -> None:
    out = CliRunner().invoke(app, ["ipam", "status", "--help"], env={"COLUMNS": "200"})
    assert "--prefix" in out.output and "--lab-prefix" not in out.output


def test_table_is_not_cut_short_when_piped(agent_address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = CliRunner().invoke(app, ["ipam", "status", "--address", agent_address])
    assert out.exit_code == 0, out.output
    for cell in ("eni-primary (primary)", "eni-second", "subnet-a 10.0.0.0/20", "10.0.0.11"):
        assert cell in out.output, cell
