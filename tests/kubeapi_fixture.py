"""The lab's Kubernetes API (vpcnet.lab.kubeapi) over a real etcd, served in-process from a background thread
(so that synchronous clients, kubectl and the CLI can use it), with a kubeconfig for it.

`with serve_kube_api(etcd, kubeconfig_path, ...) as api:`; `root` is the etcd key root (the lab's API uses
"/registry"; by default each API gets a random one of its own, so tests sharing an etcd do not meet)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from etcd_fixture import EtcdServer

from vpcnet.datastore.settings import EtcdSettings
from vpcnet.lab.kubeapi.kubeconfig import write_kubeconfig
from vpcnet.lab.kubeapi.server import RunningApi, start


@dataclass
class KubeApi:
    url: str
    kubeconfig: Path
    root: str
    etcd: EtcdServer | None
    loop: asyncio.AbstractEventLoop
    running: RunningApi

    def compact(self) -> int:
        """Compact etcd up to its current revision; returns that revision."""

        async def body() -> int:
            revision = await self.running.datastore.current_revision()
            await self.running.datastore.compact(revision)
            return revision

        return asyncio.run_coroutine_threadsafe(body(), self.loop).result(timeout=30)


@contextlib.contextmanager
def serve_kube_api(
    etcd: EtcdSettings | EtcdServer,
    kubeconfig: Path,
    *,
    root: str | None = None,
    bookmark_interval: float = 0.5,
) -> Iterator[KubeApi]:
    """An API over `etcd` on 127.0.0.1 (a free port), its kubeconfig written at `kubeconfig`."""
    settings = etcd.settings() if isinstance(etcd, EtcdServer) else etcd
    root = root or f"/vt-{secrets.token_hex(3)}/registry"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kubeapi", daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(
            start(settings, "127.0.0.1", 0, root=root, bookmark_interval=bookmark_interval), loop
        ).result(timeout=30)
        try:
            write_kubeconfig(kubeconfig, running.url)
            yield KubeApi(
                running.url, kubeconfig, root, etcd if isinstance(etcd, EtcdServer) else None, loop, running
            )
        finally:
            asyncio.run_coroutine_threadsafe(running.close(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
