"""The pod server and the probe, with real packets between two namespaces this test makes itself."""

from __future__ import annotations

import asyncio
import random
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpcnet.lab import procs
from vpcnet.lab.podserver import PodServerClient, PortSpec, start_pod_server
from vpcnet.lab.probe import ProbeEndpoint, probe_matrix

pytestmark = pytest.mark.root

PORTS = [PortSpec(80, "TCP"), PortSpec(80, "UDP"), PortSpec(80, "SCTP"), PortSpec(81, "TCP")]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class TwoPods:
    def __init__(self, prefix: str, client: PodServerClient) -> None:
        self.prefix = prefix
        self.client = client
        self.a = ProbeEndpoint("x/a", f"/run/netns/{prefix}-a", "10.251.0.1")
        self.b = ProbeEndpoint("y/b", f"/run/netns/{prefix}-b", "10.251.0.2")
        # the same pods over IPv6 (a ULA inside these two namespaces only)
        self.a6 = ProbeEndpoint("x/a", self.a.netns, "fdfb:251::1")
        self.b6 = ProbeEndpoint("y/b", self.b.netns, "fdfb:251::2")

    def ns(self, pod: ProbeEndpoint) -> str:
        return Path(pod.netns).name

    def matrix(self, port: int, protocol: str, ipv6: bool = False) -> dict[str, dict[str, bool]]:
        pods = [self.a6, self.b6] if ipv6 else [self.a, self.b]
        report = asyncio.run(probe_matrix(pods, pods, port, protocol, timeout=0.5, attempts=1))
        return report.matrix()


@pytest.fixture
def two_pods(tmp_path: Path) -> Iterator[TwoPods]:
    prefix = "vt" + "".join(random.choices(string.ascii_lowercase, k=4))
    made: list[str] = []
    client: PodServerClient | None = None
    try:
        for name in ("a", "b"):
            sh("ip", "netns", "add", f"{prefix}-{name}")
            made.append(f"{prefix}-{name}")
            sh("ip", "-n", f"{prefix}-{name}", "link", "set", "lo", "up")
        sh(
            "ip",
            "-n",
            f"{prefix}-a",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "eth0",
            "netns",
            f"{prefix}-b",
        )
        for name, ip in (("a", "10.251.0.1"), ("b", "10.251.0.2")):
            sh("ip", "-n", f"{prefix}-{name}", "addr", "add", f"{ip}/24", "dev", "eth0")
            ip6 = "fdfb:251::1" if name == "a" else "fdfb:251::2"
            sh("ip", "-n", f"{prefix}-{name}", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", f"{prefix}-{name}", "link", "set", "eth0", "up")
        client = start_pod_server(
            tmp_path / "podserver.sock", tmp_path / "podserver.log", pid_path=tmp_path / "podserver.pid"
        )
        pods = TwoPods(prefix, client)
        for pod in (pods.a, pods.b):
            assert client.serve(pod.name, pod.netns, PORTS)
        yield pods
    finally:
        if client is not None:
            client.shutdown()
        procs.stop(tmp_path / "podserver.pid", str(tmp_path / "podserver.sock"))
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def full(value: bool) -> dict[str, dict[str, bool]]:
    return {"x/a": {"x/a": value, "y/b": value}, "y/b": {"x/a": value, "y/b": value}}


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_every_protocol_answers_on_a_served_port(two_pods: TwoPods, protocol: str) -> None:
    assert two_pods.matrix(80, protocol) == full(True)


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_every_protocol_answers_over_ipv6(two_pods: TwoPods, protocol: str) -> None:
    assert two_pods.matrix(80, protocol, ipv6=True) == full(True)
    if protocol != "TCP":
        assert two_pods.matrix(82, protocol, ipv6=True) == full(False)


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_a_port_not_served_is_unreachable(two_pods: TwoPods, protocol: str) -> None:
    assert two_pods.matrix(81, protocol) == full(False)
    assert two_pods.matrix(81, "TCP") == full(True)
    assert two_pods.matrix(82, "TCP") == full(False)


def test_serve_is_idempotent_and_stop_closes(two_pods: TwoPods) -> None:
    client = two_pods.client
    assert not client.serve(two_pods.b.name, two_pods.b.netns, list(reversed(PORTS)))
    assert client.listing()["y/b"]["ports"][0] == {"port": 80, "protocol": "SCTP"}
    assert client.stop("y/b")
    assert not client.stop("y/b")
    assert two_pods.matrix(80, "TCP")["x/a"] == {"x/a": True, "y/b": False}
    assert client.serve(two_pods.b.name, two_pods.b.netns, [PortSpec(80, "SCTP")])
    assert two_pods.matrix(80, "SCTP") == full(True)
    assert two_pods.matrix(80, "UDP")["x/a"] == {"x/a": True, "y/b": False}


def test_bad_requests_are_refused_with_a_reason(two_pods: TwoPods) -> None:
    from vpcnet.lab.podserver import PodServerError

    with pytest.raises(PodServerError, match=r"ports\[0\].protocol"):
        two_pods.client.request(
            {
                "op": "serve",
                "pod": "x/c",
                "netns": two_pods.a.netns,
                "ports": [{"port": 1, "protocol": "ICMP"}],
            }
        )
    with pytest.raises(PodServerError, match="No such file"):
        two_pods.client.serve("x/c", "/run/netns/does-not-exist-vt", [PortSpec(80, "TCP")])
    assert "x/c" not in two_pods.client.listing()


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_sctp_passes_stateful_netfilter_in_one_direction_only(two_pods: TwoPods, ipv6: bool) -> None:
    """conntrack must see the INIT-ACK as the INIT's reply (tags right), or the stateful rules drop it."""
    rules = {
        # a accepts only replies; b accepts new SCTP to port 80 and replies.
        "a": ["-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", "-A INPUT -j DROP"],
        "b": [
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A INPUT -m conntrack --ctstate INVALID -j DROP",
            "-A INPUT -p sctp --dport 80 -j ACCEPT",
            "-A INPUT -j DROP",
        ],
    }
    for name, lines in rules.items():
        if ipv6:  # neighbour discovery, or a and b never learn each other's MAC
            lines = ["-A INPUT -p ipv6-icmp -j ACCEPT", *lines]
        text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                f"{two_pods.prefix}-{name}",
                "ip6tables-restore" if ipv6 else "iptables-restore",
            ],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
    matrix = two_pods.matrix(80, "SCTP", ipv6)
    assert matrix["x/a"]["y/b"] is True
    assert matrix["y/b"]["x/a"] is False
    assert matrix["y/b"]["y/b"] is True  # loopback: lo traffic also passes conntrack as NEW then reply


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_a_source_without_namespace_reports_instead_of_crashing(two_pods: TwoPods, protocol: str) -> None:
    ghost = ProbeEndpoint("z/ghost", "/run/netns/vt-does-not-exist", "10.251.0.9")
    report = asyncio.run(
        probe_matrix([ghost, two_pods.a], [two_pods.a], 80, protocol, timeout=0.5, attempts=1)
    )
    assert report.matrix() == {"x/a": {"x/a": True}, "z/ghost": {"x/a": False}}
    (failed,) = [r for r in report.results if r.source == "z/ghost"]
    assert "No such file" in failed.detail or "no raw SCTP socket" in failed.detail
