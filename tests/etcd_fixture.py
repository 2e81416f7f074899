"""A real etcd (Debian's etcd-server) for tests: free ports, a temporary data dir, killed in finally.

Fixtures (made available to every test by tests/conftest.py):
- `etcd_server`: one etcd per test module (shared; give every test its own key prefix, see `etcd_prefix`).
- `fresh_etcd_server`: one etcd for this test alone (for tests that stop, restart or compact it).
- `etcd_prefix`: a unique key prefix like "/vt-ab12cd/".
Use `server.settings()` for an EtcdSettings pointing at it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpcnet.datastore.settings import EtcdSettings

ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """One single-member etcd; stop() and start() again keep its data and ports (a restart)."""

    def __init__(self, data_root: Path) -> None:
        self.name = "vt" + secrets.token_hex(3)
        self.data_dir = data_root / "data"
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.log_path = data_root / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def settings(self, **kwargs: float) -> EtcdSettings:
        return EtcdSettings.from_strings([self.endpoint], **kwargs)

    def start(self, timeout: float = 20.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--log-level", "warn",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as response:
                    if b'"true"' in response.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy in {timeout} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill etcd (SIGKILL: a crash, not a polite shutdown)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


def _running_server() -> Iterator[EtcdServer]:
    root = Path(tempfile.mkdtemp(prefix="vt-etcd-"))
    server = EtcdServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    yield from _running_server()


@pytest.fixture
def fresh_etcd_server() -> Iterator[EtcdServer]:
    yield from _running_server()


@pytest.fixture
def etcd_prefix() -> str:
    return f"/vt-{secrets.token_hex(3)}/"
