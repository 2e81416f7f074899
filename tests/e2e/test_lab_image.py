"""The lab runs the artifacts: `lab up --image` runs every node agent from the built image (containers of the
lab's own containerd in the nodes' network namespaces, shaped by deploy/), the demo's probe and policy steps
pass through them, `lab upgrade --image` rolls them to a second image while a probe loop runs (no probe is
lost, no pod changes address), and `lab down` leaves nothing.

The images are the session's (tests/e2e/imagebuild.py): this checkout's build, and the same source built as
the next version (its own vpcnet layer, version and name), each reused while its inputs are unchanged;
VPCNET_IMAGE and VPCNET_IMAGE2 name prebuilt archives instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "root"))
from imagebuild import NEXT_VERSION
from lab_fixture import leftovers, pod_doc, random_prefix

from vpcnet.lab import containerd, labctl
from vpcnet.lab.layout import LabLayout
from vpcnet.lab.probe import ProbeEndpoint, Prober
from vpcnet.lab.topology import build_topology

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
# Pairs the demo's policy leaves open (cart -> ledger is its one exception into billing), across and within
# nodes; billing/invoices -> billing/ledger is the pair it closes.
OPEN_PAIRS = (("shop/cart", "billing/ledger"), ("shop/web", "shop/search"), ("shop/search", "shop/cart"))
CLOSED_PAIR = ("billing/invoices", "billing/ledger")
DEMO_PODS = [f"shop/{p}" for p in ("web", "cart", "search")] + [
    f"billing/{p}" for p in ("invoices", "ledger", "reports")
]


def needs_containerd() -> None:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (make system)")


@pytest.fixture(scope="module")
def archives(image_archive: Path, next_image_archive: Path) -> tuple[Path, Path]:
    needs_containerd()
    assert containerd.image_name(image_archive) != containerd.image_name(next_image_archive)
    return image_archive, next_image_archive


@pytest.fixture(scope="module")
def image_lab(archives: tuple[Path, Path]) -> Iterator[LabLayout]:
    layout = LabLayout(random_prefix())
    try:
        labctl.up(build_topology(nodes=2, azs=2, instance_type="t3.medium"), layout, image=archives[0])
        yield layout
    finally:
        labctl.down(layout)
        assert leftovers(layout) == []
        assert not [
            line for line in Path("/proc/mounts").read_text().splitlines() if str(layout.run_dir) in line
        ]


def cli(layout: LabLayout, *args: str) -> str:
    from typer.testing import CliRunner

    from vpcnet.cli.main import app

    result = CliRunner().invoke(app, [*args, "--prefix", layout.prefix])
    assert result.exit_code == 0, result.output
    return result.output


def agent_containers(layout: LabLayout) -> dict[str, str]:
    """container id -> image, of the lab's containerd."""
    out = containerd.ctr(layout, "containers", "ls")
    return {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line.strip()}


def pod_endpoint(layout: LabLayout, name: str) -> ProbeEndpoint:
    namespace, _, pod = name.partition("/")
    ns = layout.pod_netns(namespace, pod)
    out = subprocess.run(["ip", "-n", ns, "-j", "-4", "addr", "show", "eth0"], capture_output=True, text=True)
    return ProbeEndpoint(name, f"/run/netns/{ns}", json.loads(out.stdout)[0]["addr_info"][0]["local"])


def probe(layout: LabLayout, source: str, target: str) -> bool:
    prober = Prober(80, "TCP", timeout=1.0, attempts=2)
    result = asyncio.run(prober.probe(pod_endpoint(layout, source), pod_endpoint(layout, target)))
    return result.ok


