"""A tiny node for policy tests: a "node" netns with pod netns on veths named like the CNI names them.
Pods are IPv4, IPv6 (add_pod(ip6=..., ipv4=False)) or dual stack (ip and ip6), wired as Calico mode wires
them: a /32 via 169.254.1.1 and a /128 via fe80::1, both answered by the host veth's MAC.

Everything carries a random "vt" + 4 letters prefix and lives only in namespaces made here; probes are
real TCP/UDP packets from sockets opened inside the pods' namespaces (setns on this thread, briefly).
"""

from __future__ import annotations

import errno
import os
import random
import selectors
import socket
import string
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from vpcnet.dataplane import nsenter
from vpcnet.dataplane.names import host_veth_name

TIMEOUT = 0.5  # a denied probe waits this long; an allowed one returns at once


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """This thread inside the named namespace for the body (sockets made there stay there)."""
    with nsenter.entered(f"/run/netns/{netns}"):
        yield


@dataclass
class Pod:
    name: str
    netns: str
    ip: str  # the first address: IPv4, or IPv6 for an IPv6-only pod
    veth: str
    ip6: str | None = None

    def address(self, version: int) -> str:
        if version == 6 and self.ip6 is not None:
            return self.ip6
        if version == 4 and ":" not in self.ip:
            return self.ip
        raise ValueError(f"pod {self.name} has no IPv{version} address")


@dataclass
class Node:
    tag: str
    netns: str
    pods: dict[str, Pod] = field(default_factory=dict)
    _next: int = 2

    def add_pod(
        self,
        name: str,
        if_prefix: str = "eni",
        k8s_namespace: str | None = None,
        ip: str | None = None,
        ip6: str | None = None,
        ipv4: bool = True,
    ) -> Pod:
        """A pod netns wired to the node; its veth is named from "<k8s_namespace>.<name>" (default: tag).
        ip6: an IPv6 address as well (or alone, with ipv4=False)."""
        netns = f"{self.tag}-{k8s_namespace}-{name}" if k8s_namespace else f"{self.tag}-{name}"
        if ip is None and ipv4:
            ip = f"10.77.0.{self._next}"
            self._next += 1
        veth = host_veth_name(if_prefix, k8s_namespace or self.tag, name)
        sh("ip", "netns", "add", netns)
        # No duplicate address detection: eth0 is made in the namespace and takes its defaults.
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        sh(
            "ip",
            "-n",
            self.netns,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns,
        )
        mac = sh("ip", "-n", self.netns, "-br", "link", "show", veth).split()[2]
        sh("ip", "-n", self.netns, "link", "set", veth, "up")
        batch = ["link set lo up", "link set eth0 up"]
        if ip is not None:
            sh("ip", "-n", self.netns, "route", "add", f"{ip}/32", "dev", veth)
            batch += [
                f"addr add {ip}/32 dev eth0",
                "route add 169.254.1.1 dev eth0 scope link",
                "route add default via 169.254.1.1 dev eth0",
                f"neigh add 169.254.1.1 lladdr {mac} dev eth0 nud permanent",
            ]
        if ip6 is not None:
            pod_mac = sh("ip", "-n", netns, "-br", "link", "show", "eth0").split()[2]
            # The node knows the pod's MAC (as the CNI writes it) and the pod its gateway's: no neighbour
            # discovery crosses the policy chains.
            sh("ip", "-n", self.netns, "-6", "route", "add", f"{ip6}/128", "dev", veth)
            sh(
                "ip",
                "-n",
                self.netns,
                "-6",
                "neigh",
                "add",
                ip6,
                "lladdr",
                pod_mac,
                "dev",
                veth,
                "nud",
                "permanent",
            )
            batch += [
                f"addr add {ip6}/128 dev eth0 nodad",
                f"neigh add fe80::1 lladdr {mac} dev eth0 nud permanent",
                "route add ::/0 via fe80::1 dev eth0",
            ]
        sh("ip", "-n", netns, "-batch", "-", stdin="\n".join(batch) + "\n")
        pod = Pod(name, netns, ip if ip is not None else str(ip6), veth, ip6)
        self.pods[netns] = pod  # by netns: pod names repeat across Kubernetes namespaces
        return pod

    def remove(self) -> None:
        for pod in self.pods.values():
            sh("ip", "netns", "del", pod.netns, check=False)
        sh("ip", "netns", "del", self.netns, check=False)


