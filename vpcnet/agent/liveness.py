"""Which process wrote a status file, so a reader can tell a live agent's word from a dead one's.

A status file outlives its writer (kill -9, a crash); read alone it says "enforced up to R" for an agent
that enforces nothing any more. The writer stamps it with its pid and that process's start time (field 22
of /proc/<pid>/stat, in clock ticks since boot): a pid can be reused, the pair cannot while the machine
runs. A reader believes the file only while that very process is alive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The start time of a live (not zombie) process, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22; fields[0] is field 3 (state)


def own_stamp() -> dict[str, int]:
    """What a status writer adds: {"pid": ..., "pid_start": ...}."""
    pid = os.getpid()
    return {"pid": pid, "pid_start": _start_ticks(pid) or 0}


def stamp_alive(data: Mapping[str, object]) -> bool:
    """Whether the process that stamped data is still running (False for an unstamped file)."""
    pid, start = data.get("pid"), data.get("pid_start")
    if not isinstance(pid, int) or not isinstance(start, int) or isinstance(pid, bool) or pid <= 0:
        return False
    return _start_ticks(pid) == start
