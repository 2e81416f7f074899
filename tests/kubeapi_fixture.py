"""The lab's Kubernetes API (vpcnet.lab.kubeapi) over a real etcd, served from a background thread's event
loop, so that both synchronous clients (kubectl, the official Python client) and async ones in the test's
own loop can use it. Used by tests/integration/kubeapi/conftest.py and by tests that run a component on
both datastores (etcd and the Kubernetes API)."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from etcd_fixture import EtcdServer

from vpcnet.lab.kubeapi.kubeconfig import write_kubeconfig
from vpcnet.lab.kubeapi.server import RunningApi, start


@dataclass
class KubeApi:
    url: str
    kubeconfig: Path
    root: str
    etcd: EtcdServer
    loop: asyncio.AbstractEventLoop
    running: RunningApi

    def compact(self) -> int:
        """Compact etcd up to its current revision; returns that revision."""

        async def body() -> int:
            revision = await self.running.datastore.current_revision()
            await self.running.datastore.compact(revision)
            return revision

        return asyncio.run_coroutine_threadsafe(body(), self.loop).result(timeout=30)


@contextmanager
def serve_kube_api(
    etcd: EtcdServer, kubeconfig_path: Path, root: str | None = None, bookmark_interval: float = 0.5
) -> Iterator[KubeApi]:
    """An API over etcd under its own key root (random unless given), with a kubeconfig written at
    kubeconfig_path; stopped on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kubeapi", daemon=True)
    thread.start()
    root = root or f"/vt-{secrets.token_hex(3)}/registry"
    try:
        running = asyncio.run_coroutine_threadsafe(
            start(etcd.settings(), "127.0.0.1", 0, root=root, bookmark_interval=bookmark_interval), loop
        ).result(timeout=30)
        try:
            kubeconfig = write_kubeconfig(kubeconfig_path, running.url)
            yield KubeApi(running.url, kubeconfig, root, etcd, loop, running)
        finally:
            asyncio.run_coroutine_threadsafe(running.close(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