def demo_policy_is_enforced(layout: LabLayout) -> None:
    """The demo's pods and policy into a fresh lab: the kernel agrees with the engine, one denied pair and
    one allowed pair checked with packets."""
    cli(layout, "apply", "-f", str(DEMO / "pods.yaml"))
    cli(layout, "lab", "sync")
    cli(layout, "apply", "-f", str(DEMO / "policy.yaml"))
    cli(layout, "lab", "wait", "--timeout", "60")
    body = json.loads(cli(layout, "lab", "probe", "--port", "80", "--protocol", "TCP", "--compare"))
    assert body["disagreements"] == [], body
    assert not probe(layout, *CLOSED_PAIR) and probe(layout, *OPEN_PAIRS[0])


class ProbeLoop(threading.Thread):
    """Probes OPEN_PAIRS over and over (one attempt, 1 s each) until stopped; counts answers and losses."""

    def __init__(self, layout: LabLayout) -> None:
        super().__init__(daemon=True)
        self.pairs = [(pod_endpoint(layout, s), pod_endpoint(layout, t)) for s, t in OPEN_PAIRS]
        self.stop = threading.Event()
        self.ok = 0
        self.lost: list[str] = []

    def run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        prober = Prober(80, "TCP", timeout=1.0, attempts=1)
        while not self.stop.is_set():
            for source, target in self.pairs:
                result = await prober.probe(source, target)
                if result.ok:
                    self.ok += 1
                else:
                    self.lost.append(f"{time.strftime('%T')} {source.name} -> {target.name}: {result.detail}")
            await asyncio.sleep(0.05)


def test_agents_run_from_the_image(image_lab: LabLayout, archives: tuple[Path, Path]) -> None:
    image = containerd.image_name(archives[0])
    status = labctl.status(image_lab)
    assert status["agent_image"] == image
    assert {n["name"]: n["agent"] for n in status["nodes"]} == {"node1": "ready", "node2": "ready"}
    containers = agent_containers(image_lab)
    assert sorted(c.split("-agent-")[0] for c in containers) == ["node1", "node2"]
    assert set(containers.values()) == {image}
    # the agent's configuration came from deploy/: the ConfigMap's settings, the DaemonSet's socket path
    env = (image_lab.node_dir("node1") / "agent-container.env").read_text().splitlines()
    assert "VPCNET_AGENT_SOCKET=/var/run/vpcnet/agent.sock" in env and "VPCNET_NODE_NAME=node1" in env


def test_demo_probe_and_policy_through_image_agents(image_lab: LabLayout) -> None:
    cli(image_lab, "apply", "-f", str(DEMO / "pods.yaml"))
    cli(image_lab, "lab", "sync")
    matrix = json.loads(cli(image_lab, "lab", "probe", "--port", "80", "--protocol", "TCP"))
    cells = [ok for row in matrix.values() for ok in row.values()]
    assert len(cells) == 36 and all(cells), matrix
    cli(image_lab, "apply", "-f", str(DEMO / "policy.yaml"))
    cli(image_lab, "lab", "wait", "--timeout", "60")
    body = json.loads(cli(image_lab, "lab", "probe", "--port", "80", "--protocol", "TCP", "--compare"))
    assert body["disagreements"] == [], body
    assert not probe(image_lab, *CLOSED_PAIR)
    assert all(probe(image_lab, s, t) for s, t in OPEN_PAIRS)


