"""The small server every lab pod runs: it answers on each containerPort, over TCP, UDP and SCTP.

One asyncio process per lab node serves all the pods of that node, rather than one process per pod: a
stdlib-only `python -I -S` costs about 10 MB of resident memory, so 100 pods a node would cost a gigabyte and
an interpreter start per pod, while one process holds a few sockets per pod for almost nothing. A socket
belongs to the network namespace it was created in, so the server enters the pod's namespace (setns),
creates and binds its sockets there, and returns to its own namespace; the event loop then serves them all.

- TCP: accept, send one line `<namespace>/<pod>`, close.
- UDP: answer each datagram with that line.
- SCTP: one raw socket of protocol 132 per pod (the kernel has no SCTP stack); an INIT to a served port gets
  an INIT-ACK whose state cookie is that line. Other SCTP packets are ignored.

A socket keeps its namespace alive, so a pod must be stopped here before (or when) its namespace is removed;
the kubelet does that. The server is driven over a unix socket, one JSON object per line each way:
{"op": "serve", "pod": "ns/name", "netns": "/run/netns/...", "ports": [{"port": 80, "protocol": "TCP"}]},
{"op": "stop", "pod": "ns/name"}, {"op": "list"}, {"op": "ping"}, {"op": "shutdown"}.
Answers are {"ok": true, ...} or {"ok": false, "error": "..."}.

Standard library only (vpcnet.dataplane.nsenter, which it uses to enter namespaces, is too), so that the
process starts fast and stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from vpcnet.dataplane import nsenter
from vpcnet.lab import sctp

log = logging.getLogger("vpcnet.podserver")

PROTOCOLS = ("TCP", "UDP", "SCTP")


def _listen(kind: int, port: int) -> list[socket.socket]:
    """Sockets on 0.0.0.0:port and, where the pod has IPv6 (IPv6 pods), on [::]:port (IPv6 only, so the
    IPv4 socket stays what it always was)."""
    out: list[socket.socket] = []
    try:
        for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            sock = socket.socket(family, kind)
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
                sock.setblocking(False)
            except OSError:
                sock.close()
                if family == socket.AF_INET:
                    raise
                continue  # IPv6 off in this pod: IPv4 only, as before
            out.append(sock)
    except BaseException:
        for sock in out:
            sock.close()
        raise
    return out


@contextlib.contextmanager
def in_netns(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the body with the calling thread inside the network namespace at `path` (nsenter.entered);
    sockets created there stay in that namespace. A thread that cannot return to its own namespace ends
    the process (SystemExit): the lab's callers treat OSError as a failed probe or request and would carry
    on in the wrong namespace."""
    try:
        with nsenter.entered(path):
            yield
    except nsenter.NamespaceLost as exc:  # pragma: no cover - the kernel refused to let us back
        raise SystemExit(str(exc)) from exc


