"""The console's HTTP side: the page and its JSON endpoints, on the agent's small asyncio server (GET only).

Each endpoint reads its sources afresh and answers with vpcnet.cli.console.data; nothing is cached but
the last probe per port and protocol (so the page can show the kernel's verdicts beside the engine's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from vpcnet.agent.http import HttpServer, Response
from vpcnet.cli.console import data
from vpcnet.cli.console.page import PAGE
from vpcnet.cli.topology_picture import Topology


class Sources(Protocol):
    can_probe: bool

    async def topology(self) -> Topology: ...
    async def resources(self) -> list[Any]: ...
    def running_pods(self) -> list[str]: ...
    async def flows(self) -> dict[str, list[dict[str, Any]] | str]: ...
    async def probe(self, port: int, protocol: str) -> dict[str, dict[str, bool]]: ...


def _json(doc: Any, status: int = 200) -> Response:
    return status, "application/json", json.dumps(doc).encode()


def _guarded(fn: Callable[[str], Awaitable[Any]]) -> Callable[[str], Awaitable[Response]]:
    """A bad query is a 400 naming it; a source that cannot be read a 503 saying why."""

    async def handler(query: str) -> Response:
        try:
            return _json(await fn(query))
        except data.BadQuery as exc:
            return _json({"error": str(exc)}, 400)
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            return _json({"error": str(exc) or type(exc).__name__}, 503)

    return handler


class Console:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.probed: dict[tuple[int, str], tuple[float, dict[str, dict[str, bool]]]] = {}

    def routes(self, server: HttpServer) -> None:
        server.route("/", self.page)
        server.route("/api/topology", _guarded(self.topology))
        server.route("/api/matrix", _guarded(self.matrix))
        server.route("/api/probe", _guarded(self.probe))
        server.route("/api/flows", _guarded(self.flows))
        server.route("/api/explain", _guarded(self.explain))

    async def page(self, query: str) -> Response:
        return 200, "text/html; charset=utf-8", PAGE.encode()

    async def topology(self, query: str) -> dict[str, Any]:
        doc = data.topology_doc(await self.sources.topology())
        doc["can_probe"] = self.sources.can_probe
        return doc

    async def _matrix(self, port: int, protocol: str) -> dict[str, Any]:
        from vpcnet.cli.console.sources import pod_refs

        resources = await self.sources.resources()
        refs = self.sources.running_pods() or pod_refs(resources)
        at, measured = self.probed.get((port, protocol), (None, None))
        doc = data.matrix_doc(resources, refs, port, protocol, measured)
        doc["probed_at"] = at
        return doc

    async def matrix(self, query: str) -> dict[str, Any]:
        return await self._matrix(*data.port_protocol(query))

    async def probe(self, query: str) -> dict[str, Any]:
        """Packets between every pair of pods (as `vpcnet lab probe`); no configuration changes."""
        port, protocol = data.port_protocol(query)
        measured = await self.sources.probe(port, protocol)
        self.probed[(port, protocol)] = (time.time(), measured)
        return await self._matrix(port, protocol)

    async def flows(self, query: str) -> dict[str, Any]:
        return data.flows_doc(await self.sources.flows())

    async def explain(self, query: str) -> dict[str, Any]:
        return data.explain_doc(await self.sources.resources(), query)


async def serve(sources: Sources, address: str, ready: Callable[[str], None]) -> None:
    """Serve until cancelled; `ready` gets the URL once listening."""
    import asyncio

    server = HttpServer("console")
    Console(sources).routes(server)
    await server.start(address)
    ready(f"http://{address}/")
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
