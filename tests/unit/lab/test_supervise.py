"""The lab's agent supervisor, with a stand-in agent: restarts with a doubling, bounded back-off, restarts
after kill -9, names the running agent in its pid file, and stops it (without restarting) on SIGTERM
(issue 14, defect 11: nothing restarted a killed agent in the lab)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpcnet.lab.supervise import Backoff, parse_backoff

# Records each start; exits at once the first 3 times (a crash loop), then stays up.
STAND_IN = """
import sys, time
path = sys.argv[1]
with open(path, "a") as f:
    f.write(f"{time.monotonic()}\\n")
if len(open(path).read().split()) <= 3:
    sys.exit(3)
time.sleep(300)
"""


def _until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _starts(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_backoff_doubles_to_its_bound_and_starts_over_after_a_stable_run() -> None:
    b = parse_backoff("0.5:30")
    assert b == Backoff(0.5, 30.0)
    delays = [b.next_delay(None, 0.0)]
    for _ in range(8):
        delays.append(b.next_delay(delays[-1], 1.0))
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and max(delays) == 30.0 and delays[-1] == 30.0
    assert b.next_delay(30.0, b.stable_after) == 0.5
    for bad in ("x", "0:1", "2:1", "1:inf", "nan:1"):
        with pytest.raises(ValueError, match="restart back-off"):
            parse_backoff(bad)


def test_the_supervisor_restarts_a_crashing_or_killed_agent_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    starts, pid_file = tmp_path / "starts", tmp_path / "agent.pid"
    script = tmp_path / "agent.py"
    script.write_text(STAND_IN)
    argv = [sys.executable, "-m", "vpcnet.lab.supervise", "--pid-file", str(pid_file), "--backoff", "0.2:0.4"]
    sup = subprocess.Popen([*argv, "--", sys.executable, str(script), str(starts)], stderr=subprocess.PIPE)
    try:
        _until(lambda: len(_starts(starts)) >= 4)  # three crashes, each restarted
        times = _starts(starts)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.4  # 0.2, then doubled and bounded
        _until(lambda: pid_file.exists() and _alive(int(pid_file.read_text())))
        agent = int(pid_file.read_text())
        time.sleep(1.0)  # up longer than twice the bound: healthy, so the back-off starts over
        os.kill(agent, signal.SIGKILL)  # kill -9 of the running agent
        _until(lambda: len(_starts(starts)) >= 5)
        _until(lambda: int(pid_file.read_text()) != agent and _alive(int(pid_file.read_text())))
        current = int(pid_file.read_text())
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
        assert not _alive(current)
        time.sleep(0.6)  # longer than the back-off: nothing starts again
        assert len(_starts(starts)) == 5
        assert sup.stderr is not None
        log = sup.stderr.read().decode()
        assert "exit code 3" in log and "killed by SIGKILL" in log and "restart 4 in 0.2 s" in log
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
