"""The CNI part of the node agent: the pod data plane, the node's SNAT/connmark rules, and the socket server.

It has the agent's Component shape (name, async start/stop, ready) without importing the agent: the agent's
adapter (vpcnet/agent/cni_component.py) builds it from the agent's context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from vpcnet.cni.branch_pods import BranchLookup, BranchPods
from vpcnet.cni.handlers import CniHandler, CniSettings
from vpcnet.cni.server import CniServer
from vpcnet.dataplane.branchnet import BranchNetwork
from vpcnet.dataplane.hostnet import HostNetConfig, apply_host_network
from vpcnet.dataplane.podnet import PodNetwork
from vpcnet.ipam.types import Allocator

log = logging.getLogger("vpcnet.cni")


class CniService:
    name = "cni"

    def __init__(
        self,
        socket_path: Path,
        allocator: Callable[[], Allocator],
        settings: CniSettings | None = None,
        host: Callable[[], HostNetConfig] | None = None,
        node_netns: str | None = None,
        policy_problem: Callable[[], str | None] | None = None,
    ) -> None:
        """allocator and host are read at start() (the ipam component sets them up first); node_netns is
        the node's namespace path, None when the agent runs inside it (always, outside tests)."""
        self.socket_path = socket_path
        self.podnet = PodNetwork(node_netns)
        self.handler = CniHandler(allocator, self.podnet, settings, policy_problem)
        self.server = CniServer(socket_path, self.handler.handle)
        self._host = host
        self._allocator = allocator
        self.node_netns = node_netns
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def enable_branches(self, lookup: BranchLookup, mode: str, veth_prefix: str, mtu: int) -> None:
        """Security groups for pods: the pods `lookup` names are wired onto their branch ENIs."""
        self.handler.branches = BranchPods(lookup, BranchNetwork(self.podnet), mode, veth_prefix, mtu)

    def on_start(self, job: Callable[[], Awaitable[None]]) -> None:
        """A job run once the server is up, in the background, retried until it succeeds (the datastore
        may not answer yet); cancelled at stop."""
        self._on_start.append(job)

    async def _retry(self, job: Callable[[], Awaitable[None]]) -> None:
        delay = 0.5
        while True:
            try:
                await job()
                return
            except Exception as exc:
                log.warning(
                    "CNI start job %s failed (again in %.1f s): %s", getattr(job, "__name__", job), delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def start(self) -> None:
        await self.podnet.open()
        try:
            if self._host is not None:
                await apply_host_network(self._host(), self.node_netns)
            await self.server.start()
            self._tasks = [asyncio.create_task(self._retry(job)) for job in self._on_start]
        except BaseException:
            await self.podnet.close()
            raise
        log.info("CNI server listening", extra={"socket": str(self.socket_path)})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop()
        await self.podnet.close()

    def ready(self) -> bool:
        if not self.server.serving():
            return False
        try:
            return self._allocator().ready()
        except Exception:
            return False
