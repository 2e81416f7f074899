"""The node agent: one asyncio loop running the registered components.

Start order: components in registry order (ipam first), then the metrics and introspection servers.
On SIGTERM or SIGINT everything stops in reverse order. A failure to start is fatal: the agent exits
with the error, after stopping what had started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from vpcnet.agent.component import Component
from vpcnet.agent.components import COMPONENTS, Entry, load_factories
from vpcnet.agent.config import AgentConfig
from vpcnet.agent.context import AgentContext
from vpcnet.agent.http import HttpServer, Response
from vpcnet.agent.ipam_metrics import vpc_cni_exposition
from vpcnet.agent.start_gate import wait_for_gate
from vpcnet.datastore.open import preload

log = logging.getLogger("vpcnet.agent")


class Agent:
    def __init__(
        self, config: AgentConfig, entries: tuple[Entry, ...] = COMPONENTS, start_gate: Path | None = None
    ) -> None:
        self.ctx = AgentContext(config=config)
        self.entries = entries
        self.start_gate = start_gate  # vpcnet/agent/start_gate.py
        self.components: list[Component] = []
        self.started: list[Component] = []
        self.metrics_server = HttpServer("metrics")
        self.started_at = time.monotonic()

    async def start(self) -> None:
        cfg = self.ctx.config
        startup = Gauge(
            "vpcnet_agent_startup_seconds",
            "Seconds from agent start to all components serving",
            registry=self.ctx.metrics,
        )
        factories = load_factories(cfg.mode, self.entries)  # imports every component's code
        if self.start_gate is not None:
            preload(cfg.datastore_settings().type)  # what the components open first, while the lab starts
            await wait_for_gate(self.start_gate)
        for name, factory in factories:
            component = factory(self.ctx)
            self.components.append(component)
            log.info("starting component", extra={"component": name})
            await component.start()
            self.started.append(component)
        self.ctx.introspection.route("/", self._index)
        self.ctx.introspection.route("/v1/health", self._health)
        self.ctx.introspection.route("/v1/ipamd-env-settings", self._env_settings)
        if cfg.introspection_address is not None:
            await self.ctx.introspection.start(cfg.introspection_address)
        if cfg.metrics_port is not None:
            self.metrics_server.route("/metrics", self._metrics)
            await self.metrics_server.start(f"0.0.0.0:{cfg.metrics_port}")
        startup.set(time.monotonic() - self.started_at)
        log.info(
            "agent serving",
            extra={"components": ",".join(c.name for c in self.started), "mode": cfg.mode.value},
        )

    async def stop(self) -> None:
        await self.metrics_server.stop()
        await self.ctx.introspection.stop()
        for component in reversed(self.started):
            try:
                await component.stop()
            except Exception:
                log.exception("component failed to stop", extra={"component": component.name})
        self.started.clear()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.ctx.stopping.set)
        try:
            await self.start()
            await self.ctx.stopping.wait()
            log.info("agent stopping")
        finally:
            self.ctx.stopping.set()
            await self.stop()

    async def _metrics(self, query: str) -> Response:
        return 200, CONTENT_TYPE_LATEST, vpc_cni_exposition(generate_latest(self.ctx.metrics))

    async def _index(self, query: str) -> Response:
        paths = sorted(self.ctx.introspection.routes)
        return 200, "application/json", json.dumps({"paths": paths}).encode()

    async def _health(self, query: str) -> Response:
        state = {c.name: c.ready() for c in self.components}
        ok = all(state.values())
        return (
            (200 if ok else 500),
            "application/json",
            json.dumps({"ready": ok, "components": state}).encode(),
        )

    async def _env_settings(self, query: str) -> Response:
        return 200, "application/json", json.dumps(self.ctx.config.env_settings(), indent=1).encode()


def run_agent(config: AgentConfig, start_gate: Path | None = None) -> None:
    asyncio.run(Agent(config, start_gate=start_gate).run())
