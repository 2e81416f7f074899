"""Run the lab's Kubernetes API: `serve()` for the lab daemon, `main()` for `python -m vpcnet.lab.kubeapi`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.settings import EtcdSettings, read_datastore_settings
from vpcnet.lab.kubeapi.app import KubeApp
from vpcnet.lab.kubeapi.httpd import HttpServer
from vpcnet.lab.kubeapi.kubeconfig import write_kubeconfig
from vpcnet.lab.kubeapi.resources import Registry
from vpcnet.lab.kubeapi.storage import DEFAULT_ROOT, ObjectStore

log = logging.getLogger(__name__)


class RunningApi:
    """A started server: its URL, and close()."""

    def __init__(
        self, server: HttpServer, address: tuple[str, int], datastore: EtcdDatastore, app: KubeApp
    ) -> None:
        self.server = server
        self.datastore = datastore
        self.app = app
        self.host, self.port = address

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.server.close()
        await self.datastore.close()


async def start(
    etcd_settings: EtcdSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    root: str = DEFAULT_ROOT,
    bookmark_interval: float = 5.0,
) -> RunningApi:
    """Open etcd, make the default namespaces, load the stored CRDs, and listen (port 0: any free port)."""
    datastore = EtcdDatastore(etcd_settings)
    app = KubeApp(ObjectStore(datastore, root), Registry(), bookmark_interval)
    try:
        await app.start()
        server = HttpServer(app)
        address = await server.listen(host, port)
    except BaseException:
        await datastore.close()
        raise
    running = RunningApi(server, address, datastore, app)
    app.server_address = f"{running.host}:{running.port}"
    log.info("lab Kubernetes API at %s (etcd %s, root %s)", running.url, etcd_settings.endpoints, root)
    return running


async def serve(
    etcd_settings: EtcdSettings,
    host: str,
    port: int,
    ready_event: asyncio.Event | None = None,
    *,
    root: str = DEFAULT_ROOT,
    kubeconfig_path: Path | None = None,
) -> None:
    """Serve until cancelled; ready_event is set once the port answers (and the kubeconfig is written)."""
    running = await start(etcd_settings, host, port, root=root)
    try:
        if kubeconfig_path is not None:
            write_kubeconfig(kubeconfig_path, running.url)
        if ready_event is not None:
            ready_event.set()
        await asyncio.Event().wait()
    finally:
        await running.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vpcnet.lab.kubeapi", description="The lab's Kubernetes API over etcd."
    )
    parser.add_argument(
        "--etcd", default="", help="etcd endpoints, comma-separated (default: VPCNET_ETCD_ENDPOINTS)"
    )
    parser.add_argument("--listen", default="127.0.0.1:6443", help="host:port to serve plain HTTP on")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="etcd key prefix of the objects")
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="write a kubeconfig for this server here"
    )
    return parser.parse_args(argv)


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {text!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = (
            EtcdSettings.from_strings([e for e in args.etcd.split(",") if e.strip()])
            if args.etcd
            else read_datastore_settings(os.environ).etcd()
        )
        host, port = split_listen(args.listen)
    except ValueError as err:
        print(f"error: {err}")
        return 2

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await serve(settings, host, port, root=args.root, kubeconfig_path=args.kubeconfig)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(run())
    return 0
