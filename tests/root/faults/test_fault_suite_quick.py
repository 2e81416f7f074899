"""The fault suite in its bounded form (`--quick`: kill -9 x3, fuzz campaigns of a few hundred cases, one
round of the others): every scenario script runs as `make faults` runs it, and every figure that must be 0
is 0. The full counts are `make faults` (figures in the README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

FAULTS = Path(__file__).resolve().parents[3] / "faults"
MUST_BE_ZERO = {
    "kill9": ["addresses_lost", "addresses_duplicated", "pods_unwired", "ec2_unknown", "leftovers"],
    "datastore_restart": ["seconds_reachable_against_policy", "leftovers"],
    "ec2_faults": [
        "adds_hung",
        "adds_failed_other",
        "leaks",
        "addresses_duplicated",
        "pods_unwired",
        "outwait_rounds_not_outwaited",
        "leftovers",
    ],
    "race": ["leaks", "addresses_duplicated", "pods_unwired", "leftovers"],
    "cni_fuzz": ["tracebacks", "wrong_codes", "agent_deaths", "leftovers"],
    "manifest_fuzz": ["tracebacks", "partial_writes", "leftovers"],
}
FIGURE_PREFIX = {"ec2_faults": "ec2"}


def figures(output: str) -> dict[str, float]:
    out = {}
    for line in output.splitlines():
        if line.startswith("FIGURE "):
            _, name, value = line.split()
            out[name] = float(value)
    return out


def test_every_must_be_zero_figure_is_zero() -> None:
    if os.geteuid() != 0:
        pytest.skip("the fault suite needs root")
    problems = []
    for script, zero in MUST_BE_ZERO.items():
        proc = subprocess.run(
            [sys.executable, str(FAULTS / f"{script}.py"), "--quick"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        found = figures(proc.stdout)
        if proc.returncode != 0 or not found:
            problems.append(
                f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
            continue
        name = FIGURE_PREFIX.get(script, script)
        for figure in zero:
            value = found.get(f"faults.{name}.{figure}")
            if value != 0:
                problems.append(f"faults.{name}.{figure} = {value}\n{proc.stdout[-3000:]}")
    assert not problems, "\n\n".join(problems)
    assert found  # the last scenario printed figures too


def test_figures_parse() -> None:
    assert figures("x\nFIGURE faults.kill9.addresses_lost 0\nFIGURE faults.race.leaks 2\n") == {
        "faults.kill9.addresses_lost": 0.0,
        "faults.race.leaks": 2.0,
    }
