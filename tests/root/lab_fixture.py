"""A real lab for root tests: `vpcnet lab up` in-process with a random prefix, torn down in finally.

Fixtures (made available under tests/root by tests/root/conftest.py):
- `lab`: one lab per test module (3 nodes over 2 AZs, t3.medium, no node agents). Share it only for tests
  that leave it as they found it (or that only add things of their own).
- `lab_factory`: a context-manager factory for a lab of another shape, e.g.
      with lab_factory(nodes=2, agents=True, agent_env={"WARM_IP_TARGET": "2"}) as lab: ...

The handle (`LabHandle`) offers:
    lab.prefix, lab.layout, lab.info (LabInfo: nodes with instance ids, IPs, subnets; endpoints)
    lab.node_names, lab.node(name) -> NodeInfo, lab.netns(name)
    lab.ec2()                 boto3 EC2 client on the host-side endpoint
    lab.exec(node, *argv)     subprocess.CompletedProcess (text), in the node's namespace ("vpc"/"inet" too)
    lab.in_netns(node, fn)    call fn in a thread inside the node's namespace (sockets made there stay there)
    lab.udp_listen(node, ip, port) / lab.udp_send(node, dst, port, payload, src_ip=None)
    lab.imds_get(node, path)  IMDSv2 GET from the node (token first), returns (status, body)
    lab.status()              the `vpcnet lab status -o json` document
leftovers(layout) lists what of a lab still exists (namespaces, processes, its run dir): [] after `lab down`.
pod_doc(name, node, namespace) is one Pod manifest document (busybox, labelled pod=<name>); LabCli runs the
`vpcnet` CLI in-process against a lab, with a scratch dir for the manifests it applies.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import socket
import string
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vpcnet.lab import labctl, netns
from vpcnet.lab.labctl import LabInfo, NodeInfo
from vpcnet.lab.layout import IMDS_ADDRESS, LabLayout
from vpcnet.lab.topology import build_topology

T = TypeVar("T")
IP_TRANSPARENT = 19  # linux/in.h
# TCP, UDP and SCTP on 80: what the lab's pod server answers on.
POD_PORTS = "[{containerPort: 80}, {containerPort: 80, protocol: UDP}, {containerPort: 80, protocol: SCTP}]"


def leftovers(layout: LabLayout) -> list[str]:
    """Everything of the lab that still exists: namespaces, processes naming its run dir, files."""
    found = [f"netns {n}" for n in netns.list_netns() if layout.owns_netns(n)]
    marker = str(layout.run_dir).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline or f"--prefix\0{layout.prefix}\0".encode() in cmdline:
                found.append(f"process {entry.name}: {cmdline!r}")
    if layout.run_dir.exists():
        found.append(f"dir {layout.run_dir}")
    return found


def pod_doc(name: str, node: str, namespace: str, ports: bool = True) -> str:
    """One Pod document for `vpcnet apply`, labelled pod=<name>; ports declares POD_PORTS."""
    served = f"\n    ports: {POD_PORTS}" if ports else ""
    return (
        f"apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}, namespace: {namespace}, labels: {{pod: {name}}}}}\n"
        f"spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox{served}\n"
    )


def random_prefix() -> str:
    return "vt" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))


class LabHandle:
    def __init__(self, layout: LabLayout, info: LabInfo) -> None:
        self.layout = layout
        self.info = info

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.info.nodes]

    def node(self, name: str) -> NodeInfo:
        return self.info.node(name)

    def netns(self, name: str) -> str:
        special = {"vpc": self.layout.vpc_netns, "inet": self.layout.internet_netns}
        return special.get(name) or self.node(name).netns

    def ec2(self) -> Any:
        import boto3

        return boto3.client(
            "ec2",
            endpoint_url=self.info.endpoints["ec2_host"],
            region_name=self.info.region,
            aws_access_key_id=labctl.LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=labctl.LAB_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def exec(
        self, node: str, *argv: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns(node), *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def in_netns(self, node: str, fn: Callable[[], T]) -> T:
        return netns.run_in_netns(self.netns(node), fn)

    def udp_listen(self, node: str, ip: str = "0.0.0.0", port: int = 0) -> socket.socket:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            return s

        return self.in_netns(node, make)

    def udp_send(self, node: str, dst: str, port: int, payload: bytes, src_ip: str | None = None) -> None:
        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                if src_ip is not None:
                    # IP_TRANSPARENT lets root send from an address the node does not hold (a spoof).
                    s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                    s.bind((src_ip, 0))
                s.sendto(payload, (dst, port))

        self.in_netns(node, send)

    def imds_get(self, node: str, path: str, token_ttl: int = 60) -> tuple[int, str]:
        def get() -> tuple[int, str]:
            conn = http.client.HTTPConnection(IMDS_ADDRESS, 80, timeout=5)
            try:
                conn.request(
                    "PUT",
                    "/latest/api/token",
                    headers={"X-aws-ec2-metadata-token-ttl-seconds": str(token_ttl)},
                )
                resp = conn.getresponse()
                token = resp.read().decode()
                if resp.status != 200:
                    return resp.status, token
                conn.request("GET", path, headers={"X-aws-ec2-metadata-token": token})
                resp = conn.getresponse()
                return resp.status, resp.read().decode()
            finally:
                conn.close()

        return self.in_netns(node, get)

    def status(self) -> dict[str, Any]:
        return labctl.status(self.layout)


class LabCli:
    """The `vpcnet` CLI in-process against one lab (its --prefix added), manifests written under tmp."""

    def __init__(self, lab: LabHandle, tmp: Path) -> None:
        from typer.testing import CliRunner

        self.lab = lab
        self.tmp = tmp
        self.runner = CliRunner()

    def cli(self, *args: str, code: int = 0) -> str:
        from vpcnet.cli.main import app

        result = self.runner.invoke(app, [*args, "--prefix", self.lab.prefix])
        assert result.exit_code == code, result.output
        return result.output

    def apply(self, text: str, name: str) -> str:
        """`vpcnet apply` of text (saved as tmp/name), then `lab wait`: the policy agents have its pods."""
        path = self.tmp / name
        path.write_text(text)
        out = self.cli("apply", "-f", str(path))
        self.cli("lab", "wait", "--timeout", "60")
        return out


def recv_or_none(sock: socket.socket, timeout: float = 1.0) -> tuple[bytes, str] | None:
    """One datagram and its source address, or None if nothing came within timeout."""
    sock.settimeout(timeout)
    try:
        data, addr = sock.recvfrom(65536)
    except TimeoutError:
        return None
    return data, str(addr[0])


@contextlib.contextmanager
def running_lab(
    *,
    nodes: int = 3,
    azs: int = 2,
    instance_type: str = "t3.medium",
    agents: bool = False,
    agent_env: dict[str, str] | None = None,
    prefix: str | None = None,
    datastore: str | None = None,
    ip_family: str = "ipv4",
    pod_subnets: int = 0,
    etcd_tls: bool = False,
) -> Iterator[LabHandle]:
    """A lab for the block; agent_env is extra environment for every node agent (e.g. VPCNET_MODE=calico);
    datastore: what the agents read (kubernetes or etcd; None: the lab's default, labctl.lab_datastore);
    ip_family as `lab up --ip-family` (the agents' IPv6 settings are the caller's to pass); etcd_tls as
    `lab up --etcd-tls`."""
    layout = LabLayout(prefix or random_prefix())
    try:
        topo = build_topology(
            nodes=nodes, azs=azs, instance_type=instance_type, ip_family=ip_family, pod_subnets=pod_subnets
        )
        result = labctl.up(
            topo, layout, agents=agents, agent_settings=agent_env, datastore=datastore, etcd_tls=etcd_tls
        )
        yield LabHandle(layout, result.info)
    finally:
        labctl.down(layout)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabHandle]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with running_lab() as handle:
        yield handle


@pytest.fixture
def lab_factory() -> Callable[..., contextlib.AbstractContextManager[LabHandle]]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    return running_lab
