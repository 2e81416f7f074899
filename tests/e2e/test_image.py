"""The node image works: built by scripts/image/build.py (what `make image` runs), imported into a private
containerd with `ctr images import`, it runs the CLI, the native CNI client, and the DaemonSet's init step,
whose output then answers on the node side (the node's python3 running the copied shim).

The archive is the session's (tests/e2e/imagebuild.py: built, or reused while its inputs are unchanged, or
VPCNET_IMAGE). containerd runs with its own root, state and socket under the test's
temporary directory (no CRI plugin), so the host's containerd, if any, is not involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def archive(image_archive: Path) -> Path:
    return image_archive


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (make system)")
    base = tmp_path_factory.mktemp("containerd")
    sock = base / "containerd.sock"
    (base / "config.toml").write_text(
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    namespace = f"vpcnet-image-{secrets.token_hex(3)}"
    log = open(base / "containerd.log", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        ["containerd", "--config", str(base / "config.toml")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "-a", str(sock), "version"], capture_output=True).returncode != 0:
            assert proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.1)
        yield sock, namespace
    finally:
        with contextlib.suppress(Exception):
            ctr = ["ctr", "-a", str(sock), "-n", namespace]
            for task in _out([*ctr, "tasks", "ls", "-q"]).split():
                subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True)
            for container in _out([*ctr, "containers", "ls", "-q"]).split():
                subprocess.run([*ctr, "containers", "rm", container], capture_output=True)
            for image in _out([*ctr, "images", "ls", "-q"]).split():
                subprocess.run([*ctr, "images", "rm", image], capture_output=True)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # snapshots of a killed container may still be mounted: unmount ours only, deepest first
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(base))), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)


def _out(argv: list[str], timeout: float = 60) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def image_name(archive: Path) -> str:
    """The name the archive's index gives its image (what `ctr images import` tags it as)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        (entry,) = json.load(member)["manifests"]
    return str(entry["annotations"]["io.containerd.image.name"])


@pytest.fixture(scope="module")
def imported(archive: Path, containerd: tuple[Path, str]) -> tuple[Path, str, str]:
    sock, namespace = containerd
    _out(["ctr", "-a", str(sock), "-n", namespace, "images", "import", str(archive)], timeout=180)
    return sock, namespace, image_name(archive)


def run_in_image(ctx: tuple[Path, str, str], *argv: str, mounts: tuple[str, ...] = ()) -> str:
    """`ctr run --rm` one command in the image (stdin closed: ctr would otherwise hold it open)."""
    sock, namespace, image = ctx
    name = f"vpcnet-e2e-{secrets.token_hex(4)}"
    flags = [f"--mount={m}" for m in mounts]
    return _out(["ctr", "-a", str(sock), "-n", namespace, "run", "--rm", *flags, image, name, *argv])


def test_archive_imports_under_its_name(archive: Path, imported: tuple[Path, str, str]) -> None:
    sock, namespace, image = imported
    listed = _out(["ctr", "-a", str(sock), "-n", namespace, "images", "ls", "-q"]).split()
    assert image in listed
    size_mb = archive.stat().st_size / 1e6
    assert size_mb < 150, f"the image grew to {size_mb:.0f} MB"


def test_cli_runs_in_the_image(imported: tuple[Path, str, str]) -> None:
    assert run_in_image(imported, "vpcnet", "--version").strip() == f"vpcnet {VERSION}"
    assert run_in_image(imported, "vpcnet", "max-pods", "m5.large").strip() == "29"
    # ipset asks the kernel too, which an unprivileged container may not: its own version line is enough
    versions = "ip -V && iptables --version && nft --version && (ipset --version 2>&1 || true)"
    tools = run_in_image(imported, "sh", "-c", versions)
    assert "iproute2" in tools and "nf_tables" in tools and "ipset v" in tools and "nftables" in tools


def test_native_client_answers_version_in_the_image(imported: tuple[Path, str, str]) -> None:
    script = 'echo \'{"cniVersion": "1.0.0"}\' | CNI_COMMAND=VERSION /opt/cni/bin/vpcnet-cni'
    out = run_in_image(imported, "sh", "-c", script)
    assert '"cniVersion": "1.0.0"' in out and '"1.1.0"' in out


def test_init_step_installs_a_plugin_the_node_can_run(
    imported: tuple[Path, str, str], tmp_path: Path
) -> None:
    """The DaemonSet's init container copies the plugins into the node's /opt/cni/bin; there, the native
    client's fallback runs the node's python3 on the copied shim (VERSION goes through it)."""
    host_bin = tmp_path / "opt-cni-bin"
    host_bin.mkdir()
    mount = f"type=bind,src={host_bin},dst=/host/opt/cni/bin,options=rbind:rw"
    out = run_in_image(imported, "vpcnet-node-init", "/host/opt/cni/bin", mounts=(mount,))
    assert "installed" in out
    installed = sorted(str(p.relative_to(host_bin)) for p in host_bin.rglob("*"))
    assert {"vpcnet-cni", "portmap", "loopback", "vpcnet-shim/shim.py"} <= set(installed)
    assert not [p for p in installed if "vpcnet-new" in p]
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("this host has no /usr/bin/python3 for the plugin's fallback")
    # the plugin expects itself at /opt/cni/bin: a private mount namespace puts the copy there
    script = (
        "mount -t tmpfs vpcnet-e2e /opt && mkdir -p /opt/cni/bin && "
        f"mount --bind {host_bin} /opt/cni/bin && "
        'echo \'{"cniVersion": "0.4.0"}\' | CNI_COMMAND=VERSION /opt/cni/bin/vpcnet-cni'
    )
    out = _out(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    assert '"cniVersion": "0.4.0"' in out and "supportedVersions" in out
