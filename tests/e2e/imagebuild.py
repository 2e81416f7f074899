"""The node image the end-to-end tests run, built once per session by scripts/image/build.py (what `make
image` runs) and kept under build/e2e-image/ with a stamp of its inputs: a later run whose sources, lock and
build scripts did not change reuses the archive instead of building again (about 2 minutes each).

`image_archive` is this checkout's image; `next_image_archive` the same source built as a newer version
(VERSION+next, its own name and vpcnet layer), what the upgrade test rolls the lab to. VPCNET_IMAGE and
VPCNET_IMAGE2 name prebuilt archives instead. The build needs root, mmdebstrap and gcc (`make system`),
deb.debian.org and PyPI; the tests that use these fixtures are marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "e2e-image"
VERSION = str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
NEXT_VERSION = f"{VERSION}+next"
BUILD_TIMEOUT = 900  # a loaded machine; an unloaded one builds in 2 minutes


def build_image(stem: str, *options: str) -> Path:
    """build/e2e-image/<stem>.oci.tar, built unless its stamp shows the same inputs built it."""
    if os.geteuid() != 0:
        pytest.skip("the image build runs as root")
    missing = [tool for tool in ("mmdebstrap", "gcc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make system)")
    OUT.mkdir(parents=True, exist_ok=True)
    archive, work = OUT / f"{stem}.oci.tar", OUT / f"{stem}.work"
    argv = [
        sys.executable,
        str(ROOT / "scripts/image/build.py"),
        "--output",
        str(archive),
        "--work",
        str(work),
    ]
    argv += ["--stamp", str(OUT / f"{stem}.stamp"), "--reuse", *options]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    shutil.rmtree(work, ignore_errors=True)  # the root filesystem: ~250 MB
    verdict = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"\nimage {archive.name}: {verdict} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return archive


@pytest.fixture(scope="session")
def image_archive() -> Path:
    given = os.environ.get("VPCNET_IMAGE")
    return Path(given) if given else build_image("vpcnet")


@pytest.fixture(scope="session")
def next_image_archive() -> Path:
    given = os.environ.get("VPCNET_IMAGE2")
    return Path(given) if given else build_image("vpcnet-next", "--version", NEXT_VERSION)
