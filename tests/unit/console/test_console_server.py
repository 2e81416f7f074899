"""The console's server on a real socket, over sources given in-process: the page, every endpoint, errors."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any

from pictures_data import PODS, STATUS
from test_console_data import flow, resources

from vpcnet.agent.http import HttpServer
from vpcnet.cli.console.server import Console
from vpcnet.cli.topology_picture import Topology, topology


class FakeSources:
    can_probe = True

    def __init__(self) -> None:
        self.probes: list[tuple[int, str]] = []

    async def topology(self) -> Topology:
        return topology(STATUS, PODS)

    async def resources(self) -> list[Any]:
        return resources()

    def running_pods(self) -> list[str]:
        return ["x/a", "x/b"]

    async def flows(self) -> dict[str, list[dict[str, Any]] | str]:
        return {"node2": [flow("x/a", "x/b", "deny", 5.0)], "node1": "refused"}

    async def probe(self, port: int, protocol: str) -> dict[str, dict[str, bool]]:
        self.probes.append((port, protocol))
        return {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": True, "x/b": True}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_endpoint_over_http() -> None:
    sources = FakeSources()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    async def go() -> dict[str, tuple[int, bytes]]:
        server = HttpServer("console")
        Console(sources).routes(server)
        await server.start(f"127.0.0.1:{port}")
        try:
            out = {}
            for path in (
                "/", "/api/topology", "/api/matrix", "/api/probe?port=80", "/api/matrix?port=80&protocol=tcp",
                "/api/flows", "/api/explain?from=x/a&to=x/b&port=80", "/api/matrix?port=99999",
                "/api/explain?from=x/zz&to=x/b",
            ):  # fmt: skip
                out[path] = await asyncio.to_thread(_get, base + path)
            return out
        finally:
            await server.stop()

    got = asyncio.run(go())
    status, page = got["/"]
    assert (
        status == 200
        and b"<script>" in page
        and b"/api/flows" in page
        and b"http" not in page.split(b"<body>")[1]
    )
    topo = json.loads(got["/api/topology"][1])
    assert topo["nodes"] == ["node1", "node2"] and topo["can_probe"] is True
    before = json.loads(got["/api/matrix"][1])
    assert before["measured"] is None and before["probed_at"] is None
    probed = json.loads(got["/api/probe?port=80"][1])
    assert sources.probes == [(80, "TCP")] and probed["disagreements"]
    after = json.loads(got["/api/matrix?port=80&protocol=tcp"][1])  # the last probe is shown beside
    assert after["measured"] == probed["measured"] and after["probed_at"] == probed["probed_at"]
    flows = json.loads(got["/api/flows"][1])
    assert flows["denied"] == 1 and flows["errors"] == {"node1": "refused"}
    explained = json.loads(got["/api/explain?from=x/a&to=x/b&port=80"][1])
    assert explained["text"].startswith("x/a -> x/b:80 TCP: DENIED")
    assert got["/api/matrix?port=99999"][0] == 400
    assert b"port" in got["/api/matrix?port=99999"][1]
    assert got["/api/explain?from=x/zz&to=x/b"][0] == 400
