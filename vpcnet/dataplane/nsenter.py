"""Cheap access to other network namespaces from the agent's event-loop thread.

pyroute2 0.9 opens a socket in a named namespace by forking a helper process (5-8 ms); a pod's ADD cannot
afford that. Here the calling thread enters the namespace with setns(2), opens the socket, and returns to
its own namespace at once — microseconds. setns(CLONE_NEWNET) changes only the calling thread, and
asyncio runs no other coroutine in between (nothing here awaits), so no other work sees the switch.
Sockets keep the namespace they were created in; files under /proc/sys/net resolve against the thread's
namespace when opened, which is how sysctls of another namespace are written.

The one home of setns in vpcnet: the agent, the lab (its servers, probes and pod server) and the tests all
enter namespaces through here. Standard library only, so the lab's small pod server can import it.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # linux/nsfs.h: _IO(0xb7, 0x3)
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
log = logging.getLogger("vpcnet.dataplane.nsenter")


class NamespaceError(OSError):
    pass


class NamespaceLost(NamespaceError):
    """The thread entered another namespace and could not return to its own: it must not carry on."""


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace that fd refers to (setns(2), CLONE_NEWNET)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str | os.PathLike[str]) -> int:
    """An fd for the namespace at path (/run/netns/NAME or /proc/PID/ns/net); the caller closes it.
    O_NONBLOCK: if path was swapped for a FIFO, the open must not hang the event loop's thread."""
    try:
        return os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"network namespace {path}: {exc.strerror}") from None


_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def netns_identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(st_dev, st_ino) of a namespace file: two paths name the same namespace iff these are equal."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _nsfs_device() -> int:
    # Every namespace file lives on the one nsfs superblock: its device tells namespace files apart from
    # anything else without opening them (opening a FIFO or a device could block or have side effects).
    return os.stat("/proc/thread-self/ns/net").st_dev


def is_netns(path: str) -> bool:
    """Whether path is a network namespace (not a plain file, a FIFO, a device, nor another kind of
    namespace). Never blocks: nothing is opened unless stat says it is a namespace file."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_dev != _nsfs_device():
        return False
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    try:
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino):
            return False  # swapped between stat and open
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: not a namespace file at all
        return False
    finally:
        os.close(fd)


def host_netns_paths(node_netns: str | None) -> list[str]:
    """The namespaces a pod must never be wired into: the agent's own (the node's, for a host-network
    agent), the node's when the agent works on it from elsewhere, and init's (the machine's)."""
    paths = ["/proc/self/ns/net", "/proc/1/ns/net"]
    if node_netns is not None:
        paths.append(node_netns)
    return paths


def is_host_netns(path: str, node_netns: str | None = None) -> bool:
    """Whether path names the same network namespace as the agent's, the node's or init's."""
    try:
        target = netns_identity(path)
    except OSError:
        return False
    for host in host_netns_paths(node_netns):
        try:
            if netns_identity(host) == target:
                return True
        except OSError:  # /proc/1 hidden (hidepid): the others still count
            continue
    return False


def enter_for_good(path: str | os.PathLike[str]) -> None:
    """Move the calling thread into the namespace at path for the rest of its life (a worker thread
    dedicated to that namespace)."""
    target = open_netns(path)
    try:
        setns(target)
    finally:
        os.close(target)


@contextmanager
def entered(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Run the body in the namespace at path (None: stay where we are), then return to the thread's own.
    The body must not await. If the thread cannot return, NamespaceLost is raised."""
    if path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_for_good(path)
        try:
            yield
        finally:
            try:
                setns(home)
            except NamespaceError as exc:  # the thread is lost in another namespace: raise loudly
                raise NamespaceLost(
                    exc.errno, f"cannot return to the thread's own network namespace: {exc}"
                ) from exc
    finally:
        os.close(home)


def netlink_socket(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace at path (None: ours)."""
    with entered(path):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


def write_sysctl(name: str, value: str, netns: str | None = None) -> None:
    """Write net.* sysctl `name` ("net/ipv4/conf/eth0/rp_filter") in the namespace at netns."""
    with entered(netns), open(f"/proc/sys/{name}", "w") as f:
        f.write(value)


def write_sysctls(settings: list[tuple[str, str]], netns: str | None = None) -> None:
    """Several writes with one namespace switch; a missing entry (IPv6 off) is skipped."""
    with entered(netns):
        for name, value in settings:
            try:
                with open(f"/proc/sys/{name}", "w") as f:
                    f.write(value)
            except FileNotFoundError:
                log.debug("sysctl %s does not exist here (IPv6 off?); skipped", name)
                continue


def read_sysctl(name: str, netns: str | None = None) -> str:
    with entered(netns), open(f"/proc/sys/{name}") as f:
        return f.read().strip()
