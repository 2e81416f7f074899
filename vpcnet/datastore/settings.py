"""Where the datastore is and what kind it is, and how the environment names it (one home for the names).

VPCNET_DATASTORE_TYPE picks the backend (Calico's DATASTORE_TYPE with our prefix): `kubernetes` (the API,
found as vpcnet/datastore/kube_settings.py says: KUBECONFIG, else the pod's service account) or `etcd`
(`etcdv3`, Calico's spelling, is accepted). Unset, it is kubernetes when the process runs in a pod
(KUBERNETES_SERVICE_HOST is set, as the kubelet does for every pod) and etcd otherwise.
VPCNET_DATASTORE_ENDPOINTS lists etcd's endpoints (comma-separated, one per etcd member).
TLS to etcd (Calico's ETCD_CA_CERT_FILE / ETCD_CERT_FILE / ETCD_KEY_FILE with our prefix):
VPCNET_DATASTORE_CA_CERT_FILE (the CA that signed etcd's certificate; unset: the system's roots) and
VPCNET_DATASTORE_CERT_FILE + VPCNET_DATASTORE_KEY_FILE (this client's certificate, for etcd's
--client-cert-auth). Endpoints are then https:// (a bare host:port is taken as https); http:// is refused
beside them, so a certificate is never silently unused.
VPCNET_ETCD_ENDPOINTS, the CLI's old name, is still accepted with a logged deprecation warning. Calico's
own ETCD_ENDPOINTS is deliberately not read: calicoctl users often have it exported for another cluster,
and picking it up would silently point vpcnet at that cluster.

The agent reads these through vpcnet/agent/config.py and the CLI through vpcnet/cli/resources.py; both hand
their environment mapping to `read_datastore_settings`, so neither name nor rule is written twice.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vpcnet.datastore.kube_settings import SERVICE_HOST_ENV, KubeSettings, KubeSettingsError

log = logging.getLogger(__name__)

TYPE_VARIABLE = "VPCNET_DATASTORE_TYPE"
ENDPOINTS_VARIABLE = "VPCNET_DATASTORE_ENDPOINTS"
DEPRECATED_ENDPOINTS_VARIABLE = "VPCNET_ETCD_ENDPOINTS"  # accepted with a warning
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
CA_CERT_VARIABLE = "VPCNET_DATASTORE_CA_CERT_FILE"
CERT_VARIABLE = "VPCNET_DATASTORE_CERT_FILE"
KEY_VARIABLE = "VPCNET_DATASTORE_KEY_FILE"


class DatastoreType(enum.StrEnum):
    KUBERNETES = "kubernetes"
    ETCD = "etcd"


class DatastoreSettingsError(ValueError):
    """A datastore setting is invalid; the message starts with the variable's name."""


