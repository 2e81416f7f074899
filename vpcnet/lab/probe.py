"""Measure reachability between lab pods with real packets.

One process probes every (source, target) pair concurrently: for each probe it enters the source pod's
network namespace just long enough to create a socket there (setns), then waits on that socket from the
event loop like any other. No process is started per pod or per probe, so a 100x100 matrix costs sockets,
not interpreters.

- TCP: connect and read the one line the pod server sends (`<namespace>/<pod>`).
- UDP: send a datagram and wait for the server's line.
- SCTP: send an INIT over a raw socket of protocol 132 and wait for the INIT-ACK (its state cookie carries
  the pod's name); then send an ABORT so conntrack forgets the attempt.

A probe only counts when the answer names the target pod, so traffic that reaches the wrong pod is not
reported as reachable. Failures are retried (the upstream NetworkPolicy tests retry too): a lost first
packet while a neighbour entry resolves should not read as a policy drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from vpcnet.lab import sctp
from vpcnet.lab.podserver import PROTOCOLS, in_netns

DEFAULT_TIMEOUT = 1.0
DEFAULT_ATTEMPTS = 2
DEFAULT_CONCURRENCY = 256


@dataclass(frozen=True)
class ProbeEndpoint:
    """A pod as the probe sees it: its name `<namespace>/<pod>`, namespace path and address."""

    name: str
    netns: str
    ip: str


@dataclass(frozen=True)
class ProbeResult:
    source: str
    target: str
    ok: bool
    detail: str  # "ok", "timeout", "refused", "answered by x/y", an errno text


@dataclass(frozen=True)
class ProbeReport:
    port: int
    protocol: str
    results: tuple[ProbeResult, ...]

    def matrix(self) -> dict[str, dict[str, bool]]:
        """The shape `vpcnet policy matrix` prints: {"<ns>/<pod>": {"<ns>/<pod>": bool}}."""
        out: dict[str, dict[str, bool]] = {}
        for result in self.results:
            out.setdefault(result.source, {})[result.target] = result.ok
        return {src: dict(sorted(row.items())) for src, row in sorted(out.items())}


class _SctpListener:
    """Raw SCTP sockets in a source namespace (IPv4, and IPv6 where the kernel has it), matching INIT-ACKs
    to the probes waiting for them."""

    def __init__(self, netns: str) -> None:
        self.socks: dict[int, socket.socket] = {}
        with in_netns(netns):
            self.socks[socket.AF_INET] = sctp.raw_socket(socket.AF_INET)
            with contextlib.suppress(OSError):
                self.socks[socket.AF_INET6] = sctp.raw_socket(socket.AF_INET6)
        self.waiting: dict[tuple[str, int, int, int], asyncio.Future[sctp.Packet]] = {}
        self.loop = asyncio.get_running_loop()
        for sock in self.socks.values():
            self.loop.add_reader(sock.fileno(), self._readable, sock)

    def sock_for(self, ip: str) -> socket.socket:
        sock = self.socks.get(_family(ip))
        if sock is None:
            raise OSError(f"no raw SCTP socket for {ip}'s family")
        return sock

    def _readable(self, sock: socket.socket) -> None:
        while True:
            try:
                src, data = sctp.recv_datagram(sock)
                packet = sctp.decode_packet(data)
            except (BlockingIOError, InterruptedError):
                return
            except sctp.SctpError:
                continue
            except OSError:
                return
            key = (src, packet.src_port, packet.dst_port, packet.vtag)
            future = self.waiting.get(key)
            if future is not None and not future.done():
                future.set_result(packet)

    def close(self) -> None:
        for sock in self.socks.values():
            self.loop.remove_reader(sock.fileno())
            sock.close()


class Prober:
    def __init__(
        self,
        port: int,
        protocol: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not a port number 1-65535")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.port = port
        self.protocol = protocol
        self.timeout = timeout
        self.attempts = attempts
        self.limit = asyncio.Semaphore(concurrency)
        self.sctp_listeners: dict[str, _SctpListener] = {}
        self.sctp_ports = itertools.cycle(range(random.randint(33000, 60000), 61000))

    async def run(self, sources: Sequence[ProbeEndpoint], targets: Sequence[ProbeEndpoint]) -> ProbeReport:
        try:
            if self.protocol == "SCTP":
                for source in sources:
                    if source.netns not in self.sctp_listeners:
                        # A source whose namespace is gone gets no listener; its probes report why.
                        with contextlib.suppress(OSError):
                            self.sctp_listeners[source.netns] = _SctpListener(source.netns)
            results = await asyncio.gather(*(self.probe(s, t) for s in sources for t in targets))
        finally:
            for listener in self.sctp_listeners.values():
                listener.close()
            self.sctp_listeners.clear()
        return ProbeReport(self.port, self.protocol, tuple(results))

    async def probe(self, source: ProbeEndpoint, target: ProbeEndpoint) -> ProbeResult:
        detail = "not tried"
        for _ in range(self.attempts):
            async with self.limit:
                detail = await self.once(source, target)
            if detail == "ok":
                return ProbeResult(source.name, target.name, True, detail)
        return ProbeResult(source.name, target.name, False, detail)

    async def once(self, source: ProbeEndpoint, target: ProbeEndpoint) -> str:
        try:
            if self.protocol == "TCP":
                reply = await asyncio.wait_for(self._tcp(source, target), self.timeout)
            elif self.protocol == "UDP":
                reply = await asyncio.wait_for(self._udp(source, target), self.timeout)
            else:
                reply = await self._sctp(source, target)
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return exc.strerror or str(exc)
        if reply.strip() != target.name.encode():
            return f"answered by {reply.strip().decode(errors='replace') or 'nobody'}"
        return "ok"

    async def _tcp(self, source: ProbeEndpoint, target: ProbeEndpoint) -> bytes:
        loop = asyncio.get_running_loop()
        with in_netns(source.netns):
            sock = socket.socket(_family(target.ip), socket.SOCK_STREAM)
        with sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (target.ip, self.port))
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = await loop.sock_recv(sock, 512)
                if not chunk:
                    break
                reply += chunk
            return reply

    async def _udp(self, source: ProbeEndpoint, target: ProbeEndpoint) -> bytes:
        loop = asyncio.get_running_loop()
        with in_netns(source.netns):
            sock = socket.socket(_family(target.ip), socket.SOCK_DGRAM)
        with sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (target.ip, self.port))
            await loop.sock_sendall(sock, b"probe\n")
            return await loop.sock_recv(sock, 512)

    async def _sctp(self, source: ProbeEndpoint, target: ProbeEndpoint) -> bytes:
        listener = self.sctp_listeners.get(source.netns)
        if listener is None:
            raise OSError(f"no raw SCTP socket in {source.netns}")
        local_port = next(self.sctp_ports)
        tag = random.randint(1, 2**32 - 1)
        key = (target.ip, self.port, local_port, tag)
        future: asyncio.Future[sctp.Packet] = asyncio.get_running_loop().create_future()
        listener.waiting[key] = future
        try:
            listener.sock_for(target.ip).sendto(
                sctp.init_packet(local_port, self.port, tag).encode(), (target.ip, 0)
            )
            answer = await asyncio.wait_for(future, self.timeout)
        finally:
            listener.waiting.pop(key, None)
        if answer.first_chunk_type == sctp.CHUNK_ABORT:
            raise ConnectionRefusedError("association aborted by the peer")
        if answer.first_chunk_type != sctp.CHUNK_INIT_ACK:
            return b""
        try:
            ack = sctp.Init.decode(answer.chunks[0])
        except sctp.SctpError:
            return b""
        with contextlib.suppress(OSError):
            abort = sctp.abort_packet(local_port, self.port, ack.initiate_tag)
            listener.sock_for(target.ip).sendto(abort.encode(), (target.ip, 0))
        return ack.cookie or b""


def _family(ip: str) -> int:
    """The socket family for the target's address (IPv6 pods: the VPC CNI's IPv6 mode)."""
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def probe_matrix(
    sources: Sequence[ProbeEndpoint],
    targets: Sequence[ProbeEndpoint],
    port: int,
    protocol: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> ProbeReport:
    prober = Prober(port, protocol, timeout=timeout, attempts=attempts, concurrency=concurrency)
    return await prober.run(sources, targets)
