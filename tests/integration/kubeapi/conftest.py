"""A lab Kubernetes API over a real etcd, served from a background thread (the clients are synchronous)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etcd_fixture import EtcdServer

from vpcnet.lab.kubeapi.kubeconfig import write_kubeconfig
from vpcnet.lab.kubeapi.server import RunningApi, start

if shutil.which("etcd") is None:
    pytest.skip("needs etcd (Debian's etcd-server)", allow_module_level=True)


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


def _serve(etcd: EtcdServer, tmp: Path, bookmark_interval: float) -> Iterator[KubeApi]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kubeapi", daemon=True)
    thread.start()
    root = f"/vt-{secrets.token_hex(3)}/registry"
    running = asyncio.run_coroutine_threadsafe(
        start(etcd.settings(), "127.0.0.1", 0, root=root, bookmark_interval=bookmark_interval), loop
    ).result(timeout=30)
    try:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", running.url)
        yield KubeApi(running.url, kubeconfig, root, etcd, loop, running)
    finally:
        asyncio.run_coroutine_threadsafe(running.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def kube_api(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[KubeApi]:
    """One API per test, over the module's etcd, under its own key root."""
    yield from _serve(etcd_server, tmp_path, bookmark_interval=0.5)


@pytest.fixture
def fresh_kube_api(fresh_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[KubeApi]:
    """An API over an etcd of its own (for tests that compact it)."""
    yield from _serve(fresh_etcd_server, tmp_path, bookmark_interval=0.5)
