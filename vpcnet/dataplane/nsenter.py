"""Cheap access to other network namespaces from the agent's event-loop thread.

pyroute2 0.9 opens a socket in a named namespace by forking a helper process (5-8 ms); a pod's ADD cannot
afford that. Here the calling thread enters the namespace with setns(2), opens the socket, and returns to
its own namespace at once — microseconds. setns(CLONE_NEWNET) changes only the calling thread, and
asyncio runs no other coroutine in between (nothing here awaits), so no other work sees the switch.
Sockets keep the namespace they were created in; files under /proc/sys/net resolve against the thread's
namespace when opened, which is how sysctls of another namespace are written.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # linux/nsfs.h: _IO(0xb7, 0x3)
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(OSError):
    pass


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str) -> int:
    """An fd for the namespace at path (/run/netns/NAME or /proc/PID/ns/net); the caller closes it."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"network namespace {path}: {exc.strerror}") from None


def is_netns(path: str) -> bool:
    """Whether path is a network namespace (not a plain file, nor another kind of namespace)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: not a namespace file at all
        return False
    finally:
        os.close(fd)


@contextmanager
def entered(path: str | None) -> Iterator[None]:
    """Run the body in the namespace at path (None: stay where we are). The body must not await."""
    if path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = open_netns(path)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)  # if this fails the thread is lost in another namespace: let it raise loudly
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
                continue


def read_sysctl(name: str, netns: str | None = None) -> str:
    with entered(netns), open(f"/proc/sys/{name}") as f:
        return f.read().strip()
