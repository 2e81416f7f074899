"""Calico mode in the lab, end to end: 3 nodes over 2 AZs (t3.medium), node agents in calico mode, pods
started by `vpcnet apply` through the real CNI. Pod traffic on one node, within an AZ (direct: source/dest
check off) and across AZs (VXLAN); a capture on the node's uplink shows encapsulation only across subnets.
Then 100 pods on one t3.medium node (VPC mode stops at 17) and `vpcnet ipam check` clean after churn."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from lab_fixture import LabCli, pod_doc, running_lab
from typer.testing import CliRunner

from vpcnet.cli.main import app

pytestmark = pytest.mark.root

# node1 and node3 share the first AZ's subnet; node2 is in the second AZ.
PLACEMENT = {"a": "node1", "b": "node1", "c": "node3", "d": "node2"}
CALICO_AGENT_ENV = {
    "VPCNET_MODE": "calico",
    "AWS_VPC_K8S_CNI_VETHPREFIX": "cali",
    "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
    "CALICO_IPV4POOL_VXLAN": "CrossSubnet",
    # Short lease and grace period, so that the node-going-away test runs in seconds.
    "VPCNET_IPAM_NODE_TTL_SECONDS": "5",
    "VPCNET_IPAM_NODE_GRACE_SECONDS": "6",
}


class CalicoLab(LabCli):
    def pod_ips(self, namespace: str) -> dict[str, str]:
        body = json.loads(self.cli("get", "pods", "-n", namespace, "-o", "json"))
        return {item["metadata"]["name"]: item["status"]["podIP"] for item in body["items"]}

    def ping(self, namespace: str, pod: str, address: str) -> bool:
        netns = self.lab.layout.pod_netns(namespace, pod)
        argv = ["ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "2", address]
        return subprocess.run(argv, capture_output=True).returncode == 0

    def tcp_connects(self, namespace: str, pod: str, address: str, port: int) -> bool:
        from vpcnet.lab.podserver import in_netns

        with in_netns(f"/run/netns/{self.lab.layout.pod_netns(namespace, pod)}"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(1.5)
            try:
                sock.connect((address, port))
            except OSError:
                return False
            return True

    def bulk_tcp(self, namespace: str, src: str, dst: str, address: str, size: int) -> int:
        """Send size bytes over TCP from pod src to a listener in pod dst; the bytes received."""
        from vpcnet.lab.podserver import in_netns

        with in_netns(f"/run/netns/{self.lab.layout.pod_netns(namespace, dst)}"):
            server = socket.socket()
        with in_netns(f"/run/netns/{self.lab.layout.pod_netns(namespace, src)}"):
            client = socket.socket()
        received = [0]

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(65536):
                    received[0] += len(chunk)

        with server, client:
            server.bind((address, 5555))
            server.listen()
            thread = threading.Thread(target=serve)
            thread.start()
            client.settimeout(10)
            client.connect((address, 5555))
            client.sendall(b"x" * size)
            client.shutdown(socket.SHUT_WR)
            thread.join(15)
        return received[0]

    def vxlan_packets(self, node: str, action: Callable[[], bool]) -> tuple[int, bool]:
        """UDP 4789 packets on node's eth0 while action runs."""
        netns = self.lab.netns(node)
        argv = ["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-i", "eth0", "udp port 4789"]
        cap = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            result = action()
            time.sleep(0.3)
        finally:
            cap.terminate()
            out, _ = cap.communicate(timeout=10)
        return len([line for line in out.splitlines() if line.strip()]), result


@pytest.fixture(scope="module")
def calico_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalicoLab]:
    # `vpcnet lab up --mode calico` sets VPCNET_MODE; the veth prefix and the pool come as agent settings.
    with running_lab(
        nodes=3, azs=2, agents=True, instance_type="t3.medium", agent_env=CALICO_AGENT_ENV
    ) as lab:
        for node in lab.node_names:
            args = [
                "install-cni",
                "--bin-dir", str(lab.layout.cni_bin_dir(node)),
                "--conf-dir", str(lab.layout.cni_conf_dir(node)),
                "--socket", str(lab.layout.agent_socket(node)),
                "--veth-prefix", "cali",
                "--timeout", "60",
            ]  # fmt: skip
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, f"install-cni on {node}: {result.output}"
        handle = CalicoLab(lab, tmp_path_factory.mktemp("calico"))
        namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: cal}\n---\n"
        pods = "---\n".join(pod_doc(p, n, "cal") for p, n in PLACEMENT.items())
        out = handle.apply(namespace + pods, "pods.yaml")
        assert out.count(" started") == len(PLACEMENT), out
        yield handle


