"""install-cni: the launcher first, the conflist only once the agent answers STATUS ready."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpcnet.cli.main import app
from vpcnet.cni import install


def test_conflist_shape() -> None:
    conf = install.conflist(mtu=1500, veth_prefix="abc")
    assert conf == {
        "cniVersion": "1.0.0",
        "name": "vpcnet",
        "plugins": [
            {"type": "vpcnet-cni", "vethPrefix": "abc", "mtu": 1500},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    assert [p["type"] for p in install.conflist(portmap=False)["plugins"]] == ["vpcnet-cni"]


def test_launcher_runs_the_shim_isolated(tmp_path: Path) -> None:
    target = install.install_binary(tmp_path / "bin", str(tmp_path / "agent.sock"))
    text = target.read_text()
    first = text.splitlines()[0]
    assert first.startswith("#!/") and first.endswith(" -IS")  # one token: the kernel passes one argument
    assert os.access(target, os.X_OK)
    proc = subprocess.run(
        [str(target)], input=b'{"cniVersion": "0.4.0"}', env={"CNI_COMMAND": "VERSION"}, capture_output=True
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
    conf = b'{"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}'
    proc = subprocess.run([str(target)], input=conf, env=env, capture_output=True)
    body = json.loads(proc.stdout)
    assert proc.returncode == 1 and body["code"] == 11 and str(tmp_path / "agent.sock") in body["details"]
    # a malformed request is answered by its own code even with the agent down (the runtime must not retry)
    proc = subprocess.run([str(target)], input=b"{}", env={"CNI_COMMAND": "ADD"}, capture_output=True)
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 4


def test_no_conflist_while_the_agent_is_down(tmp_path: Path) -> None:
    with pytest.raises(install.AgentNotReady):
        install.install(tmp_path / "bin", tmp_path / "net.d", str(tmp_path / "none.sock"), timeout=0)
    assert (tmp_path / "bin" / "vpcnet-cni").exists()
    assert not (tmp_path / "net.d" / install.CONFLIST_NAME).exists()


def serve_status(path: Path, replies: list[bytes]) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(replies.pop(0) if len(replies) > 1 else replies[0])

    threading.Thread(target=loop, daemon=True).start()
    return server


def test_conflist_written_once_ready(tmp_path: Path) -> None:
    not_ready = b'1\n{"cniVersion": "1.1.0", "code": 50, "msg": "not ready"}\n'
    server = serve_status(tmp_path / "agent.sock", [not_ready, not_ready, b"0\n"])
    try:
        target = install.install(
            tmp_path / "bin", tmp_path / "net.d", str(tmp_path / "agent.sock"), timeout=10, interval=0.01
        )
    finally:
        server.close()
    assert target == tmp_path / "net.d" / install.CONFLIST_NAME
    assert json.loads(target.read_text())["name"] == "vpcnet"
    assert [p.name for p in (tmp_path / "net.d").iterdir()] == [install.CONFLIST_NAME]  # no temp files left


def test_cli_reports_agent_not_ready(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "install-cni",
            "--bin-dir", str(tmp_path / "bin"),
            "--conf-dir", str(tmp_path / "net.d"),
            "--socket", str(tmp_path / "none.sock"),
            "--timeout", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not ready" in result.output and "config was not written" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--veth-prefix", "eth"], "--veth-prefix: vethPrefix must be 1-4 letters or digits"),
        (["--veth-prefix", "toolong"], "--veth-prefix: vethPrefix must be 1-4 letters or digits"),
        (["--socket", "relative.sock"], "--socket 'relative.sock' must be an absolute path"),
        (["--bin-dir", "FILE"], "exists and is not a directory"),
        (["--conf-dir", "FILE"], "exists and is not a directory"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A config the plugin would refuse on every ADD is never installed (the node would turn Ready and then
    fail every pod), and nothing is written: not even the plugin."""
    (tmp_path / "FILE").write_text("")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    defaults = {
        "--bin-dir": str(tmp_path / "bin"),
        "--conf-dir": str(tmp_path / "net.d"),
        "--socket": str(tmp_path / "agent.sock"),
    }
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    result = CliRunner().invoke(app, ["install-cni", *args, "--timeout", "0"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "nothing was written" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_a_bad_knob_in_the_environment_is_named_not_a_crash(tmp_path: Path) -> None:
    """install-cni's defaults come from the agent's variables; a bad one is this command's error naming the
    variable (it used to be read at import, so every vpcnet command died with a traceback)."""
    import sys

    env = {**os.environ, "AWS_VPC_ENI_MTU": "abc"}
    args = ["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "c"), "--timeout", "0"]
    for argv, code in ((["lab", "status", "--help"], 0), (["install-cni", *args], 2)):
        proc = subprocess.run(
            [sys.executable, "-m", "vpcnet.cli", *argv], env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
    assert "AWS_VPC_ENI_MTU" in proc.stderr
    assert not (tmp_path / "bin").exists()


@pytest.mark.parametrize(
    "flags", [["--native", "--python"], ["--python", "--native-binary", "/usr/lib/vpcnet/vpcnet-cni-native"]]
)
def test_client_choices_that_exclude_each_other_are_refused(tmp_path: Path, flags: list[str]) -> None:
    args = ["install-cni", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d"), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "exclude each other" in result.output
    assert not (tmp_path / "bin").exists()
