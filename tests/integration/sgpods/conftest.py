"""A lab Kubernetes API over a real etcd, served from a background thread (the clients are synchronous)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_fixture import EtcdServer
from kubeapi_fixture import KubeApi, serve_kube_api

if shutil.which("etcd") is None:
    pytest.skip("needs etcd (Debian's etcd-server)", allow_module_level=True)

__all__ = ["KubeApi"]


def _serve(etcd: EtcdServer, tmp: Path, bookmark_interval: float) -> Iterator[KubeApi]:
    with serve_kube_api(etcd, tmp / "kubeconfig", bookmark_interval=bookmark_interval) as api:
        yield api


@pytest.fixture
def kube_api(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[KubeApi]:
    """One API per test, over the module's etcd, under its own key root."""
    yield from _serve(etcd_server, tmp_path, bookmark_interval=0.5)


@pytest.fixture
def fresh_kube_api(fresh_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[KubeApi]:
    """An API over an etcd of its own (for tests that compact it)."""
    yield from _serve(fresh_etcd_server, tmp_path, bookmark_interval=0.5)
