"""`vpcnet install-cni`: put the plugin where runtimes look, and the network config last.

The plugin is the native client (nativeclient.py) by default, the Python launcher where none can be had
(or with --python); both answer the same, the native one hands everything but the plain request to the shim.

As aws-node does, the config is written only once the agent answers STATUS ready: a runtime (kubelet)
marks the node's network Ready when a config appears, so it must not appear before pods can be wired.
Both files are written atomically (temporary file, then rename), so a runtime never reads half a file.

The Python launcher is `#!<python> -I -S`, the shim's directory on sys.path, then the shim. -I -S
skips site-packages, .pth files and importlib.metadata (pip's console-script wrapper costs ~15 ms more).
"""

from __future__ import annotations

import json
import logging
import os
import py_compile
import sys
import time
from pathlib import Path
from typing import Any

from vpcnet.cni import nativeclient, shim, spec
from vpcnet.cni.nativeclient import NativeBuildError

log = logging.getLogger(__name__)

PLUGIN_TYPE = "vpcnet-cni"
NETWORK_NAME = "vpcnet"
CONFLIST_NAME = "10-vpcnet.conflist"
CONFLIST_VERSION = "1.0.0"
SYSTEM_PYTHON = "/usr/bin/python3"


def interpreter() -> str:
    """The interpreter for the launcher. The shim needs only the standard library (any Python 3.8+), so
    the system's /usr/bin/python3 is preferred: Debian's build (static libpython) starts ~3 ms faster than
    a shared-libpython one such as pyenv's; else the real interpreter behind this venv."""
    if os.access(SYSTEM_PYTHON, os.X_OK):
        return os.path.realpath(SYSTEM_PYTHON)
    base = getattr(sys, "_base_executable", "") or sys.executable
    return os.path.realpath(base)


def launcher_text(socket_path: str, python: str | None = None) -> str:
    shim_dir = os.path.dirname(os.path.abspath(shim.__file__))
    return (
        f"#!{python or interpreter()} -IS\n"  # one token: the kernel passes the rest as one argument
        "# vpcnet-cni launcher (written by `vpcnet install-cni`): vpcnet/cni/shim.py without site.\n"
        "import sys\n"
        f"sys.path.insert(0, {shim_dir!r})\n"
        "from shim import main\n"
        f"main({socket_path!r})\n"
    )


def conflist(
    *,
    mtu: int = 9001,
    veth_prefix: str = "eni",
    portmap: bool = True,
    name: str = NETWORK_NAME,
) -> dict[str, Any]:
    """The network config list, shaped like the VPC CNI's 10-aws.conflist (portmap chained, snat on)."""
    plugins: list[dict[str, Any]] = [{"type": PLUGIN_TYPE, "vethPrefix": veth_prefix, "mtu": mtu}]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    return {"cniVersion": CONFLIST_VERSION, "name": name, "plugins": plugins}


