"""An agent in a container writes its status from its own pid namespace (the lab's `ctr run`, a DaemonSet
without hostPID): its stamped pid is the container's, which on the host names another process or none.
The host's reader still believes the stamp exactly while that writer lives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpcnet.agent.liveness import _start_ticks, stamp_alive

pytestmark = pytest.mark.root

WRITER = (
    "import json, sys, time; from vpcnet.agent.liveness import own_stamp; "
    "open(sys.argv[1] + '.tmp', 'w').write(json.dumps(own_stamp())); "
    "__import__('os').replace(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(600)"
)


def test_a_stamp_written_in_another_pid_namespace_is_judged_by_its_writer(tmp_path: Path) -> None:
    path = tmp_path / "stamp.json"
    # unshare forks the writer as pid 1 of a new pid namespace, with a /proc of that namespace
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", WRITER, str(path)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer wrote no stamp"
            time.sleep(0.05)
        stamp = json.loads(path.read_text())
        assert stamp["pid"] == 1  # the writer's own view
        assert stamp["pid_ns"] != os.stat("/proc/self/ns/pid").st_ino
        # read as a pid of this namespace, the stamp names init: a different start time
        assert _start_ticks(1) != stamp["pid_start"]
        assert stamp_alive(stamp)
        assert stamp_alive(stamp)  # again, through the remembered translation
        assert not stamp_alive({**stamp, "pid_start": stamp["pid_start"] + 1})
        assert not stamp_alive({**stamp, "pid": 2})
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    # proc is unshare; the writer it forked dies of the same signal, but not necessarily by the time unshare
    # is reaped: poll for its end rather than race it
    deadline = time.monotonic() + 60
    while stamp_alive(stamp):
        assert time.monotonic() < deadline, "the killed writer's stamp is still believed"
        time.sleep(0.05)