@dataclass(frozen=True)
class EtcdTls:
    """Files for TLS to etcd: the CA to trust (None: the system's roots) and this client's certificate and
    key (both or neither)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA, key, certificate chain) as bytes, for grpc.ssl_channel_credentials; OSError names the file."""

        def load(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        return load(self.ca_file), load(self.key_file), load(self.cert_file)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool = False

    @property
    def target(self) -> str:
        """The gRPC target (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[Endpoint, ...]
    # Seconds for one unary request; watches are streams and have no deadline.
    request_timeout: float = 10.0
    # How long reads keep retrying across endpoints while none answers.
    unavailable_retry_seconds: float = 5.0
    tls: EtcdTls | None = None  # set: every endpoint is https

    @classmethod
    def from_strings(
        cls, endpoints: Sequence[str], tls: EtcdTls | None = None, **kwargs: float
    ) -> EtcdSettings:
        if not endpoints:
            raise ValueError("etcd endpoints: the list is empty")
        parsed = tuple(parse_endpoint(e, default_tls=tls is not None) for e in endpoints)
        if tls is not None and not all(e.tls for e in parsed):
            plain = ", ".join(e for e, p in zip(endpoints, parsed, strict=True) if not p.tls)
            raise ValueError(f"etcd endpoints {plain}: http beside TLS certificate files (use https://)")
        if tls is None and any(e.tls for e in parsed):
            tls = EtcdTls()  # https with the system's roots and no client certificate
        if tls is not None and not all(e.tls for e in parsed):
            raise ValueError("etcd endpoints: http and https mixed")
        return cls(endpoints=parsed, tls=tls, **kwargs)


@dataclass(frozen=True)
class DatastoreSettings:
    """What `vpcnet.datastore.open.open_store` needs: the backend and where it is."""

    type: DatastoreType = DatastoreType.ETCD
    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)  # etcd's
    kube: KubeSettings | None = None  # where the Kubernetes API is (type kubernetes)
    tls: EtcdTls | None = None  # etcd's TLS files (read_etcd_tls)

    def etcd(self) -> EtcdSettings:
        return EtcdSettings.from_strings(self.endpoints, self.tls)


def endpoints_variable(env: Mapping[str, str]) -> str | None:
    """The variable the endpoints come from: VPCNET_DATASTORE_ENDPOINTS, else the deprecated
    VPCNET_ETCD_ENDPOINTS (with a warning), else None (neither is set)."""
    canonical = env.get(ENDPOINTS_VARIABLE, "").strip()
    deprecated = env.get(DEPRECATED_ENDPOINTS_VARIABLE, "").strip()
    if deprecated and canonical:
        if deprecated != canonical:
            log.warning(
                "%s is deprecated and ignored: %s is set too (%s)",
                DEPRECATED_ENDPOINTS_VARIABLE,
                ENDPOINTS_VARIABLE,
                canonical,
            )
        return ENDPOINTS_VARIABLE
    if deprecated:
        log.warning("%s is deprecated: use %s", DEPRECATED_ENDPOINTS_VARIABLE, ENDPOINTS_VARIABLE)
        return DEPRECATED_ENDPOINTS_VARIABLE
    return ENDPOINTS_VARIABLE if canonical else None


def parse_endpoints(variable: str, raw: str, tls: EtcdTls | None = None) -> tuple[str, ...]:
    """The comma-separated endpoints in `variable`, each checked; errors name the variable."""
    parts = tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        EtcdSettings.from_strings(parts, tls)
    except ValueError as exc:
        raise DatastoreSettingsError(f"{variable}: {exc}") from None
    return parts


def read_etcd_tls(env: Mapping[str, str]) -> EtcdTls | None:
    """The TLS files env names (None: none is set); each must be a readable file, the certificate and key
    come together. Errors name the variable."""
    paths: dict[str, Path | None] = {}
    for variable in (CA_CERT_VARIABLE, CERT_VARIABLE, KEY_VARIABLE):
        raw = env.get(variable, "").strip()
        if not raw:
            paths[variable] = None
            continue
        path = Path(raw)
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise DatastoreSettingsError(f"{variable}={raw!r}: cannot read it ({exc.strerror})") from None
        paths[variable] = path
    if (paths[CERT_VARIABLE] is None) != (paths[KEY_VARIABLE] is None):
        given, missing = (
            (CERT_VARIABLE, KEY_VARIABLE) if paths[KEY_VARIABLE] is None else (KEY_VARIABLE, CERT_VARIABLE)
        )
        raise DatastoreSettingsError(f"{given} is set but {missing} is not: a client certificate needs both")
    if all(p is None for p in paths.values()):
        return None
    return EtcdTls(paths[CA_CERT_VARIABLE], paths[CERT_VARIABLE], paths[KEY_VARIABLE])


def read_datastore_type(env: Mapping[str, str]) -> DatastoreType:
    raw = env.get(TYPE_VARIABLE, "").strip()
    if not raw:
        return DatastoreType.KUBERNETES if env.get(SERVICE_HOST_ENV) else DatastoreType.ETCD
    if raw.lower() == "etcdv3":  # Calico's spelling
        return DatastoreType.ETCD
    try:
        return DatastoreType(raw.lower())
    except ValueError:
        allowed = ", ".join(t.value for t in DatastoreType)
        raise DatastoreSettingsError(f"{TYPE_VARIABLE}={raw!r}: expected one of {allowed}") from None


def read_datastore_settings(
    env: Mapping[str, str], default_endpoints: Sequence[str] = (DEFAULT_ENDPOINT,)
) -> DatastoreSettings:
    """The datastore settings in env; `default_endpoints` when no endpoints variable is set. For the
    Kubernetes datastore, where its API is (an error naming the variable when nothing says)."""
    tls = read_etcd_tls(env)
    variable = endpoints_variable(env)
    if variable is not None:
        endpoints = parse_endpoints(variable, env[variable], tls)
    else:
        endpoints = parse_endpoints("the default etcd endpoints", ",".join(default_endpoints), tls)
    kind = read_datastore_type(env)
    kube = None
    if kind is DatastoreType.KUBERNETES:
        try:
            kube = KubeSettings.from_env(env)
        except KubeSettingsError as exc:
            raise DatastoreSettingsError(f"{TYPE_VARIABLE}=kubernetes: {exc}") from None
    return DatastoreSettings(type=kind, endpoints=endpoints, kube=kube, tls=tls)


def parse_endpoint(text: str, *, default_tls: bool = False) -> Endpoint:
    """`http://host:port`, `https://host:port`, `host:port` or `host` (port 2379; https when
    `default_tls`, i.e. TLS files are set)."""
    spec = text.strip()
    if not spec:
        raise ValueError("etcd endpoint: empty string")
    if "://" not in spec:
        spec = ("https://" if default_tls else "http://") + spec
    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"etcd endpoint {text!r}: scheme {parts.scheme!r} is not supported (http or https)")
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {text!r}: no host")
    try:
        port = parts.port or 2379
    except ValueError as err:
        raise ValueError(f"etcd endpoint {text!r}: bad port ({err})") from None
    if parts.path not in ("", "/"):
        raise ValueError(f"etcd endpoint {text!r}: unexpected path {parts.path!r}")
    return Endpoint(host=parts.hostname, port=port, tls=parts.scheme == "https")
