"""`vpcnet kube-controllers`: the mirror (API -> etcd) under a leader Lease, reporting its progress.

The progress file (optional; the lab asks for one) holds {"revision": R}: every API change up to etcd
revision R is in the etcd datastore. `vpcnet lab wait` reads it before it asks the agents to catch up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

from vpcnet.controllers.lease import LeaderElector
from vpcnet.controllers.mirror import Mirror
from vpcnet.datastore.open import open_datastore, open_kube_store
from vpcnet.datastore.resources import ResourceStore
from vpcnet.datastore.settings import DatastoreSettings

log = logging.getLogger(__name__)


def write_progress(path: Path, revision: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"revision": revision}))
    os.replace(tmp, path)


def read_progress(path: Path) -> int | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    revision = data.get("revision") if isinstance(data, dict) else None
    return revision if isinstance(revision, int) else None


async def run(
    kubeconfig: Path,
    settings: DatastoreSettings,
    *,
    identity: str | None = None,
    progress_file: Path | None = None,
    lease_seconds: float = 15.0,
) -> None:
    api = await open_kube_store(kubeconfig)
    datastore = await open_datastore(settings)
    identity = identity or f"{socket.gethostname()}-{os.getpid()}"
    try:

        def progress(revision: int) -> None:
            if progress_file is not None:
                write_progress(progress_file, revision)

        async def lead() -> None:
            await Mirror(api, ResourceStore(datastore), on_progress=progress).run()

        await LeaderElector(api, identity, duration=lease_seconds).run(lead)
    finally:
        await datastore.close()
        await api.close()


def main(kubeconfig: Path, settings: DatastoreSettings, progress_file: Path | None) -> None:
    async def go() -> None:
        import signal

        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await run(kubeconfig, settings, progress_file=progress_file)

    try:
        asyncio.run(go())
    except (asyncio.CancelledError, KeyboardInterrupt):
        log.info("stopped")
