"""Where the datastore is: a list of etcd client endpoints (one per member of a cluster)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

ENDPOINTS_ENV = "VPCNET_ETCD_ENDPOINTS"
AGENT_ENDPOINTS_ENV = "VPCNET_DATASTORE_ENDPOINTS"  # the agent's setting (vpcnet/agent/config.py)
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EtcdSettings:
        """Endpoints from VPCNET_ETCD_ENDPOINTS or VPCNET_DATASTORE_ENDPOINTS (comma-separated), else the
        local default."""
        source = env if env is not None else os.environ
        raw = source.get(ENDPOINTS_ENV) or source.get(AGENT_ENDPOINTS_ENV) or DEFAULT_ENDPOINT
        return cls.from_strings([part.strip() for part in raw.split(",") if part.strip()])


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
