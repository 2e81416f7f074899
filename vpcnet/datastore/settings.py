"""Where the datastore is and what kind it is, and how the environment names it (one home for the names).

VPCNET_DATASTORE_TYPE picks the backend (Calico's DATASTORE_TYPE with our prefix): `kubernetes` (the API,
found as vpcnet/datastore/kube_settings.py says: KUBECONFIG, else the pod's service account) or `etcd`
(`etcdv3`, Calico's spelling, is accepted). Unset, it is kubernetes when the process runs in a pod
(KUBERNETES_SERVICE_HOST is set, as the kubelet does for every pod) and etcd otherwise.
VPCNET_DATASTORE_ENDPOINTS lists etcd's endpoints (comma-separated, one per etcd member).
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
from urllib.parse import urlsplit

from vpcnet.datastore.kube_settings import SERVICE_HOST_ENV, KubeSettings, KubeSettingsError

log = logging.getLogger(__name__)

TYPE_VARIABLE = "VPCNET_DATASTORE_TYPE"
ENDPOINTS_VARIABLE = "VPCNET_DATASTORE_ENDPOINTS"
DEPRECATED_ENDPOINTS_VARIABLE = "VPCNET_ETCD_ENDPOINTS"  # accepted with a warning
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


class DatastoreType(enum.StrEnum):
    KUBERNETES = "kubernetes"
    ETCD = "etcd"


class DatastoreSettingsError(ValueError):
    """A datastore setting is invalid; the message starts with the variable's name."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

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

    @classmethod
    def from_strings(cls, endpoints: Sequence[str], **kwargs: float) -> EtcdSettings:
        if not endpoints:
            raise ValueError("etcd endpoints: the list is empty")
        return cls(endpoints=tuple(parse_endpoint(e) for e in endpoints), **kwargs)


@dataclass(frozen=True)
class DatastoreSettings:
    """What `vpcnet.datastore.open.open_store` needs: the backend and where it is."""

    type: DatastoreType = DatastoreType.ETCD
    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)  # etcd's
    kube: KubeSettings | None = None  # where the Kubernetes API is (type kubernetes)

    def etcd(self) -> EtcdSettings:
        return EtcdSettings.from_strings(self.endpoints)


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


def parse_endpoints(variable: str, raw: str) -> tuple[str, ...]:
    """The comma-separated endpoints in `variable`, each checked; errors name the variable."""
    parts = tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        EtcdSettings.from_strings(parts)
    except ValueError as exc:
        raise DatastoreSettingsError(f"{variable}: {exc}") from None
    return parts


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
    variable = endpoints_variable(env)
    endpoints = parse_endpoints(variable, env[variable]) if variable is not None else tuple(default_endpoints)
    kind = read_datastore_type(env)
    kube = None
    if kind is DatastoreType.KUBERNETES:
        try:
            kube = KubeSettings.from_env(env)
        except KubeSettingsError as exc:
            raise DatastoreSettingsError(f"{TYPE_VARIABLE}=kubernetes: {exc}") from None
    return DatastoreSettings(type=kind, endpoints=endpoints, kube=kube)


def parse_endpoint(text: str) -> Endpoint:
    """`http://host:port`, `host:port` or `host` (port 2379); TLS is refused (not supported yet)."""
    spec = text.strip()
    if not spec:
        raise ValueError("etcd endpoint: empty string")
    if "://" not in spec:
        spec = "http://" + spec
    parts = urlsplit(spec)
    if parts.scheme != "http":
        raise ValueError(f"etcd endpoint {text!r}: scheme {parts.scheme!r} is not supported (use http)")
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {text!r}: no host")
    try:
        port = parts.port or 2379
    except ValueError as err:
        raise ValueError(f"etcd endpoint {text!r}: bad port ({err})") from None
    if parts.path not in ("", "/"):
        raise ValueError(f"etcd endpoint {text!r}: unexpected path {parts.path!r}")
    return Endpoint(host=parts.hostname, port=port)
