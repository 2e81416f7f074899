"""The native fast-path client behaves as the Python shim: same request, the agent's answer and exit code
passed through, and VERSION and every error answered by the Python shim it hands over to."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.cni import nativeclient, shim
from vpcnet.cni.install import install_client, install_native
from vpcnet.cni.nativeclient import NativeBuildError
from vpcnet.testing.memalloc import MemoryAllocator

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

CONF = json.dumps({"cniVersion": "1.0.0", "name": "vpcnet", "type": "vpcnet-cni"}).encode()


@pytest.fixture(scope="module")
def native(agent: tuple[Path, MemoryAllocator], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = agent
    return install_native(tmp_path_factory.mktemp("bin"), str(path))


def run(binary: Path, env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    proc = subprocess.run([str(binary)], input=stdin, env=env, capture_output=True, timeout=30)
    assert proc.stderr == b""
    return proc.returncode, proc.stdout


def test_add_del_through_the_native_client(native: Path) -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "nat1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
    code, out = run(native, env, CONF)
    assert code == 0, out
    address = json.loads(out)["ips"][0]["address"]
    code, out = run(native, env, CONF)
    assert (code, json.loads(out)["ips"][0]["address"]) == (0, address)
    assert run(native, {**env, "CNI_COMMAND": "DEL"}, CONF) == (0, b"")


def test_agent_errors_pass_through(native: Path) -> None:
    code, out = run(native, {"CNI_COMMAND": "ADD"}, CONF)
    assert code == 1 and json.loads(out)["code"] == 4


def test_version_and_bad_command_go_to_the_python_shim(native: Path) -> None:
    code, out = run(native, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert code == 0 and json.loads(out)["cniVersion"] == "0.4.0"
    code, out = run(native, {"CNI_COMMAND": "FROB"}, CONF)
    assert code == 1 and json.loads(out)["code"] == 4


def test_agent_down_is_answered_by_the_python_shim(tmp_path: Path) -> None:
    binary = install_native(tmp_path / "bin", str(tmp_path / "none.sock"))
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    code, out = run(binary, env, CONF)
    body = json.loads(out)
    assert code == 1 and body["code"] == 11 and body["cniVersion"] == "1.0.0"  # stdin was replayed
    status_conf = b'{"cniVersion": "1.1.0", "name": "vpcnet", "type": "vpcnet-cni"}'
    code, out = run(binary, {"CNI_COMMAND": "STATUS"}, status_conf)
    assert code == 1 and json.loads(out)["code"] == 50
    # malformed: the Python shim answers the spec's code for it, agent or not
    code, out = run(binary, {**env, "CNI_CONTAINERID": ""}, CONF)
    assert code == 1 and json.loads(out)["code"] == 4
    code, out = run(binary, env, b'{"cniVersion": "9.9.9", "name": "vpcnet", "type": "vpcnet-cni"}')
    assert code == 1 and json.loads(out)["code"] == 1


def test_paths_that_cannot_be_compiled_in_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NativeBuildError):
        install_native(tmp_path / "bin", "/tmp/it's.sock")
    assert not (tmp_path / "bin" / "vpcnet-cni").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    env=st.dictionaries(
        st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"]),
        st.sampled_from(
            ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "c1", "eth0", "/run/netns/x", "", "é"]
        ),
    ),
    stdin=st.sampled_from([CONF, b"", b"{", b"[]", b'{"cniVersion": "1.1.0", "name": "n", "type": "t"}']),
)
def test_native_matches_python_shim(
    native: Path, agent: tuple[Path, MemoryAllocator], env: dict[str, str], stdin: bytes
) -> None:
    """Same exit code and same answer as the Python shim, apart from ADD's random MACs."""
    path, _ = agent
    if env.get("CNI_COMMAND") == "ADD":
        env = {**env, "CNI_COMMAND": "CHECK"}  # ADD's answer carries fresh MACs; compare a stable command
    code, out = run(native, env, stdin)
    expected = shim.run({k.encode(): v.encode() for k, v in env.items()}, stdin, str(path))
    assert (code, out) == expected


