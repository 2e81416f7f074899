"""Where the Kubernetes API is, for the Kubernetes datastore (which datastore is chosen, and the default in a
pod, is vpcnet/datastore/settings.py's rule): KUBECONFIG or the pod's service account.

The API is found as kubectl and client-go find it: KUBECONFIG (a path; the
first of a colon-separated list) wins; then, in a pod, the in-cluster config (the service account token and
CA under /var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST/PORT); then
~/.kube/config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KUBECONFIG_ENV = "KUBECONFIG"
KUBE_CONTEXT_ENV = "VPCNET_KUBE_CONTEXT"
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeSettingsError(ValueError):
    """A datastore setting is wrong; the message names the variable."""


@dataclass(frozen=True)
class KubeSettings:
    kubeconfig: Path | None  # None: in-cluster
    context: str | None = None  # a kubeconfig context other than its current one
    request_timeout: float = 30.0  # seconds for one request (watches are streams and have their own)

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, home: Path | None = None) -> KubeSettings:
        env = os.environ if environ is None else environ
        context = env.get(KUBE_CONTEXT_ENV, "").strip() or None
        paths = [p for p in env.get(KUBECONFIG_ENV, "").split(os.pathsep) if p.strip()]
        if paths:
            path = Path(paths[0]).expanduser()
            if not path.is_file():
                raise KubeSettingsError(
                    f"{KUBECONFIG_ENV}={env[KUBECONFIG_ENV]!r}: {path} is not a readable file"
                )
            return cls(path, context)
        if env.get(SERVICE_HOST_ENV):
            if not env.get(SERVICE_PORT_ENV):
                raise KubeSettingsError(f"{SERVICE_HOST_ENV} is set but {SERVICE_PORT_ENV} is not")
            return cls(None, context)
        default = (home or Path.home()) / ".kube" / "config"
        if default.is_file():
            return cls(default, context)
        raise KubeSettingsError(
            f"no Kubernetes API configured: set {KUBECONFIG_ENV}, or run in a pod "
            f"({SERVICE_HOST_ENV}/{SERVICE_PORT_ENV} and the service account under {SERVICE_ACCOUNT_DIR}), "
            f"or write {default}"
        )