def test_rolling_update_loses_no_probe_and_no_address(
    image_lab: LabLayout, archives: tuple[Path, Path]
) -> None:
    from vpcnet.lab.labupgrade import upgrade

    before = {p: pod_endpoint(image_lab, p).ip for p in DEMO_PODS}
    loop = ProbeLoop(image_lab)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while loop.ok < 3 * len(OPEN_PAIRS):  # the loop runs before the update starts
            assert time.monotonic() < deadline and not loop.lost, loop.lost
            time.sleep(0.05)
        result = upgrade(image_lab, archives[1])
        time.sleep(2)  # the loop keeps probing the new agents for a moment
    finally:
        loop.stop.set()
        loop.join(30)
    new_image = containerd.image_name(archives[1])
    assert result.new_image == new_image and result.nodes == ["node1", "node2"]
    assert loop.lost == [], f"{len(loop.lost)} of {loop.ok + len(loop.lost)} probes lost: {loop.lost[:10]}"
    assert loop.ok > 0
    containers = agent_containers(image_lab)
    assert set(containers.values()) == {new_image}
    if not os.environ.get("VPCNET_IMAGE2"):  # the agents now run the newer build's vpcnet
        for container in containers:
            argv = ["tasks", "exec", "--exec-id", f"version-{time.monotonic_ns()}", container, "vpcnet"]
            assert containerd.ctr(image_lab, *argv, "--version").strip() == f"vpcnet {NEXT_VERSION}"
    assert {p: pod_endpoint(image_lab, p).ip for p in DEMO_PODS} == before
    # the new agents enforce the policy they adopted, and wire new pods (churn after the update)
    assert not probe(image_lab, *CLOSED_PAIR)
    manifest = image_lab.run_dir / "churn.yaml"
    manifest.write_text("".join(pod_doc(f"churn{i}", f"node{i % 2 + 1}", "shop") + "---\n" for i in range(4)))
    cli(image_lab, "apply", "-f", str(manifest))
    cli(image_lab, "lab", "sync")
    cli(image_lab, "delete", "pod", "churn0", "churn1", "-n", "shop")
    cli(image_lab, "lab", "sync")
    cli(image_lab, "lab", "wait", "--timeout", "60")
    body = json.loads(cli(image_lab, "lab", "probe", "--port", "80", "--protocol", "TCP", "--compare"))
    assert body["disagreements"] == [], body
    assert probe(image_lab, "shop/churn2", "shop/cart") and probe(image_lab, "shop/churn3", "shop/churn2")
    assert not probe(image_lab, "shop/churn3", "billing/ledger")  # the policy's exception is cart only


def test_etcd_lab_runs_kube_controllers_from_the_image(archives: tuple[Path, Path]) -> None:
    """In etcd mode kube-controllers (the API mirrored into etcd, which the agents read) is the image's too,
    as the Deployment runs it: its own user, the host's network."""
    layout = LabLayout(random_prefix())
    topo = build_topology(nodes=2, azs=2, instance_type="t3.medium")
    try:
        labctl.up(topo, layout, image=archives[0], datastore="etcd")
        tasks = containerd.ctr(layout, "tasks", "ls").splitlines()[1:]
        pids = {line.split()[0]: int(line.split()[1]) for line in tasks if "RUNNING" in line}
        assert "kube-controllers" in pids, tasks
        assert Path(f"/proc/{pids['kube-controllers']}/status").read_text().count("\t65534") >= 2
        demo_policy_is_enforced(layout)
    finally:
        labctl.down(layout)
    assert leftovers(layout) == []


def test_etcd_tls_lab_gives_the_image_its_client_certificate(image_archive: Path) -> None:
    """`lab up --etcd-tls --image`: etcd asks every client for a certificate, and the image's agents and
    kube-controllers get the lab's as a Secret volume would give it (read-only, the container's own paths);
    they read the datastore, so the demo's policy is enforced as the engine says."""
    needs_containerd()
    layout = LabLayout(random_prefix())
    topo = build_topology(nodes=2, azs=2, instance_type="t3.medium")
    try:
        labctl.up(topo, layout, image=image_archive, datastore="etcd", etcd_tls=True)
        env = (layout.node_dir("node1") / "agent-container.env").read_text().splitlines()
        assert "VPCNET_DATASTORE_CERT_FILE=/etc/vpcnet/etcd-tls/client.pem" in env
        assert any(line.startswith("VPCNET_DATASTORE_ENDPOINTS=https://") for line in env), env
        tasks = containerd.ctr(layout, "tasks", "ls").splitlines()[1:]
        assert {"kube-controllers", "RUNNING"} <= {w for line in tasks for w in line.split()}, tasks
        demo_policy_is_enforced(layout)
    finally:
        labctl.down(layout)
    assert leftovers(layout) == []
