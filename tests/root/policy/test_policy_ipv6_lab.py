"""NetworkPolicy for IPv6 pods (VPC mode, ENABLE_IPv6) in a real lab, with real packets, on both back ends.

Each node agent runs two planes: IPv6 for the pods' own addresses, IPv4 for their egress-only 169.254.172.x
(SNATed to the node). Checked here, after `lab wait`, against the kernel: allowed and denied IPv6 flows
(TCP to a named port, SCTP, UDP to an ipBlock of ::/0 with an except) across nodes and AZs, with `lab probe
--compare` agreeing with the engine; the IPv4 plane (an egress policy without IPv4 peers keeps a pod off
the IPv4 internet, an ipBlock of 0.0.0.0/0 lets it out again, an except takes the host away); a pod cannot
send from an address it does not own, in either family; and a pod under policy still resolves its node's
link-local address (ICMPv6 neighbour discovery passes the anti-spoofing check).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lab_fixture import LabCli, leftovers, recv_or_none, running_lab

from vpcnet.dataplane.names import host_veth_name
from vpcnet.lab.fabric6 import INTERNET6_HOST_ADDRESS
from vpcnet.lab.podserver import in_netns

pytestmark = [pytest.mark.root, pytest.mark.slow]

# node1 and node3 are in the first AZ, node2 in the second.
PLACEMENT = {("x", "a"): "node1", ("x", "b"): "node1", ("x", "c"): "node2", ("y", "d"): "node3"}
IPV6_AGENTS = {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"}
NAMED_PORTS = (
    "[{containerPort: 80, name: web}, {containerPort: 80, protocol: UDP, name: dns},"
    " {containerPort: 80, protocol: SCTP, name: sig}]"
)
# b takes TCP on its named port "web" and SCTP on 80 from a only; c may send only UDP to 80, anywhere over
# IPv6 but b (an ipBlock of ::/0 with an except), and nothing over IPv4 (no IPv4 peer).
POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: b-from-a, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: b}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{pod: a}}}}}}]
    ports: [{{port: web}}, {{port: 80, protocol: SCTP}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: c-out, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: c}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: "::/0", except: ["{b}/128"]}}}}]
    ports: [{{port: 80, protocol: UDP}}]
"""
# Off-diagonal cells: (source, target) -> reachable.
EXPECTED = {
    "TCP": {
        ("x/a", "x/b"): True,
        ("x/c", "x/b"): False,
        ("y/d", "x/b"): False,
        ("x/b", "x/a"): True,
        ("x/c", "x/a"): False,
        ("y/d", "x/c"): True,
    },
    "UDP": {
        ("x/a", "x/b"): False,
        ("x/c", "x/a"): True,
        ("x/c", "y/d"): True,
        ("x/c", "x/b"): False,
        ("y/d", "x/a"): True,
    },
    "SCTP": {("x/a", "x/b"): True, ("y/d", "x/b"): False, ("x/c", "x/a"): False, ("y/d", "x/c"): True},
}