def test_pod_traffic_one_node_one_az_across_azs_with_vxlan_only_across_subnets(calico_lab: CalicoLab) -> None:
    ips = calico_lab.pod_ips("cal")
    pools = json.loads(calico_lab.cli("ipam", "show", "-o", "json"))["pools"]
    assert [(p["cidr"], p["encapsulation"], p["mode"]) for p in pools] == [
        ("10.244.0.0/16", "vxlan", "CrossSubnet")
    ]
    for name, ip in ips.items():
        assert ip.startswith("10.244."), f"{name} has {ip}, not a pool address"
    for src in PLACEMENT:
        for dst, ip in ips.items():
            if src != dst:
                assert calico_lab.ping("cal", src, ip), f"{src} -> {dst} ({ip})"
    same_az, ok = calico_lab.vxlan_packets("node1", lambda: calico_lab.ping("cal", "a", ips["c"]))
    assert ok and same_az == 0, "node1 -> node3 share a subnet: routed directly, not encapsulated"
    across, ok = calico_lab.vxlan_packets("node1", lambda: calico_lab.ping("cal", "a", ips["d"]))
    assert ok and across > 0, "node1 -> node2 are in different subnets: VXLAN"
    # Full-size segments through the tunnel (its MTU is the uplink's less the VXLAN headers).
    assert calico_lab.bulk_tcp("cal", "a", "d", ips["d"], 4_000_000) == 4_000_000
    mtu = calico_lab.lab.exec("node1", "cat", "/sys/class/net/vxlan.calico/mtu").stdout.strip()
    uplink = calico_lab.lab.exec("node1", "cat", "/sys/class/net/eth0/mtu").stdout.strip()
    assert int(mtu) == int(uplink) - 50


def test_hundred_pods_on_one_t3_medium_node_and_ipam_check_clean_after_churn(calico_lab: CalicoLab) -> None:
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: many}\n---\n"
    docs = namespace + "---\n".join(pod_doc(f"p{i}", "node1", "many", ports=False) for i in range(100))
    out = calico_lab.apply(docs, "many.yaml")
    assert out.count(" started") == 100, out
    ips = calico_lab.pod_ips("many")
    assert len(set(ips.values())) == 100
    assert calico_lab.ping("many", "p99", ips["p0"])
    assert calico_lab.ping("many", "p0", ips["p99"])
    check = calico_lab.cli("ipam", "check")
    assert "clean" in check and "allocations in use: 104" in check, check
    # Churn: delete half, start them again, delete all; the IPAM holds exactly what runs.
    half = namespace + "---\n".join(pod_doc(f"p{i}", "node1", "many", ports=False) for i in range(50))
    path = calico_lab.tmp / "half.yaml"
    path.write_text(half)
    calico_lab.cli("delete", "-f", str(path))
    calico_lab.apply(half, "half.yaml")
    assert "clean" in calico_lab.cli("ipam", "check")
    calico_lab.cli("delete", "-f", str(calico_lab.tmp / "many.yaml"))
    check = calico_lab.cli("ipam", "check")
    assert "clean" in check and "allocations in use: 4" in check, check


POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: d-only-from-a, namespace: cal}
spec:
  podSelector: {matchLabels: {pod: d}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 80, protocol: TCP}, {port: 80, protocol: SCTP}]
