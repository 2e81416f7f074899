"""Where the Kubernetes API is and how to authenticate to it, read from a kubeconfig or the pod's service
account the way client-go (and kubernetes_asyncio's loader) read them, without importing a client library.

Why our own: kubernetes_asyncio's loader lives under its `client` package, whose import loads every generated
API and model (about 1 s of an agent's start-up on a loaded node, in every agent, the lab kubelet and the
branch controller). What is read here is small and fixed: the server, its CA, a client certificate, a bearer
token (inline, from a file, or the service account's, re-read every minute since bound tokens rotate) or a
username and password. A kubeconfig whose user needs a credential plugin (`exec`, `auth-provider`) is the
client library's job: `plugin_needed` says so and the caller hands that kubeconfig to kubernetes_asyncio.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vpcnet.datastore.kube_settings import (
    SERVICE_ACCOUNT_DIR,
    SERVICE_HOST_ENV,
    SERVICE_PORT_ENV,
    KubeSettings,
)
from vpcnet.datastore.types import DatastoreError

TOKEN_REREAD_S = 60.0  # as client-go and kubernetes_asyncio re-read a projected service account token
PLUGIN_KEYS = ("exec", "auth-provider")


class BearerToken:
    """An Authorization header value from inline text or a file (re-read when TOKEN_REREAD_S has passed)."""

    def __init__(
        self, scheme: str, text: str | None = None, path: Path | None = None, where: str = ""
    ) -> None:
        self._where = where
        self._scheme = scheme
        self._text = text
        self._path = path
        self._read_at = 0.0

    def header(self) -> str:
        if self._path is not None and (
            self._text is None or time.monotonic() - self._read_at > TOKEN_REREAD_S
        ):
            what = f"Kubernetes API configuration from {self._where}: token file {self._path}"
            try:
                text = self._path.read_text().strip()
            except OSError as err:
                raise DatastoreError(f"{what}: {err.strerror}") from None
            if not text:
                raise DatastoreError(f"{what} is empty")
            self._text, self._read_at = text, time.monotonic()
        return f"{self._scheme} {self._text}"


@dataclass
class KubeConnection:
    """What a transport needs: the server URL (no trailing slash), TLS and the Authorization header."""

    server: str
    ssl_context: ssl.SSLContext | None = None  # None for http://
    server_hostname: str | None = None  # tls-server-name
    proxy: str | None = None  # the cluster's proxy-url
    token: BearerToken | None = None
    where: str = ""  # for errors: the kubeconfig path or the service account

    def authorization(self) -> str | None:
        return None if self.token is None else self.token.header()


def plugin_needed(settings: KubeSettings) -> bool:
    """True when the kubeconfig's user gets credentials from a plugin (the client library runs those)."""
    if settings.kubeconfig is None:
        return False
    try:
        _config, _cluster, user, _base = _select(settings)
    except DatastoreError:
        return False  # load_connection says what is wrong
    return any(key in user for key in PLUGIN_KEYS)


