"""The light entry point: `vpcnet agent` runs without typer; anything else (and bad agent options) goes to the
full CLI, which reports it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vpcnet.cli import entry
from vpcnet.cli.agent_run import OPTION_ENV


def test_agent_options_are_parsed_without_the_cli() -> None:
    options = entry._agent_options(["--socket", "/run/x.sock", "--node-name", "n1"])
    assert options is not None
    assert options["socket"] == "/run/x.sock" and options["node_name"] == "n1"
    assert set(options) == set(OPTION_ENV)


@pytest.mark.parametrize("argv", [["--help"], ["--bogus"], ["--socket"], ["extra"]])
def test_what_the_light_path_does_not_know_goes_to_the_full_cli(argv: list[str]) -> None:
    assert entry._agent_options(argv) is None


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VPCNET_MODE": "nonsense"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_agent_start_imports_no_typer() -> None:
    # A bad setting stops the agent right after its configuration is read: far enough to see the imports.
    result = _run(
        "import sys\nfrom vpcnet.cli.entry import main\n"
        "try:\n    main(['agent'])\nexcept SystemExit as e:\n"
        "    print('exit', e.code, 'typer' in sys.modules, 'rich' in sys.modules)\n"
    )
    assert "VPCNET_MODE='nonsense'" in result.stderr
    assert result.stdout.split() == ["exit", "2", "False", "False"]


def test_other_commands_reach_the_full_cli() -> None:
    result = _run("from vpcnet.cli.entry import main\nmain(['--version'])")
    assert result.returncode == 0 and result.stdout.startswith("vpcnet ")
