"""Which process wrote a status file, so a reader can tell a live agent's word from a dead one's.

A status file outlives its writer (kill -9, a crash); read alone it says "enforced up to R" for an agent
that enforces nothing any more. The writer stamps it with its pid and that process's start time (field 22
of /proc/<pid>/stat, in clock ticks since boot): a pid can be reused, the pair cannot while the machine
runs. A reader believes the file only while that very process is alive.

A pid means something only in its pid namespace: an agent in a container (its own pid namespace, as a
DaemonSet without hostPID runs it) writes pid 7 while the reader on the host knows it as 31337, and the
host's pid 7 is some other process. So the stamp also names the writer's pid namespace (the inode of
/proc/self/ns/pid); a reader in another namespace looks for the process of that namespace whose innermost
pid (the last of NSpid in /proc/<pid>/status) is the stamped one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROC = Path("/proc")
# (pid namespace, pid there) -> the pid this reader sees it as; checked again on every use.
_translated: dict[tuple[int, int], int] = {}


def _start_ticks(pid: int | str) -> int | None:
    """The start time of a live (not zombie) process, or None when there is none."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22; fields[0] is field 3 (state)


def _pid_ns(pid: int | str) -> int | None:
    """The inode of a process's pid namespace, or None when it cannot be read (gone, or not ours to see)."""
    try:
        return os.stat(PROC / str(pid) / "ns" / "pid").st_ino
    except OSError:
        return None


def _innermost_pid(pid: int) -> int | None:
    """The process's pid in its own pid namespace (the last NSpid entry)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _is(local: int, ns: int, pid: int) -> bool:
    return _pid_ns(local) == ns and _innermost_pid(local) == pid


def _local_pid(ns: int, pid: int) -> int | None:
    """The pid this reader sees for process `pid` of pid namespace `ns` (None if none is visible)."""
    if ns == _pid_ns("self"):
        return pid
    cached = _translated.get((ns, pid))
    if cached is not None and _is(cached, ns, pid):
        return cached
    _translated.pop((ns, pid), None)
    for entry in PROC.iterdir():
        if entry.name.isdigit() and _is(int(entry.name), ns, pid):
            _translated[(ns, pid)] = int(entry.name)
            return int(entry.name)
    return None


def own_stamp() -> dict[str, int]:
    """What a status writer adds: {"pid": ..., "pid_start": ..., "pid_ns": ...}."""
    # "self" rather than getpid(): right even where /proc was mounted for another pid namespace
    return {"pid": os.getpid(), "pid_start": _start_ticks("self") or 0, "pid_ns": _pid_ns("self") or 0}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def stamp_alive(data: Mapping[str, object]) -> bool:
    """Whether the process that stamped data is still running (False for an unstamped file)."""
    pid, start = _int(data.get("pid")), data.get("pid_start")
    if pid is None or not isinstance(start, int):
        return False
    ns = _int(data.get("pid_ns"))  # absent in stamps of older writers: taken as the reader's namespace
    local = pid if ns is None else _local_pid(ns, pid)
    return local is not None and _start_ticks(local) == start
