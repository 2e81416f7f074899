"""Pods in a real lab (3 nodes over 2 AZs, node agents, vpcnet-cni installed): started by `vpcnet apply`,
probed with real packets on one node, across nodes in one AZ and across AZs, reaching the VPC with their own
address and the internet SNATed to their node's primary address; deleted leaving nothing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixture import POD_PORTS, LabCli, leftovers, pod_doc, running_lab

from vpcnet.lab.podserver import in_netns

pytestmark = pytest.mark.root

# node1 and node3 are in the first AZ, node2 in the second (the topology's round-robin).
PLACEMENT = {"a": "node1", "b": "node1", "c": "node3", "d": "node2"}


def manifest() -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"]
    docs += [pod_doc(pod, node, "x") for pod, node in PLACEMENT.items()]
    return "---\n".join(docs)


class Cluster(LabCli):
    def pod(self, name: str) -> dict[str, Any]:
        body = json.loads(self.cli("get", "pod", f"x/{name}", "-o", "json"))
        assert isinstance(body, dict)
        return body

    def udp_from_pod(self, pod: str, dst: str, port: int, payload: bytes) -> None:
        with in_netns(f"/run/netns/{self.lab.layout.pod_netns('x', pod)}"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.sendto(payload, (dst, port))


def assert_ready(lab: Any) -> None:
    """`lab up` installs the plugin on every node once its agent answers (as aws-node does)."""
    for node in lab.node_names:
        conflists = list(lab.layout.cni_conf_dir(node).glob("*.conflist"))
        assert conflists, f"{node} has no CNI config after lab up"
        assert (lab.layout.cni_bin_dir(node) / "vpcnet-cni").exists(), node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_lab(nodes=3, azs=2, agents=True) as lab:
        assert_ready(lab)
        handle = Cluster(lab, tmp_path_factory.mktemp("pods"))
        path = handle.tmp / "pods.yaml"
        path.write_text(manifest())
        out = handle.cli("apply", "-f", str(path))
        assert out.count(" started") == len(PLACEMENT), out
        yield handle
    # `lab down` with pods still running (as users leave them): pod namespaces, servers and agents go too.
    assert leftovers(lab.layout) == []


def test_pods_run_where_they_were_put_with_vpc_addresses(cluster: Cluster) -> None:
    wide = cluster.cli("get", "pods", "-n", "x", "-o", "wide")
    for name, node in PLACEMENT.items():
        body = cluster.pod(name)
        assert body["status"]["phase"] == "Running"
        assert body["spec"]["nodeName"] == node
        ip = body["status"]["podIP"]
        assert ip.startswith("10.0.")
        assert ip in wide
        assert body["status"]["hostIP"] == cluster.lab.node(node).primary_ip
        eni = body["metadata"]["annotations"]["vpcnet.io/eni"]
        assert eni.startswith("eni-") and eni in wide


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_every_pod_reaches_every_pod(cluster: Cluster, protocol: str) -> None:
    out = cluster.cli("lab", "probe", "--port", "80", "--protocol", protocol)
    matrix = json.loads(out)
    refs = [f"x/{p}" for p in PLACEMENT]
    assert matrix == {src: {dst: True for dst in refs} for src in refs}


def test_pods_reach_the_vpc_with_their_own_address(cluster: Cluster) -> None:
    node2 = cluster.lab.node("node2")
    listener = cluster.lab.udp_listen("node2", node2.primary_ip, 0)
    with listener:
        port = listener.getsockname()[1]
        cluster.udp_from_pod("a", node2.primary_ip, port, b"hello vpc")
        listener.settimeout(3.0)
        data, (src, _) = listener.recvfrom(100)
    assert data == b"hello vpc"
    assert src == cluster.pod("a")["status"]["podIP"]  # no SNAT inside the VPC


def test_traffic_leaving_the_vpc_is_snatted_to_the_node(cluster: Cluster) -> None:
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


def test_delete_runs_cni_del_and_leaves_nothing(cluster: Cluster) -> None:
    extra = cluster.tmp / "extra.yaml"
    extra.write_text(manifest().split("---\n")[1].replace("name: a,", "name: e,"))
    out = cluster.cli("apply", "-f", str(extra))
    assert "pod/x/e started" in out
    ip = cluster.pod("e")["status"]["podIP"]
    veth = cluster.pod("e")["metadata"]["annotations"]["vpcnet.io/host-interface"]
    assert veth in cluster.lab.exec("node1", "ip", "-o", "link").stdout
    out = cluster.cli("delete", "pod", "x/e")
    assert "pod/x/e stopped" in out
    assert veth not in cluster.lab.exec("node1", "ip", "-o", "link").stdout
    assert f"{ip} " not in cluster.lab.exec("node1", "ip", "route").stdout
    assert not (Path("/run/netns") / cluster.lab.layout.pod_netns("x", "e")).exists()


def test_a_host_port_reaches_the_pod_through_portmap(cluster: Cluster) -> None:
    doc = manifest().split("---\n")[1].replace("name: a,", "name: h,")
    doc = doc.replace(POD_PORTS, "[{containerPort: 80, hostPort: 8080}]")
    path = cluster.tmp / "hostport.yaml"
    path.write_text(doc)
    assert "pod/x/h started" in cluster.cli("apply", "-f", str(path))
    node1 = cluster.lab.node("node1").primary_ip
    veth = cluster.pod("h")["metadata"]["annotations"]["vpcnet.io/host-interface"]

    def fetch() -> bytes:
        with socket.create_connection((node1, 8080), timeout=3.0) as sock:
            return sock.recv(100)

    try:
        assert cluster.lab.in_netns("node2", fetch) == b"x/h\n"
        assert "dport 8080" in cluster.lab.exec("node1", "iptables-save", "-t", "nat").stdout
    finally:
        out = cluster.cli("delete", "-f", str(path))
    # `delete -f` ran CNI DEL through the whole chain: portmap's DNAT and vpcnet's veth are gone.
    assert "pod/x/h stopped" in out
    assert "dport 8080" not in cluster.lab.exec("node1", "iptables-save", "-t", "nat").stdout
    assert veth not in cluster.lab.exec("node1", "ip", "-o", "link").stdout