def write_atomically(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(temp, mode)
    os.replace(temp, path)


def agent_status(socket_path: str) -> tuple[bool, str]:
    """Ask the agent STATUS through the shim's own code path: (ready, why not)."""
    conf = json.dumps({"cniVersion": "1.1.0", "name": NETWORK_NAME, "type": PLUGIN_TYPE}).encode()
    code, out = shim.run({b"CNI_COMMAND": b"STATUS"}, conf, socket_path)
    if code == 0:
        return True, ""
    try:
        return False, str(json.loads(out).get("msg", out))
    except ValueError:
        return False, out.decode(errors="replace")


class AgentNotReady(RuntimeError):
    pass


class InstallError(ValueError):
    """install-cni was given something it cannot install; names the option. Nothing was written."""


# The plugin's own config fields and the install-cni options that set them.
_OPTION_OF_FIELD = {"vethPrefix": "--veth-prefix", "mtu": "--mtu"}


def check_input(bin_dir: Path, conf_dir: Path, socket_path: str, *, mtu: int, veth_prefix: str) -> None:
    """Refuse, before writing anything, what would install a plugin that fails every pod: the network
    config goes through the plugin's own parser, and the socket path is baked into the launcher, which
    runtimes run from any directory."""
    for option, directory in (("--bin-dir", bin_dir), ("--conf-dir", conf_dir)):
        if directory.exists() and not directory.is_dir():
            raise InstallError(f"{option} {str(directory)!r} exists and is not a directory")
    if not os.path.isabs(socket_path):
        raise InstallError(f"--socket {socket_path!r} must be an absolute path")
    plugin = conflist(mtu=mtu, veth_prefix=veth_prefix, portmap=False)["plugins"][0]
    conf = {"cniVersion": CONFLIST_VERSION, "name": NETWORK_NAME, **plugin}
    try:
        spec.parse_config(json.dumps(conf).encode(), "ADD")
    except spec.CniError as exc:
        option = _OPTION_OF_FIELD.get(exc.msg.split(" ", 1)[0], "the network config")
        raise InstallError(f"{option}: {exc.msg}, got {exc.details}") from None


def install_binary(bin_dir: Path, socket_path: str) -> Path:
    py_compile.compile(shim.__file__, doraise=True)  # so the launcher loads cached bytecode
    target = bin_dir / PLUGIN_TYPE
    write_atomically(target, launcher_text(socket_path), 0o755)
    return target


def install_native(
    bin_dir: Path,
    socket_path: str,
    binary: Path | None = None,
    *,
    python: str | None = None,
    shim_dir: str | None = None,
) -> Path:
    """Install the native fast-path client as bin_dir/vpcnet-cni: the prebuilt one (binary, or one found
    where nativeclient looks) or one compiled now, stamped with this node's paths and run once. It hands
    VERSION and every error to the Python shim, which install_native also prepares. The image build passes
    `python` and `shim_dir` as they will be on the node (it places the shim itself); such a client is for
    another root, so it is not run here."""
    for_this_node = python is None and shim_dir is None
    values = {
        "python": python or interpreter(),
        "shim_dir": shim_dir or os.path.dirname(os.path.abspath(shim.__file__)),
        "socket": socket_path,
    }
    for slot, value in values.items():
        nativeclient.check_value(slot, value)  # before building anything
    if for_this_node:
        py_compile.compile(shim.__file__, doraise=True)
    data, origin = nativeclient.client_bytes(binary)
    stamped = nativeclient.stamp(data, values)
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / PLUGIN_TYPE
    temp = bin_dir / f".{PLUGIN_TYPE}.{os.getpid()}.tmp"
    try:
        temp.write_bytes(stamped)
        os.chmod(temp, 0o755)
        if for_this_node:
            nativeclient.smoke_test(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    log.info("installed the native CNI client (%s) as %s", origin, target)
    return target


def install_client(
    bin_dir: Path, socket_path: str, native: bool | None = None, native_binary: Path | None = None
) -> Path:
    """The plugin executable: native=None (the default) the native client when one can be had, else the
    Python launcher, saying why; True the native client or NativeBuildError; False the Python launcher."""
    if native is False:
        return install_binary(bin_dir, socket_path)
    try:
        return install_native(bin_dir, socket_path, native_binary)
    except NativeBuildError as exc:
        if native or native_binary is not None:
            raise
        log.warning("no native CNI client (%s); installing the Python shim (slower start, same answers)", exc)
        return install_binary(bin_dir, socket_path)


def install(
    bin_dir: Path,
    conf_dir: Path,
    socket_path: str,
    *,
    timeout: float = 300.0,
    interval: float = 0.5,
    mtu: int = 9001,
    veth_prefix: str = "eni",
    portmap: bool = True,
    native: bool | None = None,
    native_binary: Path | None = None,
    binary: bool = True,
) -> Path:
    """Install the plugin (see install_client: the native fast path by default), wait until the agent is
    ready, then write the conflist; returns its path. Bad input raises InstallError first.
    binary=False writes only the conflist: the image's init container has placed the plugin already."""
    check_input(bin_dir, conf_dir, socket_path, mtu=mtu, veth_prefix=veth_prefix)
    if binary:
        install_client(bin_dir, socket_path, native, native_binary)
    deadline = time.monotonic() + timeout
    while True:
        ready, why = agent_status(socket_path)
        if ready:
            break
        if time.monotonic() >= deadline:
            raise AgentNotReady(f"the agent at {socket_path} is not ready after {timeout:g} s: {why}")
        time.sleep(interval)
    target = conf_dir / CONFLIST_NAME
    text = json.dumps(conflist(mtu=mtu, veth_prefix=veth_prefix, portmap=portmap), indent=2) + "\n"
    write_atomically(target, text, 0o644)
    return target
