"""The pod fence in the lab (vpcnet/dataplane/podfence.py): a pod's connections to the datastore (the lab's
etcd at its VPC address) and, with VPCNET_BLOCK_IMDS=true, to IMDS are reset at once, while the same pod
reaches another VPC service (the EC2 endpoint) and its node reaches all three."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lab_fixture import LabCli, LabHandle, pod_doc, running_lab

from vpcnet.lab.layout import EC2_ENDPOINT_ADDRESS, ETCD_ENDPOINT_ADDRESS, IMDS_ADDRESS

pytestmark = pytest.mark.root

ETCD_PORT = 2379

CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("failed:", type(exc).__name__, exc)
"""


def connect_from(netns: str, address: str, port: int, timeout: float = 10.0) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, address, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=True,
    ).stdout.strip()


def test_a_pod_cannot_reach_the_datastore_nor_imds_and_the_node_can(tmp_path: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    env = {"VPCNET_BLOCK_IMDS": "true"}
    with running_lab(nodes=1, agents=True, datastore="etcd", agent_env=env) as lab:
        cli = LabCli(lab, tmp_path)
        namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: f}\n"
        cli.apply(namespace + "---\n" + pod_doc("p", "node1", "f"), "pod.yaml")
        check(lab)


def check(lab: LabHandle) -> None:
    pod = lab.layout.pod_netns("f", "p")
    node = lab.netns("node1")
    for netns in (node, pod):
        assert connect_from(netns, EC2_ENDPOINT_ADDRESS, 80) == "connected", netns
    assert connect_from(node, ETCD_ENDPOINT_ADDRESS, ETCD_PORT) == "connected"
    assert connect_from(node, IMDS_ADDRESS, 80) == "connected"
    assert lab.imds_get("node1", "/latest/meta-data/instance-id")[0] == 200
    # Rejected with a reset, not dropped: the pod's client learns at once.
    assert connect_from(pod, ETCD_ENDPOINT_ADDRESS, ETCD_PORT) == "refused"
    assert connect_from(pod, IMDS_ADDRESS, 80) == "refused"
    saved = lab.exec("node1", "iptables-save", "-t", "filter").stdout
    assert saved.count("-j VPCNET-POD-FENCE") == 2, saved  # FORWARD and INPUT, once each
