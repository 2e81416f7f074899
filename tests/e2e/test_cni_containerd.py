"""A real runtime: Debian's containerd runs a container networked by vpcnet (`ctr run --cni`), then removes
it, leaving nothing behind.

Isolation: containerd and ctr run in our node's network namespace (nsenter --net), so the pod's host veth,
routes and rules land there. ctr reads CNI config only from /etc/cni/net.d and plugins from /opt/cni/bin
(or /usr/lib/cni): ctr runs in a private mount namespace where /etc and /opt are overlays (writes go to our
temporary dir) with our conflist and our vpcnet-cni bound in. Nothing on the host changes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cnienv import Node, sh, unique_prefix
from ociimage import build_archive

from vpcnet.cni.install import CONFLIST_NAME, install
from vpcnet.dataplane.names import host_veth_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

IMAGE = "docker.io/vpcnet/busybox:e2e"
NAMESPACE = "vpcnet-e2e"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (make system)")
    n = Node(unique_prefix(), tmp_path)
    try:
        n.up()
        yield n
    finally:
        n.down()


@pytest.fixture
def containerd(node: Node, tmp_path: Path) -> Iterator[Path]:
    base = tmp_path / "containerd"
    base.mkdir()
    sock = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{sock}"\n'
        "[ttrpc]\n"
        f'  address = "{sock}.ttrpc"\n'
    )
    log = open(base / "containerd.log", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        ["nsenter", f"--net={node.netns_path}", "containerd", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "-a", str(sock), "version"], capture_output=True).returncode != 0:
            assert proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.1)
        yield sock
    finally:
        with contextlib.suppress(Exception):
            for task in ctr(sock, "tasks", "ls", "-q").split():
                ctr(sock, "tasks", "kill", "-s", "SIGKILL", task, check=False)
            for c in ctr(sock, "containers", "ls", "-q").split():
                ctr(sock, "containers", "rm", c, check=False)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def ctr(sock: Path, *args: str, check: bool = True) -> str:
    return sh("ctr", "-a", str(sock), "-n", NAMESPACE, *args, check=check)


def ctr_with_cni(node: Node, sock: Path, conf_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """ctr in the node's network namespace and a private mount namespace holding our CNI dirs."""
    ovl = node.tmp / "ovl"
    script = f"""
set -e
for d in etc opt; do mkdir -p {ovl}/$d/upper {ovl}/$d/work
  mount -t overlay overlay -o lowerdir=/$d,upperdir={ovl}/$d/upper,workdir={ovl}/$d/work /$d; done
mkdir -p /etc/cni/net.d /opt/cni/bin
mount --bind {conf_dir} /etc/cni/net.d
mount --bind {node.bin_dir} /opt/cni/bin
exec ctr -a {sock} -n {NAMESPACE} "$@"
"""
    return subprocess.run(
        ["nsenter", f"--net={node.netns_path}", "unshare", "-m", "--propagation", "private",
         "sh", "-c", script, "ctr", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
def test_ctr_run_with_vpcnet(node: Node, containerd: Path, tmp_path: Path, native: bool) -> None:
    if native and shutil.which("cc") is None:
        pytest.skip("no C compiler for the native client")
    archive = tmp_path / "busybox-oci.tar"
    build_archive(archive, IMAGE)
    ctr(containerd, "images", "import", str(archive))
    assert IMAGE in ctr(containerd, "images", "ls", "-q")

    # The config is written last, once the agent answers STATUS ready (as install-cni does on a node).
    conf_dir = tmp_path / "net.d"
    install(node.bin_dir, conf_dir, str(node.socket), timeout=10, mtu=1500, native=native)
    assert (conf_dir / CONFLIST_NAME).exists()

    proc = ctr_with_cni(
        node,
        containerd,
        conf_dir,
        "run",
        "--rm",
        "--cni",
        IMAGE,
        "c1",
        "/bin/sh",
        "-c",
        "ip -4 addr; ip route",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "inet 10.0.1.10/32" in proc.stdout, proc.stdout
    assert "default via 169.254.1.1 dev eth0" in proc.stdout, proc.stdout

    # ctr removed the container and ran CNI DEL: nothing left on the node.
    node.drain()
    assert node.allocator.assigned == {}
    assert ctr(containerd, "containers", "ls", "-q").strip() == ""
    links = sh("ip", "-n", node.netns, "-o", "link")
    assert host_veth_name("eni", "default", f"{NAMESPACE}-c1") not in links
    assert "eni" not in links
    assert "10.0.1.10" not in sh("ip", "-n", node.netns, "rule") + sh("ip", "-n", node.netns, "route")
