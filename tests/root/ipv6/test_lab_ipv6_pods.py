"""IPv6 pods in a real lab (`lab up --ip-family ipv6`: agents with ENABLE_IPv6 and prefix delegation), with
real packets through the lab's fabric: pods get addresses from their node's /80; pod to pod on one node and
across nodes (and AZs) over IPv6; a pod reaches the IPv4 internet host SNATed to its node's primary IPv4
(through its node-local 169.254.172.0/22 address) and the IPv6 internet host with its own address; an
unassigned address of the subnet gets nothing."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from lab_fixture import LabCli, leftovers, pod_doc, running_lab

from vpcnet.lab.fabric6 import INTERNET6_HOST_ADDRESS
from vpcnet.lab.podserver import in_netns
from vpcnet.lab.probe import ProbeEndpoint, Prober

pytestmark = pytest.mark.root

# node1 and node3 are in the first AZ, node2 in the second (the topology's round-robin).
PLACEMENT = {"a": "node1", "b": "node1", "c": "node3", "d": "node2"}
IPV6_AGENTS = {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"}


class Cluster(LabCli):
    def pod(self, name: str) -> dict[str, Any]:
        body = json.loads(self.cli("get", "pod", f"x/{name}", "-o", "json"))
        assert isinstance(body, dict)
        return body

    def netns(self, pod: str) -> str:
        return f"/run/netns/{self.lab.layout.pod_netns('x', pod)}"

    def ip(self, pod: str) -> str:
        return str(self.pod(pod)["status"]["podIP"])

    def udp_from_pod(self, pod: str, dst: str, port: int, payload: bytes) -> None:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with in_netns(self.netns(pod)):
            sock = socket.socket(family, socket.SOCK_DGRAM)
        with sock:
            for _ in range(3):  # the first may wait on a neighbour entry
                sock.sendto(payload, (dst, port))

    def node_prefix(self, node: str) -> ipaddress.IPv6Network:
        (prefix,) = self.lab.imds_get(
            node, f"/latest/meta-data/network/interfaces/macs/{self._mac(node)}/ipv6-prefix"
        )[1].split()
        return ipaddress.IPv6Network(prefix)

    def _mac(self, node: str) -> str:
        return self.lab.imds_get(node, "/latest/meta-data/mac")[1].strip()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_lab(nodes=3, azs=2, agents=True, agent_env=IPV6_AGENTS, ip_family="ipv6") as lab:
        handle = Cluster(lab, tmp_path_factory.mktemp("pods6"))
        path = handle.tmp / "pods.yaml"
        docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"]
        docs += [pod_doc(pod, node, "x") for pod, node in PLACEMENT.items()]
        path.write_text("---\n".join(docs))
        out = handle.cli("apply", "-f", str(path))
        assert out.count(" started") == len(PLACEMENT), out
        yield handle
    assert leftovers(lab.layout) == []


def test_pods_get_ipv6_addresses_from_their_nodes_80(cluster: Cluster) -> None:
    for pod, node in PLACEMENT.items():
        body = cluster.pod(pod)
        assert body["status"]["phase"] == "Running"
        address = ipaddress.ip_address(body["status"]["podIP"])
        assert address.version == 6
        assert address in cluster.node_prefix(node), (pod, node)
    # the pod's own view: its /128, the default route via fe80::1, and a node-local IPv4 for egress
    addrs = cluster.lab.exec("node1", "ip", "-n", cluster.lab.layout.pod_netns("x", "a"), "addr").stdout
    assert f"{cluster.ip('a')}/128" in addrs and "169.254.172." in addrs
    routes6 = cluster.lab.exec(
        "node1", "ip", "-n", cluster.lab.layout.pod_netns("x", "a"), "-6", "route"
    ).stdout
    assert "default via fe80::1 dev eth0" in routes6


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_every_pod_reaches_every_pod_over_ipv6(cluster: Cluster, protocol: str) -> None:
    import asyncio

    endpoints = [ProbeEndpoint(f"x/{pod}", cluster.netns(pod), cluster.ip(pod)) for pod in PLACEMENT]

    async def run() -> Any:
        return await Prober(80, protocol, timeout=2.0, attempts=3).run(endpoints, endpoints)

    report = asyncio.run(run())
    failed = [(r.source, r.target, r.detail) for r in report.results if not r.ok]
    assert failed == []


def test_ipv4_internet_sees_the_nodes_primary_ipv4(cluster: Cluster) -> None:
    inet = cluster.lab.info.internet_host
    listener = cluster.lab.udp_listen("inet", inet, 0)
    with listener:
        port = listener.getsockname()[1]
        for pod in ("a", "d"):
            cluster.udp_from_pod(pod, inet, port, pod.encode())
            listener.settimeout(3.0)
            data, (src, _) = listener.recvfrom(100)
            assert data == pod.encode()
            assert src == cluster.lab.node(PLACEMENT[pod]).primary_ip
            while True:  # the retries of the same datagram
                listener.settimeout(0.3)
                try:
                    listener.recvfrom(100)
                except TimeoutError:
                    break


def test_ipv6_internet_sees_the_pods_own_address(cluster: Cluster) -> None:
    def listen() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((INTERNET6_HOST_ADDRESS, 0))
        return s

    listener = cluster.lab.in_netns("inet", listen)
    with listener:
        port = listener.getsockname()[1]
        cluster.udp_from_pod("c", INTERNET6_HOST_ADDRESS, port, b"six")
        listener.settimeout(3.0)
        data, addr = listener.recvfrom(100)
    assert data == b"six" and addr[0] == cluster.ip("c")  # no NAT in IPv6


def test_an_unassigned_ipv6_address_gets_nothing(cluster: Cluster) -> None:
    prefix = cluster.node_prefix("node1")
    stray = str(prefix.network_address + 0xFFFF0)  # in node1's /80, held by no pod
    netns = cluster.lab.layout.pod_netns("x", "d")

    def ping(dst: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", netns, "busybox", "ping", "-6", "-c", "1", "-W", "2", dst]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    assert ping(stray).returncode != 0
    ok = ping(cluster.ip("a"))  # and a pod's address answers the same ping
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_the_ipv6_node_keeps_the_pod_fence_in_both_families(cluster: Cluster) -> None:
    # ENABLE_IPv6 agents fence in ip6tables too (tests/root/ipv6/test_podfence6_kernel.py shows the resets).
    for command in ("iptables-save", "ip6tables-save"):
        saved = cluster.lab.exec("node1", command, "-t", "filter").stdout
        assert saved.count("-j VPCNET-POD-FENCE") == 2, (command, saved)  # FORWARD and INPUT