def load_connection(settings: KubeSettings, environ: Mapping[str, str] | None = None) -> KubeConnection:
    """The connection settings name; a DatastoreError naming the file and the field when they are wrong."""
    if settings.kubeconfig is None:
        return _in_cluster(os.environ if environ is None else environ, SERVICE_ACCOUNT_DIR)
    _config, cluster, user, base = _select(settings)
    where = str(settings.kubeconfig)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise DatastoreError(f"Kubernetes API configuration from {where}: the cluster has no server")
    server = server.rstrip("/")
    conn = KubeConnection(server, where=where, proxy=_str_or_none(cluster.get("proxy-url")))
    if server.startswith("https"):
        context = _tls_context(_pem(cluster, "certificate-authority", base, where), where)
        cert = _pem(user, "client-certificate", base, where)
        if cert is not None:
            _load_client_cert(context, cert, _pem(user, "client-key", base, where), where)
        if cluster.get("insecure-skip-tls-verify"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn.ssl_context = context
        conn.server_hostname = _str_or_none(cluster.get("tls-server-name"))
    conn.token = _user_token(user, base, where)
    conn.authorization()  # a token file is read now: a missing or empty one is a start-up error
    return conn


def _in_cluster(env: Mapping[str, str], account: Path) -> KubeConnection:
    where = f"the in-cluster service account ({account})"
    host, port = env.get(SERVICE_HOST_ENV, ""), env.get(SERVICE_PORT_ENV, "")
    if not host or not port:
        raise DatastoreError(
            f"Kubernetes API configuration from {where}: {SERVICE_HOST_ENV}/{SERVICE_PORT_ENV} unset"
        )
    token, ca = account / "token", account / "ca.crt"
    for path in (token, ca):
        if not path.is_file():
            raise DatastoreError(f"Kubernetes API configuration from {where}: {path} does not exist")
    bracketed = f"[{host}]" if ":" in host or "%" in host else host
    try:
        ca_pem = ca.read_bytes()
    except OSError as err:
        raise DatastoreError(f"Kubernetes API configuration from {where}: {ca}: {err.strerror}") from None
    conn = KubeConnection(f"https://{bracketed}:{port}", _tls_context(ca_pem, where), where=where)
    conn.token = BearerToken("Bearer", path=token, where=where)
    conn.authorization()  # read it now: an empty or unreadable token is a start-up error
    return conn


def _select(settings: KubeSettings) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Path]:
    """(config, cluster, user, directory relative paths are read from) of the chosen context."""
    assert settings.kubeconfig is not None
    where = str(settings.kubeconfig)
    try:
        config = yaml.safe_load(settings.kubeconfig.read_text())
    except OSError as err:
        raise DatastoreError(f"Kubernetes API configuration from {where}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise DatastoreError(f"Kubernetes API configuration from {where}: not YAML: {err}") from None
    if not isinstance(config, dict):
        raise DatastoreError(f"Kubernetes API configuration from {where}: not a kubeconfig mapping")
    name = settings.context or config.get("current-context")
    if not name:
        raise DatastoreError(f"Kubernetes API configuration from {where}: no current-context and none chosen")
    context = _named(config, "contexts", "context", str(name), where)
    cluster = _named(config, "clusters", "cluster", str(context.get("cluster", "")), where)
    user_name = context.get("user")
    # A context naming no user, or one the file lacks: no credentials (as kubernetes_asyncio reads it).
    user = _named(config, "users", "user", str(user_name), where, missing_ok=True) if user_name else {}
    return config, cluster, user, settings.kubeconfig.absolute().parent


def _named(
    config: Mapping[str, Any], section: str, key: str, name: str, where: str, missing_ok: bool = False
) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            return value if isinstance(value, dict) else {}
    if missing_ok:
        return {}
    raise DatastoreError(f"Kubernetes API configuration from {where}: no {section[:-1]} named {name!r}")


def _pem(entry: Mapping[str, Any], key: str, base: Path, where: str) -> bytes | None:
    """The PEM `key` names: `key`-data (base64) over the file `key` (relative to the kubeconfig)."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode("".join(str(data).split()), validate=True)
        except ValueError:
            raise DatastoreError(
                f"Kubernetes API configuration from {where}: {key}-data is not base64"
            ) from None
    path = entry.get(key)
    if not path:
        return None
    full = Path(os.path.normpath(base / str(path)))
    try:
        return full.read_bytes()
    except OSError as err:
        raise DatastoreError(
            f"Kubernetes API configuration from {where}: {key} {full}: {err.strerror}"
        ) from None


def _tls_context(ca: bytes | None, where: str) -> ssl.SSLContext:
    if ca is not None and not ca.strip():
        raise DatastoreError(f"Kubernetes API configuration from {where}: certificate-authority is empty")
    try:
        return ssl.create_default_context(cadata=ca.decode() if ca is not None else None)
    except (ValueError, ssl.SSLError) as err:
        raise DatastoreError(
            f"Kubernetes API configuration from {where}: certificate-authority: {err}"
        ) from None


def _load_client_cert(context: ssl.SSLContext, cert: bytes, key: bytes | None, where: str) -> None:
    """ssl loads a client certificate only from files: private ones, removed once loaded."""
    with tempfile.TemporaryDirectory(prefix="vpcnet-kube-") as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert)
        if key is not None:
            key_path.write_bytes(key)
        try:
            context.load_cert_chain(cert_path, keyfile=key_path if key is not None else None)
        except (OSError, ssl.SSLError) as err:
            raise DatastoreError(
                f"Kubernetes API configuration from {where}: client certificate: {err}"
            ) from None


def _user_token(user: Mapping[str, Any], base: Path, where: str) -> BearerToken | None:
    """kubernetes_asyncio's order: an inline token over a tokenFile, then username and password."""
    if user.get("token"):
        return BearerToken("Bearer", text=str(user["token"]))
    if user.get("tokenFile"):
        return BearerToken("Bearer", path=Path(os.path.normpath(base / str(user["tokenFile"]))), where=where)
    if "username" in user and "password" in user:
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        return BearerToken("Basic", text=basic)
    return None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None
