"""Ctnetlink sockets (vpcnet.dataplane.conntrack's I/O half): a dump of the table, and destroy events.

A dump reads the whole table of the socket's namespace (blocking: run it off the event loop); the events
socket joins the destroy group and is read on the asyncio loop, each ended connection with its final
counters. Both bounded as NFLOG's reader is: a dump stops at `max_entries`, and when the agent falls behind
on events the kernel drops them (ENOBUFS, counted as `lost`). The counters exist only where accounting is
on: `enable_accounting` sets net.netfilter.nf_conntrack_acct in the namespace (entries made from then on
are counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

from vpcnet.dataplane import conntrack, nsenter
from vpcnet.dataplane.conntrack import Connection
from vpcnet.dataplane.nflog import NETLINK_NETFILTER

RECV_BYTES = 1 << 18
RCVBUF_BYTES = 1 << 22
ACCT_SYSCTL = "net/netfilter/nf_conntrack_acct"
DUMP_TIMEOUT = 10.0


def enable_accounting(netns: str | None = None) -> None:
    """Count packets and bytes of new conntrack entries in the namespace at netns (None: ours); raises
    OSError naming the sysctl when it cannot (no nf_conntrack in this kernel, or no CAP_NET_ADMIN)."""
    try:
        if nsenter.read_sysctl(ACCT_SYSCTL, netns) != "1":
            nsenter.write_sysctl(ACCT_SYSCTL, "1", netns)
    except OSError as exc:
        where = f" in {netns}" if netns else ""
        raise OSError(exc.errno, f"net.netfilter.nf_conntrack_acct{where}: {exc.strerror or exc}") from exc


def _socket(netns: str | None, groups: int = 0) -> socket.socket:
    with nsenter.entered(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        sock.bind((0, groups))
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            with contextlib.suppress(OSError):  # FORCE needs CAP_NET_ADMIN
                sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF_BYTES)
                break
    except BaseException:
        sock.close()
        raise
    return sock


class ConntrackDumper:
    """Dumps of one namespace's conntrack table over one socket (netns: a /run/netns path, None: ours)."""

    def __init__(self, netns: str | None = None, max_entries: int = 200_000) -> None:
        self.netns = netns
        self.max_entries = max_entries
        self.malformed = 0
        self._sock: socket.socket | None = None
        self._seq = 0

    def open(self) -> None:
        self._sock = _socket(self.netns)
        self._sock.settimeout(DUMP_TIMEOUT)

    def dump(self) -> list[Connection]:
        """Every entry of the table (at most max_entries; the rest of the dump is read and dropped)."""
        if self._sock is None:
            self.open()
        assert self._sock is not None
        self._seq += 1
        self._sock.send(conntrack.dump_request(self._seq))
        found: list[Connection] = []
        while True:
            data = self._sock.recv(RECV_BYTES)
            try:
                items = list(conntrack.parse_messages(data))
            except conntrack.ConntrackError as exc:  # the framing is lost: so is the rest of the dump
                self.malformed += 1
                raise OSError(errno.EPROTO, f"conntrack dump: {exc}") from exc
            for item in items:
                if item is None:
                    self.malformed += 1
                elif isinstance(item, int):
                    if item < 0:
                        raise OSError(-item, f"conntrack dump: {os.strerror(-item)}")
                    return found
                elif len(found) < self.max_entries:
                    found.append(item)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ConntrackEvents:
    """Destroy events of one namespace, delivered from the running loop's reader callback."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.lost = 0
        self.malformed = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        sock = _socket(self.netns, groups=1 << (conntrack.NFNLGRP_CONNTRACK_DESTROY - 1))
        sock.setblocking(False)
        self._sock = sock

    def start_reading(self, deliver: Callable[[list[Connection]], None]) -> None:
        if self._sock is None:
            raise RuntimeError("the conntrack events socket is not open")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable, deliver)

    def _readable(self, deliver: Callable[[list[Connection]], None]) -> None:
        assert self._sock is not None
        for _ in range(16):  # a bounded number per wake-up: the loop's other work gets its turn
            try:
                data = self._sock.recv(RECV_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            try:
                items = list(conntrack.parse_messages(data))
            except conntrack.ConntrackError:
                self.malformed += 1
                continue
            self.malformed += sum(1 for c in items if c is None)
            ended = [c for c in items if isinstance(c, Connection)]
            if ended:
                deliver(ended)

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
