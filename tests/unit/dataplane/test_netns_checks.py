"""The pod-namespace checks before wiring: nothing that can block is opened, and the node's own namespace
(or the agent's, or the machine's) is never taken for a pod's (defects 4 and 5 of issue 14)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vpcnet.dataplane import nsenter
from vpcnet.dataplane.podnet import (
    HostNetworkNamespace,
    NotANetworkNamespace,
    PodNamespaceGone,
    PodNetwork,
)


def returns_within(fn: object, fifo: Path, seconds: float = 5.0) -> list[object]:
    """Run fn() on a thread; if it hangs on the FIFO, unblock it (a writer opens the FIFO) and fail."""
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)  # type: ignore[operator]
    t.start()
    t.join(seconds)
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the blocked open() returns
        os.close(fd)
        t.join(5)
        pytest.fail(f"checking {fifo} blocked for {seconds}s")
    return out


def test_a_fifo_is_no_network_namespace_and_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert returns_within(lambda: nsenter.is_netns(str(fifo)), fifo) == [False]

    def check() -> str:
        try:
            PodNetwork().check_netns(str(fifo))
        except NotANetworkNamespace as exc:
            return type(exc).__name__
        return "accepted"

    assert returns_within(check, fifo) == ["NotANetworkNamespace"]


def test_other_things_are_no_network_namespace(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    for path in (str(tmp_path / "plain"), str(tmp_path), "/proc/self/ns/pid", "/dev/null"):
        assert not nsenter.is_netns(path), path
        with pytest.raises(NotANetworkNamespace):
            PodNetwork().check_netns(path)
    with pytest.raises(PodNamespaceGone):
        PodNetwork().check_netns(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "path", ["/proc/self/ns/net", "/proc/thread-self/ns/net", f"/proc/{os.getpid()}/ns/net"]
)
def test_the_agents_own_namespace_is_refused(path: str) -> None:
    assert nsenter.is_netns(path)
    assert nsenter.is_host_netns(path)
    with pytest.raises(HostNetworkNamespace, match="node's own network namespace"):
        PodNetwork().check_netns(path)


def test_the_nodes_namespace_is_refused_when_the_agent_works_on_it_from_elsewhere(tmp_path: Path) -> None:
    # node_netns names the node; a path to the same namespace file under another name is the node too
    link = tmp_path / "node-ns"
    link.symlink_to("/proc/self/ns/net")
    assert nsenter.is_host_netns(str(link), node_netns=str(link))
    with pytest.raises(HostNetworkNamespace):
        PodNetwork(node_netns=str(link)).check_netns("/proc/self/ns/net")
