"""A netlink socket bound to one NFLOG group, read on the asyncio loop (vpcnet.dataplane.nflog's I/O half).

The kernel queues logged packets into the socket's receive buffer; when the agent falls behind, the kernel
drops messages and the next read fails with ENOBUFS, which is counted (`lost`) and otherwise ignored: a
flow log under a flood loses samples, never the agent's other work. Only one socket per network namespace
can bind a group (EBUSY for a second one).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

from vpcnet.dataplane import nflog, nsenter
from vpcnet.dataplane.nflog import LoggedPacket

RECV_BYTES = 1 << 18
RCVBUF_BYTES = 1 << 22  # the kernel doubles it; more than a second of 10k packets/s at our snaplen


class NflogSocket:
    def __init__(self, group: int, snaplen: int, *, netns: str | None = None) -> None:
        self.group = group
        self.snaplen = snaplen
        self.netns = netns  # a path (/run/netns/NAME): open the socket there; None: this namespace
        self.lost = 0  # ENOBUFS: the kernel dropped messages for us
        self.malformed = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Bind the group (raises OSError: EBUSY if another socket of this namespace has it)."""
        if self.netns is not None:
            with nsenter.entered(self.netns):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
        else:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))
            for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                with contextlib.suppress(OSError):  # FORCE needs CAP_NET_ADMIN
                    sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF_BYTES)
                    break
            sock.settimeout(5)
            for message in nflog.bind_messages(self.group, self.snaplen):
                sock.send(message)
                self._expect_ack(sock)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    @staticmethod
    def _expect_ack(sock: socket.socket) -> None:
        data = sock.recv(65536)
        for msg_type, _flags, payload in nflog.messages(data):
            if msg_type == nflog.NLMSG_ERROR:
                code = nflog.error_code(payload)
                if code:
                    raise OSError(-code, f"NFLOG config: {os.strerror(-code)}")
                return
        raise OSError(errno.EPROTO, "NFLOG config: no acknowledgement")

    def start_reading(self, deliver: Callable[[list[LoggedPacket]], None]) -> None:
        """Call deliver with the packets of each datagram, from the running loop's reader callback."""
        if self._sock is None:
            raise RuntimeError("the NFLOG socket is not open")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable, deliver)

    def _readable(self, deliver: Callable[[list[LoggedPacket]], None]) -> None:
        assert self._sock is not None
        # A bounded number of datagrams per wake-up: the loop's other work gets its turn in between.
        for _ in range(16):
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
                packets = list(nflog.parse_packets(data))
            except nflog.NflogError:
                self.malformed += 1
                continue
            if packets:
                deliver(packets)

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
        with contextlib.suppress(OSError):
            self._sock.setblocking(True)
            self._sock.settimeout(1)
            self._sock.send(nflog.unbind_message(self.group))
        self._sock.close()
        self._sock = None
