"""scripts/image/build.py --stamp/--reuse: a build is skipped only when the stamp names these very inputs
and the archive is still the one stamped; anything else builds (here: refuses, not being root)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from deployfiles import script


def _options(build: ModuleType, version: str) -> dict[str, object]:
    """The options main() stamps for a build of version (its default name)."""
    name = f"localhost/vpcnet:{version.replace('+', '-')}"
    return {"name": name, "version": version, "epoch": build.source_date_epoch()} | {
        "suite": build.SUITE,
        "mirror": build.MIRROR,
    }


def test_a_matching_stamp_reuses_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = script("build")
    archive, stamp = tmp_path / "v.oci.tar", tmp_path / "v.stamp"
    archive.write_bytes(b"an archive")
    inputs = build.inputs_digest(_options(build, build.version()))
    stamp.write_text(json.dumps({"inputs": inputs, "archive": build.file_digest(archive)}))
    argv = ["--output", str(archive), "--stamp", str(stamp), "--reuse"]
    assert build.main(argv) == 0
    assert "reused" in capsys.readouterr().out
    assert build.stamped(stamp, inputs, archive)
    # another version is another image; a changed archive is not the stamped one
    assert not build.stamped(stamp, build.inputs_digest(_options(build, "9.9.9")), archive)
    archive.write_bytes(b"another archive")
    assert not build.stamped(stamp, inputs, archive)
    stamp.write_text("not json")
    assert not build.stamped(stamp, inputs, archive)


def test_reuse_needs_a_stamp() -> None:
    with pytest.raises(SystemExit):
        script("build").main(["--reuse"])


class BuildStarted(Exception):
    pass


def test_a_stale_stamp_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = script("build")
    archive, stamp = tmp_path / "v.oci.tar", tmp_path / "v.stamp"
    archive.write_bytes(b"an archive")
    stamp.write_text(json.dumps({"inputs": "old", "archive": build.file_digest(archive)}))

    def started(*_args: object) -> None:
        raise BuildStarted

    monkeypatch.setattr(build.os, "geteuid", lambda: 0)
    monkeypatch.setattr(build, "fetch_wheels", started)
    with pytest.raises(BuildStarted):  # not reused: the build begins
        build.main(
            ["--output", str(archive), "--stamp", str(stamp), "--reuse", "--work", str(tmp_path / "w")]
        )


def test_the_inputs_digest_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = script("build")
    for name in build.INPUTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text("a")
    (tmp_path / "vpcnet").mkdir()
    (tmp_path / "vpcnet" / "m.py").write_text("x = 1\n")
    (tmp_path / "vpcnet" / "__pycache__").mkdir()
    monkeypatch.setattr(build, "ROOT", tmp_path)
    first = build.inputs_digest({"v": 1})
    (tmp_path / "vpcnet" / "__pycache__" / "m.pyc").write_bytes(b"cache")
    assert build.inputs_digest({"v": 1}) == first  # bytecode caches are no input
    assert build.inputs_digest({"v": 2}) != first
    (tmp_path / "vpcnet" / "m.py").write_text("x = 2\n")
    assert build.inputs_digest({"v": 1}) != first