"""


def test_network_policy_in_calico_mode_matches_the_policy_engine(calico_lab: CalicoLab) -> None:
    """Across nodes and AZs (VXLAN) and within an AZ (direct): the kernel agrees with the engine."""
    calico_lab.apply(POLICY, "policy.yaml")
    try:
        for protocol in ("TCP", "UDP", "SCTP"):
            argv = ["lab", "probe", "--protocol", protocol, "--compare", "-o", "json"]
            result = calico_lab.runner.invoke(app, [*argv, "--prefix", calico_lab.lab.prefix])
            body = json.loads(result.output)
            # A pod reaching its own address never leaves its namespace, so no policy can block it (upstream
            # netpol tests: AllowLoopback); the engine's matrix disagrees on those pairs only.
            others = [d for d in body["disagreements"] if d["from"] != d["to"]]
            assert others == [], (protocol, others)
        # The policy bites across AZs: d (node2) takes TCP 80 from a (node1), not from b (node1) or c (node3).
        ips = calico_lab.pod_ips("cal")
        assert calico_lab.tcp_connects("cal", "a", ips["d"], 80)
        assert not calico_lab.tcp_connects("cal", "b", ips["d"], 80)
        assert not calico_lab.tcp_connects("cal", "c", ips["d"], 80)
        assert calico_lab.tcp_connects("cal", "b", ips["c"], 80)  # c is not selected: open
    finally:
        calico_lab.cli("delete", "-f", str(calico_lab.tmp / "policy.yaml"))
        calico_lab.cli("lab", "wait", "--timeout", "60")


def test_nat_outgoing_to_the_vpc_and_the_internet_leaves_from_the_node(calico_lab: CalicoLab) -> None:
    """natOutgoing: a pod's traffic to anything outside the pools (a node, the internet) is masqueraded
    to its node's address (the VPC would drop pool addresses it does not know, and has no route back)."""
    from vpcnet.lab.podserver import in_netns

    lab = calico_lab.lab
    node2 = lab.node("node2")
    for dst_node, dst in (("node2", node2.primary_ip), ("inet", lab.info.internet_host)):
        listener = lab.udp_listen(dst_node, dst, 0)
        with listener:
            port = listener.getsockname()[1]
            for pod in ("a", "c"):
                with in_netns(f"/run/netns/{lab.layout.pod_netns('cal', pod)}"):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with sock:
                    sock.sendto(pod.encode(), (dst, port))
                listener.settimeout(3.0)
                data, (src, _) = listener.recvfrom(100)
                assert data == pod.encode()
                assert src == lab.node(PLACEMENT[pod]).primary_ip, (pod, dst_node, src)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def test_a_node_going_away_has_its_routes_withdrawn_and_its_blocks_released(calico_lab: CalicoLab) -> None:
    """Runs last in this module: node2's agent dies (SIGKILL, no goodbye). Its lease runs out, the other
    nodes withdraw their routes to its blocks, and after the grace period its blocks are released."""
    import os
    import signal

    from vpcnet.lab import labctl

    lab = calico_lab.lab
    shown = json.loads(calico_lab.cli("ipam", "show", "-o", "json"))
    node2_blocks = [b["cidr"] for b in shown["blocks"] if b["affinity"] == "node2"]
    assert node2_blocks and "node2" in [n["name"] for n in shown["nodes"]]

    def routes(node: str) -> str:
        return str(lab.exec(node, "ip", "route", "show", "proto", "86").stdout)

    assert all(block in routes("node1") and block in routes("node3") for block in node2_blocks)
    # The node is gone, not crashed: its supervisor (the kubelet's stand-in) goes first, or it would
    # restart the agent and the lease would never run out.
    for pid_file in (
        labctl.supervisor_pid_file(lab.layout, "node2"),
        labctl.agent_pid_file(lab.layout, "node2"),
    ):
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    wait_for(
        lambda: not any(b in routes("node1") or b in routes("node3") for b in node2_blocks),
        "node1 and node3 withdraw their routes to node2's blocks",
    )

    def released() -> bool:
        data = json.loads(calico_lab.cli("ipam", "show", "-o", "json"))
        return not any(b["affinity"] == "node2" for b in data["blocks"])

    wait_for(released, "node2's blocks released after the grace period")
    assert "node2" not in [
        n["name"] for n in json.loads(calico_lab.cli("ipam", "show", "-o", "json"))["nodes"]
    ]
