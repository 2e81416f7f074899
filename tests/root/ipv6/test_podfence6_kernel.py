"""The pod fence in both families on a real kernel (vpcnet/dataplane/podfence.py), in three namespaces of
our own: a node, a pod on a veth of the fenced prefix, and a service host behind the node holding the
"etcd" addresses (forwarded, so FORWARD's jump is the one exercised); IMDS's IPv6 address sits on the
node itself (delivered, so INPUT's jump is). Every fenced port has a listener, so a reset can only come
from the fence. Then `vpcnet uninstall` takes both families' chains away and the pod gets through again."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from vpcnet.agent.uninstall import uninstall
from vpcnet.dataplane.podfence import FENCE_CHAIN, IMDS_ADDRESS6, PodFence, apply_pod_fence

pytestmark = pytest.mark.root

# Private and ULA addresses; the three namespaces are wired only to each other.
POD4, NODE4, SVC4 = "10.231.1.2", "10.231.1.1", "10.231.2.2"
POD6, NODE6, SVC6 = "fd00:f6:1::2", "fd00:f6:1::1", "fd00:f6:2::2"
ETCD_PORT, OPEN_PORT = 2379, 2381

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("failed:", type(exc).__name__, exc)
"""

# Accepts and closes, on [::] (both families) at each port given.
LISTEN = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
"""


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def connect_from(netns: str, address: str, port: int, timeout: float = 10.0) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, address, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=True,
    ).stdout.strip()


@dataclass
class Net:
    prefix: str
    listeners: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def node(self) -> str:
        return f"{self.prefix}-n"

    @property
    def pod(self) -> str:
        return f"{self.prefix}-p"

    @property
    def svc(self) -> str:
        return f"{self.prefix}-s"

    def up(self) -> None:
        for ns in (self.node, self.pod, self.svc):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        self._link(self.pod, f"{self.prefix}0", (POD4, NODE4, "24"), (POD6, NODE6, "64"))
        self._link(self.svc, f"{self.prefix}s", (SVC4, "10.231.2.1", "24"), (SVC6, "fd00:f6:2::1", "64"))
        sh("ip", "-n", self.node, "addr", "add", f"{IMDS_ADDRESS6}/128", "dev", "lo")
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            sh("ip", "netns", "exec", self.node, "sysctl", "-qw", key)
        for ns, ports in ((self.svc, (ETCD_PORT, OPEN_PORT)), (self.node, (80,))):
            argv = ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, *map(str, ports)]
            self.listeners.append(subprocess.Popen(argv))

    def _link(self, ns: str, node_side: str, v4: tuple[str, str, str], v6: tuple[str, str, str]) -> None:
        """A veth from the node to `ns`: eth0 in `ns` with its default routes through the node."""
        sh(
            "ip",
            "-n",
            self.node,
            "link",
            "add",
            node_side,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        for (local, gateway, plen), family in ((v4, "-4"), (v6, "-6")):
            sh("ip", "-n", ns, "addr", "add", f"{local}/{plen}", "dev", "eth0", "nodad")
            sh("ip", "-n", self.node, "addr", "add", f"{gateway}/{plen}", "dev", node_side, "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.node, "link", "set", node_side, "up")
            sh("ip", "-n", ns, family, "route", "add", "default", "via", gateway)

    def down(self) -> None:
        for proc in self.listeners:
            proc.kill()
            proc.wait()
        for ns in (self.node, self.pod, self.svc):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net("pf6" + secrets.token_hex(2))
    try:
        n.up()
        yield n
    finally:
        n.down()


def wait_connected(netns: str, address: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while (got := connect_from(netns, address, port, 2.0)) != "connected":
        assert time.monotonic() < deadline, f"{address} port {port} from {netns}: {got}"
        time.sleep(0.2)


def fence_chains(netns: str) -> dict[str, str]:
    return {
        cmd: sh("ip", "netns", "exec", netns, cmd, "-t", "filter")
        for cmd in ("iptables-save", "ip6tables-save")
    }


def test_a_pods_ipv6_connections_to_fenced_addresses_are_reset_and_the_nodes_are_not(
    net: Net, tmp_path: Path
) -> None:
    etcd = ((IPv4Address(SVC4), ETCD_PORT), (IPv6Address(SVC6), ETCD_PORT))
    fenced = [(SVC6, ETCD_PORT), (str(IMDS_ADDRESS6), 80), (SVC4, ETCD_PORT)]
    for address, port in [*fenced, (SVC6, OPEN_PORT)]:  # listeners up, paths work, nothing fenced yet
        wait_connected(net.pod, address, port)
    node_ns = f"/run/netns/{net.node}"

    # IPv4 pods only: the IPv6 addresses stay open (nothing in ip6tables), the IPv4 one is fenced.
    asyncio.run(apply_pod_fence(PodFence(net.prefix, etcd, block_imds=True), node_ns))
    assert FENCE_CHAIN not in fence_chains(net.node)["ip6tables-save"]
    assert connect_from(net.pod, SVC4, ETCD_PORT) == "refused"
    assert connect_from(net.pod, SVC6, ETCD_PORT) == "connected"

    fence = PodFence(net.prefix, etcd, block_imds=True, ipv6=True)
    for _ in range(2):  # idempotent: a second apply adds no second jump
        asyncio.run(apply_pod_fence(fence, node_ns))
    for command, saved in fence_chains(net.node).items():
        assert saved.count(f"-j {FENCE_CHAIN}") == 2, (command, saved)  # FORWARD and INPUT, once each
    for address, port in fenced:
        started = time.monotonic()
        assert connect_from(net.pod, address, port) == "refused", (address, port)
        assert time.monotonic() - started < 8, "a reset, not a drop"  # well under the client's timeout
        assert connect_from(net.node, address, port) == "connected", (address, port)
    assert connect_from(net.pod, SVC6, OPEN_PORT) == "connected"  # only the fenced port

    removed = uninstall(tmp_path / "bin", tmp_path / "conf", netns=net.node)
    for command in ("iptables", "ip6tables"):
        assert f"{command} filter {FENCE_CHAIN}" in removed.chains, removed.chains
    for command, saved in fence_chains(net.node).items():
        assert FENCE_CHAIN not in saved, (command, saved)
    for address, port in fenced:
        assert connect_from(net.pod, address, port) == "connected", (address, port)
