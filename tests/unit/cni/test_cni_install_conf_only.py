"""`install-cni --conf-only` (the DaemonSet's postStart step): the plugin was placed by the image's init
container, so only the conflist is written, and only once the agent is ready."""

from __future__ import annotations

import json
from pathlib import Path

from test_cni_install import serve_status
from typer.testing import CliRunner

from vpcnet.cli.main import app
from vpcnet.cni import install

NOT_READY = b'1\n{"cniVersion": "1.1.0", "code": 50, "msg": "not ready"}\n'


def test_conf_only_writes_the_conflist_once_ready_and_no_plugin(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "vpcnet-cni").write_bytes(b"placed by the init container")
    server = serve_status(tmp_path / "agent.sock", [NOT_READY, b"0\n"])
    try:
        target = install.install(
            tmp_path / "bin",
            tmp_path / "net.d",
            str(tmp_path / "agent.sock"),
            timeout=10,
            interval=0.01,
            binary=False,
        )
    finally:
        server.close()
    assert json.loads(target.read_text())["plugins"][0]["type"] == "vpcnet-cni"
    assert (tmp_path / "bin" / "vpcnet-cni").read_bytes() == b"placed by the init container"
    assert [p.name for p in (tmp_path / "bin").iterdir()] == ["vpcnet-cni"]


def test_cli_conf_only_writes_nothing_while_the_agent_is_down(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "install-cni", "--conf-only",
            "--bin-dir", str(tmp_path / "bin"),
            "--conf-dir", str(tmp_path / "net.d"),
            "--socket", str(tmp_path / "none.sock"),
            "--timeout", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "config was not written" in result.output and "plugin is in" not in result.output
    assert not (tmp_path / "bin").exists() and not (tmp_path / "net.d").exists()


def test_version_option() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("vpcnet ")