@dataclass(frozen=True, order=True)
class PortSpec:
    port: int
    protocol: str

    @classmethod
    def parse(cls, raw: Any, where: str) -> PortSpec:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object with port and protocol")
        port = raw.get("port")
        protocol = raw.get("protocol", "TCP")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"{where}.port: {port!r} is not a port number 1-65535")
        if protocol not in PROTOCOLS:
            raise ValueError(f"{where}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        return cls(port, protocol)


class _UdpAnswer(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors for earlier replies: nothing to do
        pass


@dataclass
class _ServedPod:
    name: str
    netns: str
    netns_inode: int
    ports: frozenset[PortSpec]
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    raws: list[socket.socket] = field(default_factory=list)  # raw SCTP sockets: IPv4, and IPv6 if it is on

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for server in self.servers:
            server.close()
        for transport in self.transports:
            transport.close()
        for raw in self.raws:
            loop.remove_reader(raw.fileno())
            raw.close()
        self.raws.clear()


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


class PodServer:
    """All the pods of one node. `serve` is idempotent: the same pod, namespace and ports change nothing."""

    def __init__(self) -> None:
        self.pods: dict[str, _ServedPod] = {}

    async def serve(self, name: str, netns: str, ports: list[PortSpec]) -> bool:
        """Serve `ports` for pod `name` in namespace `netns`; returns whether anything changed."""
        inode = _netns_inode(netns)
        wanted = frozenset(ports)
        current = self.pods.get(name)
        if current is not None:
            if current.netns_inode == inode and current.ports == wanted:
                return False
            self.stop(name)
        pod = _ServedPod(name, netns, inode, wanted)
        try:
            await self._open(pod)
        except BaseException:
            pod.close(asyncio.get_running_loop())
            raise
        self.pods[name] = pod
        return True

    def stop(self, name: str) -> bool:
        pod = self.pods.pop(name, None)
        if pod is None:
            return False
        pod.close(asyncio.get_running_loop())
        return True

    async def _open(self, pod: _ServedPod) -> None:
        loop = asyncio.get_running_loop()
        reply = f"{pod.name}\n".encode()
        sctp_ports = frozenset(p.port for p in pod.ports if p.protocol == "SCTP")
        # Create every socket inside the pod's namespace in one go; no await happens in there, so nothing
        # else on this loop runs while the thread is in the pod's namespace.
        stream_socks: list[socket.socket] = []
        dgram_socks: list[socket.socket] = []
        try:
            with in_netns(pod.netns):
                for spec in sorted(pod.ports):
                    if spec.protocol == "TCP":
                        stream_socks += _listen(socket.SOCK_STREAM, spec.port)
                    elif spec.protocol == "UDP":
                        dgram_socks += _listen(socket.SOCK_DGRAM, spec.port)
                if sctp_ports:
                    pod.raws.append(sctp.raw_socket(socket.AF_INET))
                    with contextlib.suppress(OSError):  # a kernel without IPv6
                        pod.raws.append(sctp.raw_socket(socket.AF_INET6))
        except BaseException:
            for sock in stream_socks + dgram_socks + pod.raws:
                sock.close()
            pod.raws.clear()
            raise

        async def answer_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(reply)
                await writer.drain()
            except OSError as exc:  # the prober went away before the line: nothing left to answer
                log.debug("tcp answer for %s not sent: %s", pod.name, exc)
            finally:
                writer.close()

        for sock in stream_socks:
            pod.servers.append(await asyncio.start_server(answer_tcp, sock=sock))
        for sock in dgram_socks:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpAnswer(reply), sock=sock)
            pod.transports.append(transport)
        for raw in pod.raws:
            loop.add_reader(raw.fileno(), _answer_sctp, raw, sctp_ports, reply.rstrip(b"\n"))

    def listing(self) -> dict[str, Any]:
        return {
            name: {
                "netns": pod.netns,
                "ports": [{"port": p.port, "protocol": p.protocol} for p in sorted(pod.ports)],
            }
            for name, pod in sorted(self.pods.items())
        }

    def close_all(self) -> None:
        for name in list(self.pods):
            self.stop(name)


def _answer_sctp(raw: socket.socket, ports: frozenset[int], cookie: bytes) -> None:
    while True:
        try:
            src, data = sctp.recv_datagram(raw)
        except (BlockingIOError, InterruptedError):
            return
        except sctp.SctpError:
            continue  # a real SCTP stack silently discards what it cannot parse
        except OSError as exc:
            log.warning("sctp recv: %s", exc)
            return
        try:
            packet = sctp.decode_packet(data)
            if packet.first_chunk_type != sctp.CHUNK_INIT or packet.vtag != 0 or packet.dst_port not in ports:
                continue
            answer = sctp.init_ack_packet(packet, random.randint(1, 2**32 - 1), cookie)
        except sctp.SctpError:
            continue  # a real SCTP stack silently discards what it cannot parse
        try:
            raw.sendto(answer.encode(), (src, 0))
        except OSError as exc:  # the prober retries its INIT; one lost answer is a lost packet
            log.debug("sctp INIT-ACK to %s not sent: %s", src, exc)


class ControlServer:
    """The unix-socket front of a PodServer."""

    def __init__(self, pods: PodServer) -> None:
        self.pods = pods
        self.stopping = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await self.dispatch(json.loads(line))
                except KeyError as exc:
                    answer = {"ok": False, "error": f"missing field {exc}"}
                except Exception as exc:  # any bad request gets an answer; the server stays up
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (OSError, asyncio.CancelledError) as exc:  # the client hung up, or the server is stopping
            log.debug("control connection ended: %r", exc)
        finally:
            writer.close()

    async def dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise ValueError("request must be a JSON object")
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "serve":
            name, netns, raw_ports = request["pod"], request["netns"], request["ports"]
            if not isinstance(name, str) or not isinstance(netns, str) or not isinstance(raw_ports, list):
                raise ValueError("serve needs pod (string), netns (path) and ports (list)")
            ports = [PortSpec.parse(p, f"ports[{i}]") for i, p in enumerate(raw_ports)]
            changed = await self.pods.serve(name, netns, ports)
            return {"ok": True, "changed": changed}
        if op == "stop":
            return {"ok": True, "changed": self.pods.stop(str(request["pod"]))}
        if op == "list":
            return {"ok": True, "pods": self.pods.listing()}
        if op == "shutdown":
            self.stopping.set()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}; expected ping, serve, stop, list or shutdown")