def c_out_v4(except_host: str | None) -> str:
    excepted = f", except: [{except_host}/32]" if except_host else ""
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: c-out-v4, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: c}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 0.0.0.0/0{excepted}}}}}]
"""


class Cluster(LabCli):
    def pod(self, ref: str) -> dict[str, Any]:
        ns, name = ref.split("/")
        body = json.loads(self.cli("get", "pod", f"{ns}/{name}", "-o", "json"))
        assert isinstance(body, dict)
        return body

    def ip(self, ref: str) -> str:
        return str(self.pod(ref)["status"]["podIP"])

    def netns_name(self, ref: str) -> str:
        ns, name = ref.split("/")
        return self.lab.layout.pod_netns(ns, name)

    def netns(self, ref: str) -> str:
        return f"/run/netns/{self.netns_name(ref)}"

    def in_pod(self, ref: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns_name(ref), *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def egress_v4(self, ref: str) -> str:
        out = self.in_pod(ref, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        (address,) = re.findall(r"inet (169\.254\.17[2-5]\.\d+)/", out)
        return address

    def udp_from(self, ref: str, dst: str, port: int, payload: bytes, src: str | None = None) -> None:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with in_netns(self.netns(ref)):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if src is not None:
                sock.bind((src, 0))
        with sock:
            for _ in range(3):  # the first may wait on a neighbour entry
                sock.sendto(payload, (dst, port))

    def listen_in_pod(self, ref: str) -> socket.socket:
        with in_netns(self.netns(ref)):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::", 0))
        return sock


def manifest() -> str:
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("x", "y")]
    for (ns, pod), node in PLACEMENT.items():
        docs.append(
            f"apiVersion: v1\nkind: Pod\n"
            f"metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\n"
            f"spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n"
            f"    ports: {NAMED_PORTS}\n"
        )
    return "---\n".join(docs)


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {**IPV6_AGENTS, "VPCNET_POLICY_BACKEND": request.param}
    with running_lab(nodes=3, azs=2, agents=True, agent_env=env, ip_family="ipv6") as lab:
        handle = Cluster(lab, tmp_path_factory.mktemp(f"policy6-{request.param}"))
        out = handle.apply(manifest(), "pods.yaml")
        assert out.count(" started") == len(PLACEMENT), out
        handle.apply(POLICIES.format(b=handle.ip("x/b")), "policies.yaml")
        yield handle
    assert leftovers(lab.layout) == []


def probe(cluster: Cluster, protocol: str) -> dict[str, Any]:
    out = cluster.cli("lab", "probe", "--protocol", protocol, "--compare", "--timeout", "0.5", code=0)
    body = json.loads(out)
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_ipv6_flows_are_allowed_and_denied_as_the_engine_says(cluster: Cluster, protocol: str) -> None:
    assert all(":" in cluster.ip(f"{ns}/{pod}") for ns, pod in PLACEMENT)
    body = probe(cluster, protocol)
    assert body["disagreements"] == [], body
    for (src, dst), reachable in EXPECTED[protocol].items():
        assert body["measured"][src][dst] is reachable, (protocol, src, dst)


def test_the_ipv4_plane_holds_egress_policy_and_slash_0_works(cluster: Cluster) -> None:
    inet = cluster.lab.info.internet_host
    listener = cluster.lab.udp_listen("inet", inet, 0)
    with listener:
        port = listener.getsockname()[1]

        def reaches(ref: str) -> bool:
            tag = f"{ref}-{time.monotonic_ns()}".encode()
            cluster.udp_from(ref, inet, port, tag)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                got = recv_or_none(listener, 0.5)
                if got is not None and got[0] == tag:
                    return True
            return False

        assert reaches("x/a")  # selected by no egress policy: out over IPv4, SNATed to its node
        assert not reaches("x/c")  # its egress policy names no IPv4 peer
        cluster.apply(c_out_v4(None), "c-out-v4.yaml")
        assert reaches("x/c")  # 0.0.0.0/0: stored as its two /1 halves
        cluster.apply(c_out_v4(inet), "c-out-v4-except.yaml")
        assert not reaches("x/c")
        cluster.cli("delete", "networkpolicy", "c-out-v4", "-n", "x")
        cluster.cli("lab", "wait", "--timeout", "60")
        assert not reaches("x/c")


def test_ipv6_internet_through_the_ipblock(cluster: Cluster) -> None:
    def listen() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((INTERNET6_HOST_ADDRESS, 80))
        return s

    with cluster.lab.in_netns("inet", listen) as listener:
        cluster.udp_from("x/c", INTERNET6_HOST_ADDRESS, 80, b"c-to-80")  # ::/0 on UDP 80: allowed
        got = recv_or_none(listener, 3.0)
        assert got is not None and got == (b"c-to-80", cluster.ip("x/c")), got


def test_a_pod_cannot_send_from_an_address_it_does_not_own(cluster: Cluster) -> None:
    # IPv6: a sends from b's address (same node, same /80) to a socket in d
    b_ip = cluster.ip("x/b")
    cluster.in_pod("x/a", "ip", "-6", "addr", "add", f"{b_ip}/128", "dev", "eth0", "nodad")
    try:
        with cluster.listen_in_pod("y/d") as listener:
            port = listener.getsockname()[1]
            cluster.udp_from("x/a", cluster.ip("y/d"), port, b"spoofed", src=b_ip)
            assert recv_or_none(listener, 2.0) is None
            cluster.udp_from("x/a", cluster.ip("y/d"), port, b"own", src=cluster.ip("x/a"))
            assert recv_or_none(listener, 3.0) == (b"own", cluster.ip("x/a"))
    finally:
        cluster.in_pod("x/a", "ip", "-6", "addr", "del", f"{b_ip}/128", "dev", "eth0", check=False)
    # IPv4: a sends from b's node-local egress address to the internet host
    a_v4, b_v4 = cluster.egress_v4("x/a"), cluster.egress_v4("x/b")
    inet = cluster.lab.info.internet_host
    cluster.in_pod("x/a", "ip", "-4", "addr", "add", f"{b_v4}/32", "dev", "eth0")
    try:
        with cluster.lab.udp_listen("inet", inet, 0) as listener:
            port = listener.getsockname()[1]
            cluster.udp_from("x/a", inet, port, b"spoofed4", src=b_v4)
            assert recv_or_none(listener, 2.0) is None
            cluster.udp_from("x/a", inet, port, b"own4", src=a_v4)
            got = recv_or_none(listener, 3.0)
            assert got is not None and got[0] == b"own4"
    finally:
        cluster.in_pod("x/a", "ip", "-4", "addr", "del", f"{b_v4}/32", "dev", "eth0", check=False)


def test_neighbour_discovery_passes_for_a_pod_under_policy(cluster: Cluster) -> None:
    """c is under an egress policy, and every packet from its link-local address fails anti-spoofing but
    for the ICMPv6 link protocol: its solicitation for the node's link-local address must reach the node."""
    veth = host_veth_name("eni", "x", "c")
    out = cluster.lab.exec("node2", "ip", "-6", "-o", "addr", "show", "dev", veth, "scope", "link").stdout
    (host_ll,) = re.findall(r"inet6 (fe80::[0-9a-f:]+)/64", out)
    cluster.in_pod("x/c", "ip", "-6", "neigh", "flush", "dev", "eth0")
    # The echo itself is dropped (a link-local source is not c's own); the solicitation before it is not.
    cluster.in_pod("x/c", "busybox", "ping", "-6", "-c", "1", "-W", "2", f"{host_ll}%eth0", check=False)
    deadline = time.monotonic() + 10.0
    state = ""
    while time.monotonic() < deadline:
        state = cluster.in_pod("x/c", "ip", "-6", "neigh", "show", host_ll, "dev", "eth0").stdout
        if re.search(r"lladdr \S+ (REACHABLE|STALE|DELAY|PROBE)", state):
            break
        time.sleep(0.2)
    assert re.search(r"lladdr \S+ (REACHABLE|STALE|DELAY|PROBE)", state), state
