"""A killed image build leaves its chroot's mounts behind; the next build unmounts them before it removes the
old root filesystem, instead of walking into them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.root

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts" / "image"


def _build_script() -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))  # build.py imports its sibling ocipack
    try:
        spec = importlib.util.spec_from_file_location("image_build_script", SCRIPTS / "build.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


def _mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def test_leftover_mounts_under_the_rootfs_are_unmounted_deepest_first(tmp_path: Path) -> None:
    build = _build_script()
    rootfs = tmp_path / "root fs"  # a space: mountinfo escapes it
    shm, pts = rootfs / "dev" / "shm", rootfs / "dev" / "shm" / "inner"
    shm.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    mounted = []
    try:
        for point in (shm, outside):
            subprocess.run(["mount", "-t", "tmpfs", "vt-build-test", str(point)], check=True)
            mounted.append(point)
        pts.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "vt-build-test", str(pts)], check=True)
        mounted.append(pts)
        (pts / "file").write_text("on the inner mount")

        done = build.unmount_below(rootfs)

        assert done == [str(pts), str(shm)]
        assert not _mounted(pts) and not _mounted(shm)
        assert _mounted(outside)  # not under the rootfs: left alone
    finally:
        for point in reversed(mounted):
            if _mounted(point):
                subprocess.run(["umount", "--lazy", str(point)], check=False)
