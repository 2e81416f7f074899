"""A kubeconfig for the lab's API (what kubectl and the clients read to find it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def kubeconfig(server_url: str, name: str = "vpcnet-lab", token: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"token": token} if token else {}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server_url}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }


def server_url(path: Path) -> str:
    """The API server address a kubeconfig's current context points at (what lab tools use when they talk
    to the lab's API without a client library)."""
    from vpcnet.datastore.kube_connect import load_connection  # the one reader of a kubeconfig's contexts
    from vpcnet.datastore.kube_settings import KubeSettings

    return load_connection(KubeSettings(kubeconfig=path)).server


def write_kubeconfig(path: Path, server_url: str, name: str = "vpcnet-lab", token: str | None = None) -> Path:
    """Write (atomically, mode 0600 since it may hold a token) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig(server_url, name, token), sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