@contextmanager
def node() -> Iterator[Node]:
    tag = "vt" + "".join(random.choices(string.ascii_lowercase, k=4))
    made = Node(tag, f"{tag}-node")
    try:
        sh("ip", "netns", "add", made.netns)
        # The node's own address (on lo: this kernel has no dummy links) is the source of its ARP requests.
        sh("ip", "-n", made.netns, "-batch", "-", stdin="link set lo up\naddr add 10.77.255.1/32 dev lo\n")
        sh("ip", "netns", "exec", made.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for setting in ("net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.accept_dad=0"):
            sh("ip", "netns", "exec", made.netns, "sysctl", "-qw", setting)
        yield made
    finally:
        made.remove()


def tcp_connects(src: Pod, dst: Pod, port: int, source_ip: str | None = None) -> bool:
    """A real TCP handshake from src to dst:port (dst listens); False when it times out or is refused."""
    with entered(dst.netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with entered(src.netns):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(8)
        client.settimeout(TIMEOUT)
        client.bind((source_ip or src.ip, fresh_source_port()))
        try:
            client.connect((dst.ip, port))
        except OSError:
            return False
        return True
    finally:
        client.close()
        server.close()


def udp_round_trip(src: Pod, dst: Pod, port: int) -> bool:
    """A datagram from src to dst:port and the reply back (the reply rides on conntrack)."""
    with entered(dst.netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with entered(src.netns):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind(("0.0.0.0", port))
        server.settimeout(TIMEOUT)
        client.settimeout(TIMEOUT)
        client.bind((src.ip, fresh_source_port()))
        client.sendto(b"ping", (dst.ip, port))
        try:
            data, peer = server.recvfrom(64)
        except TimeoutError:
            return False
        server.sendto(b"pong:" + data, peer)
        try:
            reply, _ = client.recvfrom(64)
        except TimeoutError:
            return False
        return reply == b"pong:ping"
    finally:
        client.close()
        server.close()


_source_ports = iter(range(0, 10**9))


def fresh_source_port() -> int:
    """A source port not used by any recent probe: every probe is a new flow for conntrack, never a
    leftover entry of an earlier probe (which policy would rightly let through as established)."""
    return 20000 + next(_source_ports) % 40000


def _socket_in(netns: str, kind: int, proto: int = 0, family: int = socket.AF_INET) -> socket.socket:
    with entered(netns):
        sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    return sock


def probe_matrix(
    pods: Sequence[Pod], port: int, protocol: str, timeout: float = 0.3, version: int = 4
) -> dict[str, dict[str, bool]]:
    """Every ordered pair (src != dst) probed at once with real packets between the pods' addresses of
    one family; {src name: {dst name: reached}}.

    TCP: a handshake completes. UDP: a datagram arrives and its reply comes back. SCTP (this kernel has no
    SCTP sockets): an INIT sent from a raw socket arrives at the destination's raw socket.
    """
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    anywhere = "::" if version == 6 else "0.0.0.0"
    ip = {p.name: p.address(version) for p in pods}
    result = {s.name: {d.name: False for d in pods if d is not s} for s in pods}
    opened: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        if protocol == "TCP":
            for dst in pods:
                server = _socket_in(dst.netns, socket.SOCK_STREAM, family=family)
                opened.append(server)
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind((anywhere, port))
                server.listen(64)
            for src in pods:
                for dst in pods:
                    if src is dst:
                        continue
                    client = _socket_in(src.netns, socket.SOCK_STREAM, family=family)
                    opened.append(client)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    client.bind((ip[src.name], fresh_source_port()))
                    code = client.connect_ex((ip[dst.name], port))
                    if code not in (0, errno.EINPROGRESS):
                        continue
                    sel.register(client, selectors.EVENT_WRITE, (src.name, dst.name))
            deadline = time.monotonic() + timeout
            while sel.get_map() and (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    src_name, dst_name = key.data
                    result[src_name][dst_name] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    sel.unregister(sock)
        elif protocol == "UDP":
            by_ip = {address: name for name, address in ip.items()}
            for dst in pods:
                server = _socket_in(dst.netns, socket.SOCK_DGRAM, family=family)
                opened.append(server)
                server.bind((anywhere, port))
                sel.register(server, selectors.EVENT_READ, ("server", dst.name))
            for src in pods:
                for dst in pods:
                    if src is dst:
                        continue
                    client = _socket_in(src.netns, socket.SOCK_DGRAM, family=family)
                    opened.append(client)
                    client.bind((ip[src.name], fresh_source_port()))
                    client.sendto(f"{src.name}>{dst.name}".encode(), (ip[dst.name], port))
                    sel.register(client, selectors.EVENT_READ, ("client", src.name))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data, peer = sock.recvfrom(256)
                    if key.data[0] == "server":
                        if by_ip.get(peer[0]) is not None:
                            sock.sendto(b"reply:" + data, peer)
                    elif data.startswith(b"reply:"):
                        src_name, dst_name = data[6:].decode().split(">")
                        result[src_name][dst_name] = True
        elif protocol == "SCTP":
            from vpcnet.lab import sctp

            by_ip = {address: name for name, address in ip.items()}
            for dst in pods:
                raw = _socket_in(dst.netns, socket.SOCK_RAW, sctp.IPPROTO_SCTP, family)
                opened.append(raw)
                sel.register(raw, selectors.EVENT_READ, dst.name)
            for src in pods:
                raw = _socket_in(src.netns, socket.SOCK_RAW, sctp.IPPROTO_SCTP, family)
                opened.append(raw)
                for dst in pods:
                    if src is not dst:
                        tag = struct.unpack("!I", os.urandom(4))[0] | 1
                        packet = sctp.init_packet(fresh_source_port(), port, tag)
                        raw.sendto(packet.encode(), (ip[dst.name], 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    source, payload = sctp.recv_datagram(sock)
                    packet = sctp.decode_packet(payload, verify_checksum=False)
                    src_name = by_ip.get(source)
                    is_init = packet.dst_port == port and packet.first_chunk_type == sctp.CHUNK_INIT
                    if is_init and src_name and src_name != key.data:
                        result[src_name][key.data] = True
        else:
            raise ValueError(f"protocol {protocol!r}: TCP, UDP or SCTP")
    finally:
        sel.close()
        for sock in opened:
            sock.close()
    return result


def tcp_reaches(src: Pod, dst: Pod, port: int, source_ip: str | None = None, attempts: int = 3) -> bool:
    """For expected reachability: a slow handshake on a loaded machine gets more tries (a packet that
    policy drops never gets through, however often it is tried)."""
    return any(tcp_connects(src, dst, port, source_ip) for _ in range(attempts))


def udp_reaches(src: Pod, dst: Pod, port: int, attempts: int = 3) -> bool:
    return any(udp_round_trip(src, dst, port) for _ in range(attempts))