async def run(socket_path: Path) -> None:
    pods = PodServer()
    control = ControlServer(pods)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if PodServerClient(socket_path, timeout=2.0).alive():
        raise SystemExit(f"a pod server already answers on {socket_path}")
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    old_umask = os.umask(0o077)  # the control socket is root's only
    try:
        server = await asyncio.start_unix_server(control.handle, path=str(socket_path))
    finally:
        os.umask(old_umask)
    loop = asyncio.get_running_loop()
    for signum in (15, 2):
        loop.add_signal_handler(signum, control.stopping.set)
    log.info("pod server %d listening on %s", os.getpid(), socket_path)
    try:
        await control.stopping.wait()
    finally:
        server.close()
        pods.close_all()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


class PodServerError(RuntimeError):
    pass


class PodServerClient:
    """Talks to a node's pod server; used by the kubelet."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data) if data else {"ok": False, "error": "pod server closed the connection"}
        if not isinstance(answer, dict) or not answer.get("ok"):
            raise PodServerError(f"pod server {self.socket_path}: {answer.get('error', answer)}")
        return answer

    def alive(self) -> bool:
        try:
            self.request({"op": "ping"})
        except (OSError, ValueError, PodServerError):
            return False
        return True

    def serve(self, pod: str, netns: str, ports: list[PortSpec]) -> bool:
        payload = {
            "op": "serve",
            "pod": pod,
            "netns": netns,
            "ports": [{"port": p.port, "protocol": p.protocol} for p in ports],
        }
        return bool(self.request(payload)["changed"])

    def stop(self, pod: str) -> bool:
        return bool(self.request({"op": "stop", "pod": pod})["changed"])

    def listing(self) -> dict[str, Any]:
        pods = self.request({"op": "list"})["pods"]
        assert isinstance(pods, dict)
        return pods

    def shutdown(self) -> None:
        with contextlib.suppress(OSError, PodServerError):
            self.request({"op": "shutdown"})


def start_pod_server(
    socket_path: Path,
    log_path: Path,
    netns: str | None = None,
    timeout: float = 10.0,
    pid_path: Path | None = None,
) -> PodServerClient:
    """Start a pod server (inside network namespace `netns`, a name under /run/netns, when given) unless one
    already answers on `socket_path`; returns its client once it answers. Its pid goes to `pid_path`, and its
    command line names `socket_path` (so a pid file check can tell it is still ours)."""
    client = PodServerClient(socket_path)
    if client.alive():
        return client
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    # One starter at a time (threads of one kubelet, or two kubelets): the others find it running.
    with open(socket_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if client.alive():
            return client
        return _spawn(client, log_path, netns, timeout, pid_path)


def _spawn(
    client: PodServerClient, log_path: Path, netns: str | None, timeout: float, pid_path: Path | None
) -> PodServerClient:
    socket_path = client.socket_path
    command = [sys.executable, "-m", "vpcnet.lab.podserver", "--socket", str(socket_path)]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    if pid_path is not None:
        pid_path.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.alive():
            return client
        if process.poll() is not None:
            raise PodServerError(f"pod server exited with {process.returncode}; see {log_path}")
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise PodServerError(f"pod server did not answer on {socket_path} within {timeout} s; see {log_path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", required=True, type=Path, help="control socket path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(run(args.socket))


if __name__ == "__main__":
    main()
