"""A lab's private containerd: its config, root, state and socket under the lab's run dir (no CRI plugin), so
the host's containerd, if any, is never involved, and `lab down` removes all of it by path.

The lab runs node agents from an imported image as `ctr run` in the foreground (a lab process with a pid file,
its output in the agent's log; ctr forwards SIGTERM to the task), so the lab's process machinery (liveness,
stop, down) applies to them unchanged. This module knows containerd and ctr, nothing of agents.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from vpcnet.lab import procs
from vpcnet.lab.layout import LabLayout

NAMESPACE = "vpcnet-lab"  # containerd namespace; the instance itself is the lab's own
START_TIMEOUT = 30.0
IMPORT_TIMEOUT = 300.0


class ContainerdError(RuntimeError):
    """containerd or ctr failed; the message names the command and its output."""


def base_dir(layout: LabLayout) -> Path:
    return layout.run_dir / "containerd"


def socket(layout: LabLayout) -> Path:
    return base_dir(layout) / "containerd.sock"


def config_file(layout: LabLayout) -> Path:
    return base_dir(layout) / "config.toml"


def pid_file(layout: LabLayout) -> Path:
    return base_dir(layout) / "containerd.pid"


def log_file(layout: LabLayout) -> Path:
    return base_dir(layout) / "containerd.log"


def marker(layout: LabLayout) -> str:
    return str(config_file(layout))


def ctr_argv(layout: LabLayout, *args: str) -> list[str]:
    return ["ctr", "-a", str(socket(layout)), "-n", NAMESPACE, *args]


def ctr(layout: LabLayout, *args: str, timeout: float = 60.0) -> str:
    argv = ctr_argv(layout, *args)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise ContainerdError(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise ContainerdError(f"`{' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def running(layout: LabLayout) -> bool:
    return procs.alive(pid_file(layout), marker(layout))


def start(layout: LabLayout) -> None:
    """Start the lab's containerd (unless it runs) and wait until it answers."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        raise ContainerdError("containerd and ctr are not installed (`make system` installs Debian's)")
    if running(layout):
        return
    base = base_dir(layout)
    base.mkdir(parents=True, exist_ok=True)
    config_file(layout).write_text(
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket(layout)}"\n'
        f'[ttrpc]\n  address = "{socket(layout)}.ttrpc"\n'
    )
    procs.spawn(
        ["containerd", "--config", str(config_file(layout))],
        log_file=log_file(layout),
        pid_file=pid_file(layout),
    )
    deadline = time.monotonic() + START_TIMEOUT
    while subprocess.run(ctr_argv(layout, "version"), capture_output=True).returncode != 0:
        if not running(layout):
            tail = log_file(layout).read_text(errors="replace")[-2000:]
            raise ContainerdError(f"the lab's containerd exited; {log_file(layout)} ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise ContainerdError(f"the lab's containerd did not answer in {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def image_name(archive: Path) -> str:
    """The name the archive's index gives its image (what `ctr images import` tags it as)."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise KeyError("index.json")
            manifests = json.load(member)["manifests"]
        return str(manifests[0]["annotations"]["io.containerd.image.name"])
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError) as exc:
        raise ContainerdError(
            f"{archive} is not an OCI image archive with a named image (`make image` makes one): {exc}"
        ) from exc


def import_image(layout: LabLayout, archive: Path) -> str:
    """Import archive into the lab's containerd; returns the image's name."""
    name = image_name(archive)
    ctr(layout, "images", "import", str(archive), timeout=IMPORT_TIMEOUT)
    return name


def run_argv(
    layout: LabLayout,
    image: str,
    container_id: str,
    command: Sequence[str],
    *,
    netns_path: str | None,
    mounts: Sequence[str],
    env_file: Path,
    labels: Sequence[str],
    privileged: bool = True,
) -> list[str]:
    """`ctr run --rm` in the foreground, joining the given network namespace (the host's if None)."""
    flags = [
        "--rm",
        *(["--privileged"] if privileged else []),
        f"--with-ns=network:{netns_path}" if netns_path else "--net-host",
        f"--env-file={env_file}",
        *(f"--mount={m}" for m in mounts),
        *(f"--label={label}" for label in labels),
    ]
    return ctr_argv(layout, "run", *flags, image, container_id, *command)


def containers(layout: LabLayout) -> list[str]:
    return ctr(layout, "containers", "ls", "-q").split()


def remove_container(layout: LabLayout, container_id: str) -> None:
    """Kill the container's task (if any), then delete task and container; no error if they are gone."""
    for args in (
        ("tasks", "kill", "-s", "SIGKILL", container_id),
        ("tasks", "delete", "-f", container_id),
        ("containers", "delete", container_id),
    ):
        subprocess.run(ctr_argv(layout, *args), capture_output=True, timeout=30, check=False)


def remove(layout: LabLayout) -> bool:
    """Every container and image of the lab's containerd, then containerd itself, its mounts and its dirs.
    True if there was anything."""
    base = base_dir(layout)
    if not base.exists():
        return False
    if running(layout):
        with contextlib.suppress(ContainerdError, subprocess.TimeoutExpired):
            for container_id in containers(layout):
                remove_container(layout, container_id)
    procs.stop(pid_file(layout), marker(layout), timeout=10.0)
    # a killed container's snapshot may still be mounted: unmount ours only, deepest first
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{base}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)
    return True
