"""`vpcnet demo` ends with `lab down`: it refuses to start on a lab that is already up (it would pour its pods
into it and then remove it), before running any step."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpcnet.cli import demo
from vpcnet.cli.main import app
from vpcnet.lab import layout


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, ...]]:
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path)
    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    monkeypatch.setattr(demo, "_vpcnet", lambda *args, check=True: ran.append(args))
    monkeypatch.setattr(demo, "_kubectl", lambda _config, *args, check=True: ran.append(("kubectl", *args)))
    return ran


def test_an_existing_lab_is_left_alone(steps: list[tuple[str, ...]], tmp_path: Path) -> None:
    (tmp_path / "aumine").mkdir()
    (tmp_path / "aumine" / "lab.json").write_text("{}")
    result = CliRunner().invoke(app, ["demo"], env={"VPCNET_LAB": "aumine"})
    assert result.exit_code == 2, result.output
    assert "lab aumine is already up" in result.output and "VPCNET_LAB" in result.output
    assert steps == []  # no `lab up`, no `apply`, above all no `lab down`
    assert (tmp_path / "aumine" / "lab.json").exists()


def test_a_bad_lab_name_is_named(steps: list[tuple[str, ...]]) -> None:
    result = CliRunner().invoke(app, ["demo"], env={"VPCNET_LAB": "Bad!"})
    assert result.exit_code == 2 and "VPCNET_LAB" in result.output and "'Bad!'" in result.output
    assert steps == []


def test_a_free_name_runs_the_tour_and_tears_down(steps: list[tuple[str, ...]]) -> None:
    result = CliRunner().invoke(app, ["demo", "--nodes", "2"], env={"VPCNET_LAB": "aufree"})
    assert result.exit_code == 0, result.output
    assert steps[0] == ("lab", "up", "--nodes", "2") and steps[-1] == ("lab", "down")
    assert ("kubectl", "get", "pods", "-A", "-o", "wide") in steps  # the story is told through kubectl
