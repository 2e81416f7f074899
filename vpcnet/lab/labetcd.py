"""The lab's datastore: one etcd (Debian's etcd-server) on the host loopback, data under the lab's run dir.
Nodes reach it at 10.0.255.253:2379 through the lab daemon's proxy inside the VPC namespace."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from vpcnet.lab import procs
from vpcnet.lab.layout import LabLayout

ETCD_BINARY = "etcd"


class EtcdError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_file(layout: LabLayout) -> Path:
    return layout.run_dir / "etcd.pid"


def log_file(layout: LabLayout) -> Path:
    return layout.run_dir / "etcd.log"


def data_dir(layout: LabLayout) -> Path:
    return layout.run_dir / "etcd"


def start(layout: LabLayout) -> str:
    """Start etcd in the background; returns its client URL (not yet waited for: see wait_healthy)."""
    binary = shutil.which(ETCD_BINARY)
    if binary is None:
        raise EtcdError("etcd is not installed (Debian package etcd-server; `make deps` installs it)")
    client = f"http://127.0.0.1:{free_port()}"
    peer = f"http://127.0.0.1:{free_port()}"
    name = f"{layout.prefix}-etcd"
    argv = [
        binary,
        "--name", name,
        "--data-dir", str(data_dir(layout)),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
        "--initial-cluster-state", "new",
        "--log-level", "warn",
    ]  # fmt: skip
    procs.spawn(argv, log_file=log_file(layout), pid_file=pid_file(layout))
    return client


def running(layout: LabLayout) -> bool:
    return procs.alive(pid_file(layout), str(data_dir(layout)))


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError, urllib.error.URLError):
        return False


def wait_healthy(layout: LabLayout, url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return
        if not running(layout):
            tail = log_file(layout).read_text(errors="replace")[-2000:] if log_file(layout).exists() else ""
            raise EtcdError(f"etcd exited during start-up; its log ({log_file(layout)}) ends with:\n{tail}")
        time.sleep(0.05)
    raise EtcdError(f"etcd at {url} not healthy after {timeout:.0f} s (log: {log_file(layout)})")


def stop(layout: LabLayout) -> bool:
    return procs.stop(pid_file(layout), str(data_dir(layout)))
