"""Network namespaces and the few kernel tools the lab drives: `ip -batch`, `nft -f`, setns (through
vpcnet.dataplane.nsenter, the one home of namespace entering).

Every change goes through one `ip -batch` per namespace or one `nft -f` file, so bringing a lab up costs a
handful of execs rather than one per object. Named namespaces live in /run/netns (iproute2's convention).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vpcnet.dataplane import nsenter

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


class NetnsWorker:
    """One long-lived thread inside a namespace: run calls there without a thread (or exec) per call."""

    def __init__(self, netns: str) -> None:
        import concurrent.futures

        path = NETNS_DIR / netns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"netns-{netns}",
            initializer=lambda: nsenter.enter_for_good(path),
        )

    def call(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(fn).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Nft:
    """libnftables (the library behind `nft`) through ctypes, inside one namespace: a ruleset load costs
    about a millisecond instead of an exec. Falls back to `nft -f` when the library is missing."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._worker = NetnsWorker(netns)
        self._lib: ctypes.CDLL | None = None
        self._ctx: int | None = None
        try:
            lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        except OSError:
            return
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]

        def make() -> int:
            ctx = lib.nft_ctx_new(0)
            lib.nft_ctx_buffer_error(ctx)
            lib.nft_ctx_buffer_output(ctx)
            return int(ctx)

        self._ctx = self._worker.call(make)
        self._lib = lib

    def apply(self, ruleset: str) -> None:
        lib, ctx = self._lib, self._ctx
        if lib is None or ctx is None:
            nft_apply(ruleset, self.netns)
            return

        def run() -> None:
            rc = lib.nft_run_cmd_from_buffer(ctx, ruleset.encode())
            if rc != 0:
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
                raise KernelError(f"nft in {self.netns} failed: {err}")

        self._worker.call(run)

    def close(self) -> None:
        if self._lib is not None and self._ctx is not None:
            lib, ctx = self._lib, self._ctx
            self._worker.call(lambda: lib.nft_ctx_free(ctx))
            self._ctx = None
        self._worker.close()
