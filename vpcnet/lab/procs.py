"""Background processes of the lab (etcd, the lab daemon, node agents): started detached with a pid file and
a log file under the lab's run dir, stopped by that pid only after checking the process is still the one we
started (its command line names the lab's run dir), never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    in_netns: str | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start argv detached (own session, stdin from /dev/null, output appended to log_file), inside the
    named network namespace if in_netns is given."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    if in_netns:
        # `ip netns exec` execs the command in place (same pid) after entering the namespace and mounting
        # a /sys of that namespace; a preexec_fn doing setns would not be safe in a threaded parent.
        argv = ["ip", "netns", "exec", in_netns, *argv]
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            list(argv),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            close_fds=True,
        )
    proc.returncode = 0  # keeps Popen.__del__ from warning about a running child
    # Popen returns while the kernel is still finishing the exec: the new command line (which read_pid checks)
    # shows up a moment later. Wait for it, so that a pid file always names a recognisable process.
    for _ in range(500):
        if _cmdline(proc.pid) or _gone(proc.pid):
            break
        time.sleep(0.002)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The live pid in pid_file, if its command line still contains marker (a pid can be reused)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    _reap(pid)
    if _gone(pid) or marker not in _cmdline(pid):
        return None
    return pid


def alive(pid_file: Path, marker: str) -> bool:
    return read_pid(pid_file, marker) is not None


def kill_pids(pids: Sequence[int], timeout: float = 3.0) -> None:
    """SIGTERM, wait up to timeout for all of them, then SIGKILL the rest."""
    live = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            live.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        for pid in live:
            _reap(pid)
        live = [p for p in live if not _gone(p)]
        if live:
            time.sleep(0.02)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in live:
        for _ in range(100):
            _reap(pid)
            if _gone(pid):
                break
            time.sleep(0.01)


def stop(pid_file: Path, marker: str, timeout: float = 3.0) -> bool:
    """Stop the process of pid_file (if it is still ours) and remove the pid file. True if one was running."""
    pid = read_pid(pid_file, marker)
    if pid is not None:
        kill_pids([pid], timeout)
    pid_file.unlink(missing_ok=True)
    return pid is not None
