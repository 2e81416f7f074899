"""Shared by the whole suite. Root tests need root and the lab's tools: a developer without them sees those
tests skipped; CI (CI=true) must run them all, so there a missing tool stops the run instead."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator

import pytest
from etcd_fixture import etcd_prefix, etcd_server, fresh_etcd_server  # noqa: F401  (pytest fixtures)

from vpcnet.lab.kubectl import venv_kubectl

# What the root and end-to-end tests use (installed by `make system`).
REQUIRED_TOOLS = ("ip", "bridge", "iptables", "iptables-restore", "ipset", "nft", "etcd", "containerd", "ctr",
                  "runc", "busybox", "tcpdump", "cc", "mmdebstrap")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_ci = os.environ.get("CI") == "true"
    if in_ci:
        if os.geteuid() != 0:
            raise pytest.UsageError("CI runs the root tests: run the suite as root")
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if venv_kubectl() is None:
            missing.append("Debian's kubectl linked into the venv")
        if missing:
            raise pytest.UsageError(f"CI needs {', '.join(missing)} (run `make system`)")
        return
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, iptables, nft)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _thaw_the_heap() -> Iterator[None]:
    """An agent run in this process (the policy loop) freezes the heap (vpcnet.agent.heap); thaw it after
    each test, so one test's frozen objects stay collectable for the next."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
