"""Which kubectl drives the lab: the one the virtualenv carries (`make deps` links Debian's kubectl, package
kubernetes-client, there), else the first on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def venv_kubectl() -> str | None:
    """Debian's kubectl as `make deps` links it beside this interpreter, or None."""
    candidate = Path(sys.executable).parent / "kubectl"
    return str(candidate) if candidate.exists() else None


def find_kubectl() -> str | None:
    return venv_kubectl() or shutil.which("kubectl")


def all_kubectls() -> list[str]:
    """Every distinct kubectl here (the venv's Debian one first, then PATH's): tests run against each."""
    found: dict[Path, str] = {}
    for binary in (venv_kubectl(), shutil.which("kubectl")):
        if binary is not None:
            found.setdefault(Path(binary).resolve(), binary)
    return list(found.values())
