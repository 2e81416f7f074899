"""The shim: VERSION by itself, spec errors when the agent is away, the agent's answer passed through."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpcnet.cni import shim

CONF = json.dumps({"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}).encode()
CONF_1_1 = json.dumps({"cniVersion": "1.1.0", "name": "vpcnet", "type": "vpcnet-cni"}).encode()
ENV = {
    b"CNI_COMMAND": b"ADD",
    b"CNI_CONTAINERID": b"c1",
    b"CNI_NETNS": b"/run/netns/x",
    b"CNI_IFNAME": b"eth0",
}


def test_version_answered_by_the_shim() -> None:
    code, out = shim.run({b"CNI_COMMAND": b"VERSION"}, b'{"cniVersion": "1.0.0"}', "/nonexistent.sock")
    assert code == 0
    assert json.loads(out) == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_version_with_bad_stdin_is_decode_error() -> None:
    code, out = shim.run({b"CNI_COMMAND": b"VERSION"}, b"{nope", "/nonexistent.sock")
    assert code == 1
    assert json.loads(out)["code"] == shim.ERR_DECODE


@pytest.mark.parametrize("command", [b"", b"add", b"FROB"])
def test_bad_command_is_error_4(command: bytes) -> None:
    code, out = shim.run({b"CNI_COMMAND": command}, CONF, "/nonexistent.sock")
    body = json.loads(out)
    assert code == 1
    assert body["code"] == shim.ERR_INVALID_ENV
    assert body["cniVersion"] == "1.0.0"  # the config's version


@pytest.mark.parametrize(("command", "code"), [(b"ADD", 11), (b"DEL", 11), (b"STATUS", 50)])
def test_agent_down(command: bytes, code: int, tmp_path: Path) -> None:
    conf = CONF_1_1 if command == b"STATUS" else CONF
    rc, out = shim.run({**ENV, b"CNI_COMMAND": command}, conf, str(tmp_path / "missing.sock"))
    assert rc == 1
    assert json.loads(out)["code"] == code


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[tuple[Path, list[bytes], list[bytes]]]:
    """A unix socket answering each connection with the next canned reply; records requests."""
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    requests: list[bytes] = []
    replies: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                requests.append(data)
                conn.sendall(replies.pop(0) if replies else b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, requests, replies
    server.close()


def test_answer_passed_through(fake_agent: tuple[Path, list[bytes], list[bytes]]) -> None:
    path, requests, replies = fake_agent
    replies.append(b'0\n{"cniVersion": "1.0.0", "ips": []}\n')
    code, out = shim.run({**ENV, b"HOME": b"/root"}, CONF, str(path))
    assert (code, json.loads(out)) == (0, {"cniVersion": "1.0.0", "ips": []})
    assert requests[0].startswith(shim.PROTOCOL)
    assert b"CNI_CONTAINERID=c1\0" in requests[0]
    assert b"HOME" not in requests[0]
    assert requests[0].endswith(b"\0\0" + CONF)


def test_env_socket_overrides_default(fake_agent: tuple[Path, list[bytes], list[bytes]]) -> None:
    path, _, replies = fake_agent
    replies.append(b"0\n")
    code, out = shim.run({**ENV, shim.SOCKET_ENV: str(path).encode()}, CONF, "/nonexistent.sock")
    assert (code, out) == (0, b"")


def test_agent_hanging_up_is_try_again(fake_agent: tuple[Path, list[bytes], list[bytes]]) -> None:
    path, _, replies = fake_agent
    replies.append(b"")
    code, out = shim.run(ENV, CONF, str(path))
    assert code == 1
    assert json.loads(out)["code"] == shim.ERR_TRY_AGAIN_LATER


def test_shim_imports_only_builtins() -> None:
    """The launcher runs `python -I -S`; the shim must not pull in os, socket, json (~20 ms of imports)."""
    shim_dir = os.path.dirname(shim.__file__)
    probe = f"import sys; sys.path.insert(0, {shim_dir!r}); import shim; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    assert "shim" in loaded
    assert not loaded & {"os", "socket", "json", "re", "enum", "vpcnet"}


def test_shim_as_a_process_prints_spec_error(tmp_path: Path) -> None:
    env = {k.decode(): v.decode() for k, v in ENV.items()}
    env["VPCNET_AGENT_SOCKET"] = str(tmp_path / "none.sock")
    for changes, code in (({}, shim.ERR_TRY_AGAIN_LATER), ({"CNI_IFNAME": "é" * 8}, shim.ERR_INVALID_ENV)):
        proc = subprocess.run(
            [sys.executable, "-I", "-S", shim.__file__],
            input=CONF,
            env={**env, **changes},
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 1
        assert json.loads(proc.stdout)["code"] == code
        assert proc.stderr == b""


MALFORMED = [
    # (what the issue found answered 11 with the agent down, the spec's code)
    ({b"CNI_CONTAINERID": None}, CONF, shim.ERR_INVALID_ENV),
    ({b"CNI_IFNAME": "é".encode() * 8}, CONF, shim.ERR_INVALID_ENV),  # 8 characters, 16 bytes
    ({b"CNI_NETNS": b"relative"}, CONF, shim.ERR_INVALID_ENV),
    ({b"CNI_ARGS": b"K8S_POD_NAME"}, CONF, shim.ERR_INVALID_ENV),
    ({b"CNI_CONTAINERID": b"\xff"}, CONF, shim.ERR_INVALID_ENV),
    ({}, b"not json{", shim.ERR_DECODE),
    ({}, b"[1]", shim.ERR_DECODE),
    ({}, b'{"cniVersion": "9.9.9", "name": "vpcnet", "type": "vpcnet-cni"}', shim.ERR_INCOMPATIBLE_VERSION),
    (
        {},
        b'{"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni", "mtu": 1}',
        shim.ERR_INVALID_CONFIG,
    ),
    ({}, b'{"cniVersion": "1.0.0", "type": "vpcnet-cni"}', shim.ERR_INVALID_CONFIG),
]


@pytest.mark.parametrize(("changes", "stdin", "code"), MALFORMED)
def test_malformed_requests_get_their_code_with_the_agent_down(
    changes: dict[bytes, bytes | None], stdin: bytes, code: int, tmp_path: Path
) -> None:
    """Defect 9 (issue 14): 11 tells a runtime to retry; a malformed request will never succeed."""
    env = {k: v for k, v in {**ENV, **changes}.items() if v is not None}
    rc, out = shim.run(env, stdin, str(tmp_path / "missing.sock"))
    assert rc == 1 and json.loads(out)["code"] == code, out


@pytest.mark.parametrize(("changes", "stdin", "code"), MALFORMED)
def test_the_agent_gives_the_same_codes(
    agent: tuple[Path, object], changes: dict[bytes, bytes | None], stdin: bytes, code: int
) -> None:
    path, _ = agent
    env = {k: v for k, v in {**ENV, **changes}.items() if v is not None}
    rc, out = shim.run(env, stdin, str(path))
    assert rc == 1 and json.loads(out)["code"] == code, out


def test_interface_names_are_measured_in_bytes() -> None:
    assert shim.check_ifname("é" * 7, "CNI_IFNAME")  # 14 bytes: fits
    assert shim.check_ifname("x" * 15, "CNI_IFNAME")
    for name in ("é" * 8, "x" * 16, "", "a/b", "a b", "a:b", ".."):
        with pytest.raises(shim.CniError) as info:
            shim.check_ifname(name, "CNI_IFNAME")
        assert info.value.code == shim.ERR_INVALID_ENV
