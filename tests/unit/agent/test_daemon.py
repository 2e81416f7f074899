from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

from vpcnet.agent.components import Entry, load_factories
from vpcnet.agent.config import Mode, load_config
from vpcnet.agent.context import AgentContext, NotStarted
from vpcnet.agent.daemon import Agent

EVENTS: list[str] = []


class _Probe:
    def __init__(self, name: str, ctx: AgentContext) -> None:
        self._name = name
        self.ctx = ctx
        self._ready = False

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        EVENTS.append(f"start {self._name}")
        self._ready = True

    async def stop(self) -> None:
        EVENTS.append(f"stop {self._name}")

    def ready(self) -> bool:
        return self._ready


@pytest.fixture
def probe_module() -> types.ModuleType:
    mod = types.ModuleType("vpcnet_test_probe")
    mod.first = lambda ctx: _Probe("first", ctx)  # type: ignore[attr-defined]
    mod.second = lambda ctx: _Probe("second", ctx)  # type: ignore[attr-defined]
    mod.__spec__ = types.SimpleNamespace(name="vpcnet_test_probe")  # type: ignore[assignment]
    sys.modules["vpcnet_test_probe"] = mod
    EVENTS.clear()
    yield mod
    del sys.modules["vpcnet_test_probe"]


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_components_start_in_order_stop_in_reverse_and_serve(probe_module: types.ModuleType) -> None:
    entries = (
        Entry("first", "vpcnet_test_probe:first"),
        Entry("calico-only", "vpcnet_test_probe:second", (Mode.CALICO,)),
        Entry("second", "vpcnet_test_probe:second"),
    )
    cfg = load_config({"INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "DISABLE_METRICS": "true"})

    async def main() -> None:
        agent = Agent(cfg, entries)
        with pytest.raises(NotStarted):
            _ = agent.ctx.allocator
        await agent.start()
        server = agent.ctx.introspection._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]
        status, body = await _get(port, "/v1/health")
        assert status == 200
        assert json.loads(body) == {"ready": True, "components": {"first": True, "second": True}}
        status, body = await _get(port, "/v1/ipamd-env-settings")
        assert json.loads(body)["WARM_ENI_TARGET"] == 1
        status, _ = await _get(port, "/nope")
        assert status == 404
        await agent.stop()

    asyncio.run(main())
    assert EVENTS == ["start first", "start second", "stop second", "stop first"]


def test_a_factory_that_does_not_import_is_an_error_not_skipped() -> None:
    entries = (Entry("missing", "vpcnet_no_such_module_xyz:make"),)
    with pytest.raises(ModuleNotFoundError):
        load_factories(Mode.VPC, entries)


def test_a_start_gate_holds_the_components_until_its_file_appears(
    probe_module: types.ModuleType, tmp_path: Path
) -> None:
    """The lab starts agents early (agent/start_gate.py): code loaded, nothing started until the gate."""
    entries = (Entry("first", "vpcnet_test_probe:first"),)
    cfg = load_config({"DISABLE_METRICS": "true"})
    gate = tmp_path / "agents.go"

    async def main() -> None:
        agent = Agent(cfg, entries, start_gate=gate)
        starting = asyncio.create_task(agent.start())
        await asyncio.sleep(0.2)
        assert EVENTS == [] and not starting.done()
        gate.touch()
        await asyncio.wait_for(starting, 10)
        assert EVENTS == ["start first"]
        await agent.stop()

    asyncio.run(main())
