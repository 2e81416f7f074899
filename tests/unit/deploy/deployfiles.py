"""The deploy/ manifests and the image build's constants, loaded once for the deploy tests."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
IMAGE_SCRIPTS = ROOT / "scripts" / "image"


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/ (kustomization.yaml is kustomize's, not the API's)."""
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def find(kind: str, name: str) -> dict[str, Any]:
    for path in manifest_files():
        for doc in documents(path):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in deploy/")


@cache
def script(name: str) -> ModuleType:
    """scripts/image/<name>.py as a module (scripts/ is not a package)."""
    sys.path.insert(0, str(IMAGE_SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"image_{name}", IMAGE_SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
