"""Every manifest in deploy/ validates strictly against Kubernetes 1.31's OpenAPI schemas (offline: the
schemas ship in kubernetes-validate's wheel), and the kustomization installs all of them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deployfiles import DEPLOY, ROOT, documents, manifest_files

KUBERNETES_VERSION = "1.31.0"


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_is_valid_strictly(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelled_field() -> None:
    daemonset = next(d for d in documents(DEPLOY / "daemonset.yaml") if d["kind"] == "DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = sorted(DEPLOY / r for r in kustomization["resources"])
    assert listed == manifest_files()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (make system)")
def test_kustomize_renders_every_object() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d}
    expected = {(d["kind"], d["metadata"]["name"]) for p in manifest_files() for d in documents(p)}
    assert rendered == expected
