"""Network namespaces and the few kernel tools the lab drives: `ip -batch`, `nft -f`, setns (through
vpcnet.dataplane.nsenter, the one home of namespace entering).

Every change goes through one `ip -batch` per namespace or one `nft -f` file, so bringing a lab up costs a
handful of execs rather than one per object. Named namespaces live in /run/netns (iproute2's convention).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vpcnet.dataplane import nsenter
from vpcnet.dataplane.kernel_cmd import SubprocessRunner
from vpcnet.dataplane.nft_lib import NftLib

NETNS_DIR = Path("/run/netns")

T = TypeVar("T")


class KernelError(RuntimeError):
    """A kernel tool refused a change; carries the tool's own message."""


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_inode(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def _run(argv: list[str], stdin: str | None, what: str) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise KernelError(f"{what} failed ({' '.join(argv)}): {detail}")
    return proc.stdout


def ip_batch(lines: list[str], netns: str | None = None, *, force: bool = False) -> None:
    """Run iproute2 commands (without the leading `ip`) in one exec, optionally inside `netns`.
    With force, ip goes on after an error (used for removal) and errors are ignored."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    text = "\n".join(lines) + "\n"
    if force:
        subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
        return
    _run(argv, text, f"ip -batch in {netns or 'the host namespace'}")


def bridge_batch(lines: list[str], netns: str) -> None:
    if lines:
        _run(["bridge", "-n", netns, "-batch", "-"], "\n".join(lines) + "\n", f"bridge -batch in {netns}")


def nft_apply(ruleset: str, netns: str) -> None:
    """Load an nft script atomically (one transaction) inside netns."""
    _run(["ip", "netns", "exec", netns, "nft", "-f", "-"], ruleset, f"nft -f in {netns}")


def ip_json(args: list[str], netns: str) -> str:
    return _run(["ip", "-n", netns, "-json", *args], None, f"ip {' '.join(args)} in {netns}")


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Call fn in a short-lived thread that has entered netns. Sockets created there stay in that
    namespace for their whole life, so a host-namespace process can serve inside the lab."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            with nsenter.entered(NETNS_DIR / netns):
                result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            error.append(e)

    t = threading.Thread(target=body, name=f"setns-{netns}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def write_sysctl(netns: str, key: str, value: str) -> None:
    """Set a net.* sysctl inside netns: /proc/sys/net follows the opening thread's namespace."""
    path = Path("/proc/sys") / key.replace(".", "/")

    def write() -> None:
        path.write_text(value)

    run_in_netns(netns, write)


def pids_in_netns(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of the named ones (any thread counts), found through
    /proc by namespace inode: they live in the lab's namespaces, so they belong to the lab."""
    inodes = {i for i in (netns_inode(n) for n in names) if i is not None}
    if not inodes:
        return []
    wanted = {f"net:[{i}]" for i in inodes}
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if os.readlink(entry / "ns" / "net") in wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Nft:
    """nft rulesets loaded inside one namespace through libnftables held open (vpcnet.dataplane.nft_lib): a
    load costs about a millisecond instead of an exec. Falls back to `nft -f` when the library is missing."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._lib = NftLib(SubprocessRunner(netns), netns)

    def apply(self, ruleset: str) -> None:
        if not self._lib.loaded:
            nft_apply(ruleset, self.netns)
            return
        rc, _, err = self._lib.run_text(ruleset.encode())
        if rc != 0:
            raise KernelError(f"nft in {self.netns} failed: {err.decode(errors='replace').strip()}")

    def close(self) -> None:
        self._lib.close()
