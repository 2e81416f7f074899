"""A tiny node for policy tests: a "node" netns with pod netns on veths named like the CNI names them.

Everything carries a random "vt" + 4 letters prefix and lives only in namespaces made here; probes are
real TCP/UDP packets from sockets opened inside the pods' namespaces (setns on this thread, briefly).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import socket
import string
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
TIMEOUT = 0.3


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@contextmanager
def entered(netns: str) -> Iterator[None]:
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        if _libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back home")
        os.close(target)
        os.close(home)


def veth_name(prefix: str, namespace: str, pod: str) -> str:
    """The CNI's host-side veth name: prefix + sha1("<ns>.<pod>")[:11]."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


@dataclass
class Pod:
    name: str
    netns: str
    ip: str
    veth: str


@dataclass
class Node:
    tag: str
    netns: str
    pods: dict[str, Pod] = field(default_factory=dict)
    _next: int = 2

    def add_pod(self, name: str, if_prefix: str = "eni") -> Pod:
        netns = f"{self.tag}-{name}"
        ip = f"10.77.0.{self._next}"
        self._next += 1
        veth = veth_name(if_prefix, self.tag, name)
        sh("ip", "netns", "add", netns)
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
        sh("ip", "-n", self.netns, "route", "add", f"{ip}/32", "dev", veth)
        batch = "\n".join(
            [
                "link set lo up",
                "link set eth0 up",
                f"addr add {ip}/32 dev eth0",
                "route add 169.254.1.1 dev eth0 scope link",
                "route add default via 169.254.1.1 dev eth0",
                f"neigh add 169.254.1.1 lladdr {mac} dev eth0 nud permanent",
            ]
        )
        sh("ip", "-n", netns, "-batch", "-", stdin=batch + "\n")
        pod = Pod(name, netns, ip, veth)
        self.pods[name] = pod
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
        if source_ip:
            client.bind((source_ip, 0))
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
