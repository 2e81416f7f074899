"""scripts/image/ocipack.py: layers and archives are byte-identical for the same tree and epoch, whatever
the files' own times, and hold what an OCI runtime needs."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
from deployfiles import script

EPOCH = 1_700_000_000


def make_tree(root: Path, mtime: int) -> None:
    (root / "opt/app").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "dev/leftover").write_text("build residue")
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    (root / "usr/bin/old").write_text("from a package")
    long_dir = root / "opt/app" / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "module.py").write_text("x = 1\n")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-link")
    os.symlink("tool", root / "usr/bin/alias")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
    old = EPOCH - 10_000
    os.utime(root / "usr/bin/old", (old, old))


LAYERS = [("app", ["opt/app"], "set"), ("base", [], "clamp")]


def test_same_tree_same_bytes_whatever_the_file_times(tmp_path: Path) -> None:
    ocipack = script("ocipack")
    digests = []
    for run, mtime in (("a", EPOCH + 5_000), ("b", EPOCH + 90_000)):
        make_tree(tmp_path / run / "root", mtime)
        layers = ocipack.pack_layers(tmp_path / run / "root", LAYERS, tmp_path / run / "layers", EPOCH)
        ocipack.write_archive(tmp_path / run / "image.tar", layers, {"Cmd": ["x"]}, "localhost/t:1", EPOCH)
        digests.append(([la.blob.digest for la in layers], (tmp_path / run / "image.tar").read_bytes()))
    assert digests[0] == digests[1]


def test_layer_contents(tmp_path: Path) -> None:
    ocipack = script("ocipack")
    make_tree(tmp_path / "root", EPOCH + 5_000)
    app, base = ocipack.pack_layers(tmp_path / "root", LAYERS, tmp_path / "layers", EPOCH)
    raw = app.blob.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    assert app.blob.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert app.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(raw)).hexdigest()
    with tarfile.open(app.blob.path) as tar:
        names = tar.getnames()
        assert names[:2] == ["opt", "opt/app"]  # parents come along, so the layer unpacks alone
        assert any(n.endswith("/module.py") and len(n) > 100 for n in names)
        for member in tar.getmembers():
            assert member.pax_headers == {} and member.mtime == EPOCH and member.uname == ""
    with tarfile.open(base.blob.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "dev" in members and "dev/leftover" not in members
    assert members["usr/bin/old"].mtime == EPOCH - 10_000  # older than the epoch: kept
    assert members["usr/bin/tool"].mtime == EPOCH  # newer: clamped
    assert members["usr/bin/tool"].mode == 0o755
    assert members["usr/bin/alias"].issym() and members["usr/bin/alias"].linkname == "tool"
    hard = [m for m in members.values() if m.islnk()]
    assert len(hard) == 1 and hard[0].linkname in ("usr/bin/tool", "usr/bin/tool-link")
    assert not any(n.startswith("opt/app/") for n in members)


def test_archive_is_an_oci_layout(tmp_path: Path) -> None:
    ocipack = script("ocipack")
    make_tree(tmp_path / "root", EPOCH)
    layers = ocipack.pack_layers(tmp_path / "root", LAYERS, tmp_path / "layers", EPOCH)
    layers.reverse()
    out = tmp_path / "image.tar"
    digests = ocipack.write_archive(out, layers, {"Entrypoint": ["x"]}, "localhost/t:1", EPOCH)
    with tarfile.open(out) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(blobs["index.json"])["manifests"]
    assert entry["digest"] == digests["manifest"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/t:1"
    manifest = json.loads(blobs[f"blobs/sha256/{entry['digest'][7:]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["rootfs"]["diff_ids"] == [la.diff_id for la in layers]
    assert config["config"] == {"Entrypoint": ["x"]}
    for descriptor in manifest["layers"]:
        blob = blobs[f"blobs/sha256/{descriptor['digest'][7:]}"]
        assert hashlib.sha256(blob).hexdigest() == descriptor["digest"][7:]
        assert len(blob) == descriptor["size"]


def test_bad_layer_spec_is_refused(tmp_path: Path) -> None:
    ocipack = script("ocipack")
    make_tree(tmp_path / "root", EPOCH)
    with pytest.raises(ValueError, match="no layer takes"):
        ocipack.pack_layers(tmp_path / "root", [("app", ["opt"], "set")], tmp_path / "l", EPOCH)
    with pytest.raises(ValueError, match="clamp or set"):
        ocipack.pack_layers(tmp_path / "root", [("all", [], "keep")], tmp_path / "l", EPOCH)
