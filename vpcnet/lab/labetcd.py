"""The lab's datastore: one etcd (Debian's etcd-server) on the host loopback, data under the lab's run dir.
Nodes reach it at 10.0.255.253:2379 through the lab daemon's proxy inside the VPC namespace.

With `lab up --etcd-tls`, etcd serves TLS only and asks every client for a certificate (as Calico's etcd
install does): a CA, etcd's certificate (for 127.0.0.1 and the VPC address) and one client certificate are
made with openssl under the run dir's etcd-tls/; the agents, the lab daemon, kube-controllers and the CLI get
the client's through VPCNET_DATASTORE_* (client_tls_env). The directory's presence is the lab's setting: a
repair restarts etcd the same way."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from vpcnet.datastore.settings import CA_CERT_VARIABLE, CERT_VARIABLE, KEY_VARIABLE
from vpcnet.lab import procs
from vpcnet.lab.layout import ETCD_ENDPOINT_ADDRESS, LabLayout

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


def tls_dir(layout: LabLayout) -> Path:
    return layout.run_dir / "etcd-tls"


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EtcdError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def make_certificates(directory: Path, server_ips: tuple[str, ...]) -> None:
    """A CA, a server certificate for server_ips and a client certificate (P-256 keys, 30 days), as
    ca.pem, server.pem + server-key.pem, client.pem + client-key.pem; the CA's key is removed after."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = str(directory / "ca.pem"), str(directory / "ca-key.pem")
    _openssl("req", "-x509", *key, "-keyout", ca_key, "-out", ca, "-days", "30", "-subj", "/CN=vpcnet-lab-ca")
    sans = ",".join(f"IP:{ip}" for ip in server_ips)
    for name, cn, extensions in (
        ("server", "etcd", f"subjectAltName={sans}\nextendedKeyUsage=serverAuth"),
        ("client", "vpcnet-node", "extendedKeyUsage=clientAuth"),
    ):
        csr = str(directory / f"{name}.csr")
        key_file = str(directory / f"{name}-key.pem")
        _openssl("req", *key, "-keyout", key_file, "-out", csr, "-subj", f"/CN={cn}")
        with tempfile.NamedTemporaryFile("w", suffix=".ext") as ext:
            ext.write(extensions + "\n")
            ext.flush()
            _openssl(
                "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "30",
                "-out", str(directory / f"{name}.pem"), "-extfile", ext.name,
            )  # fmt: skip
        Path(csr).unlink()
    Path(ca_key).unlink()
    (directory / "ca.srl").unlink(missing_ok=True)


def client_tls_env(layout: LabLayout) -> dict[str, str]:
    """The VPCNET_DATASTORE_* TLS variables for the lab's etcd ({} when it serves plain HTTP)."""
    d = tls_dir(layout)
    if not d.exists():
        return {}
    return {
        CA_CERT_VARIABLE: str(d / "ca.pem"),
        CERT_VARIABLE: str(d / "client.pem"),
        KEY_VARIABLE: str(d / "client-key.pem"),
    }


def start(layout: LabLayout, tls: bool | None = None) -> str:
    """Start etcd in the background; returns its client URL (not yet waited for: see wait_healthy).
    tls: serve TLS with client certificates (certificates made now); None: as before (etcd-tls/ exists)."""
    binary = shutil.which(ETCD_BINARY)
    if binary is None:
        raise EtcdError("etcd is not installed (Debian package etcd-server; `make deps` installs it)")
    if tls is None:
        tls = tls_dir(layout).exists()
    elif tls and not tls_dir(layout).exists():
        make_certificates(tls_dir(layout), ("127.0.0.1", ETCD_ENDPOINT_ADDRESS))
    client = f"{'https' if tls else 'http'}://127.0.0.1:{free_port()}"
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
    if tls:
        d = tls_dir(layout)
        argv += [
            "--cert-file", str(d / "server.pem"),
            "--key-file", str(d / "server-key.pem"),
            "--trusted-ca-file", str(d / "ca.pem"),
            "--client-cert-auth",
        ]  # fmt: skip
    procs.spawn(argv, log_file=log_file(layout), pid_file=pid_file(layout))
    return client


def running(layout: LabLayout) -> bool:
    return procs.alive(pid_file(layout), str(data_dir(layout)))


def client_ssl_context(layout: LabLayout) -> ssl.SSLContext:
    """What an HTTP client of the lab's TLS etcd presents: its CA and the client certificate."""
    d = tls_dir(layout)
    context = ssl.create_default_context(cafile=str(d / "ca.pem"))
    context.load_cert_chain(str(d / "client.pem"), str(d / "client-key.pem"))
    return context


def healthy(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0, context=context) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError, urllib.error.URLError):
        return False


def wait_healthy(layout: LabLayout, url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url, client_ssl_context(layout) if url.startswith("https:") else None):
            return
        if not running(layout):
            tail = log_file(layout).read_text(errors="replace")[-2000:] if log_file(layout).exists() else ""
            raise EtcdError(f"etcd exited during start-up; its log ({log_file(layout)}) ends with:\n{tail}")
        time.sleep(0.05)
    raise EtcdError(f"etcd at {url} not healthy after {timeout:.0f} s (log: {log_file(layout)})")


def stop(layout: LabLayout) -> bool:
    return procs.stop(pid_file(layout), str(data_dir(layout)))