def test_a_prebuilt_client_is_stamped_per_node(tmp_path: Path, agent: tuple[Path, MemoryAllocator]) -> None:
    """One binary built without options (as the image ships it) serves any socket path once stamped."""
    path, _ = agent
    prebuilt = nativeclient.compile_client(tmp_path / "vpcnet-cni-native")
    unstamped = prebuilt.read_bytes()
    binary = install_native(tmp_path / "bin", str(path), binary=prebuilt)
    assert prebuilt.read_bytes() == unstamped  # the shipped file is not changed
    env = {"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "pre1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    expected = shim.run({k.encode(): v.encode() for k, v in env.items()}, CONF, str(path))
    assert run(binary, env, CONF) == expected
    # an unstamped binary answers a clear error, not a crash
    code, out = run(prebuilt, {"CNI_COMMAND": "VERSION"}, b"")
    assert code == 1 and json.loads(out)["code"] == 999


def test_stamp_refuses_what_it_cannot_fill(tmp_path: Path) -> None:
    values = {"python": "/usr/bin/python3", "shim_dir": "/x", "socket": "/s.sock"}
    with pytest.raises(NativeBuildError, match="no single python slot"):
        nativeclient.stamp(b"\x7fELF not our client", values)
    with pytest.raises(NativeBuildError, match="longer than"):
        nativeclient.check_value("socket", "/" + "s" * 600)
    with pytest.raises(NativeBuildError, match="does not exist"):
        install_native(tmp_path / "bin", "/s.sock", binary=tmp_path / "missing")
    assert not (tmp_path / "bin" / "vpcnet-cni").exists()


def test_a_binary_that_does_not_run_is_not_installed(tmp_path: Path) -> None:
    broken = tmp_path / "vpcnet-cni-native"
    data = nativeclient.compile_client(tmp_path / "good").read_bytes()
    broken.write_bytes(data[:4] + b"\0" * 16 + data[20:])  # a damaged ELF header: exec fails
    with pytest.raises(NativeBuildError, match=r"does not run|answered VERSION"):
        install_native(tmp_path / "bin", "/s.sock", binary=broken)
    assert not (tmp_path / "bin").exists() or not any((tmp_path / "bin").iterdir())


def test_default_install_is_native_and_falls_back_to_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    native = install_client(tmp_path / "a", "/s.sock")
    assert native.read_bytes()[:4] == b"\x7fELF"
    assert install_client(tmp_path / "b", "/s.sock", native=False).read_bytes()[:2] == b"#!"
    # no prebuilt binary anywhere and no compiler (nor a compile kept from before): the Python shim, and a
    # log line saying why
    monkeypatch.setattr(nativeclient, "_compiled", [])
    monkeypatch.setattr(nativeclient, "PREBUILT_PATHS", ())
    monkeypatch.delenv(nativeclient.PREBUILT_ENV, raising=False)
    monkeypatch.setattr(nativeclient.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING):
        fallback = install_client(tmp_path / "c", "/s.sock")
    assert fallback.read_bytes()[:2] == b"#!"
    assert "no C compiler" in caplog.text and "Python shim" in caplog.text
    with pytest.raises(NativeBuildError, match="no C compiler"):
        install_client(tmp_path / "d", "/s.sock", native=True)


def test_parallel_installs_share_one_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lab up` installs on every node at once: one compile, every node's copy stamped from it."""
    monkeypatch.setattr(nativeclient, "_compiled", [])
    monkeypatch.setattr(nativeclient, "PREBUILT_PATHS", ())
    monkeypatch.delenv(nativeclient.PREBUILT_ENV, raising=False)
    compiles: list[Path] = []
    real = nativeclient.compile_client

    def counted(out: Path, compiler: str | None = None) -> Path:
        compiles.append(out)
        return real(out, compiler)

    monkeypatch.setattr(nativeclient, "compile_client", counted)
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(lambda i: install_client(tmp_path / f"n{i}", f"/n{i}.sock"), range(3)))
    assert len(compiles) == 1
    assert all(p.read_bytes()[:4] == b"\x7fELF" for p in paths)
    assert len({p.read_bytes() for p in paths}) == 3  # each stamped with its own socket
