"""A status stamp names its writer by pid, start time and pid namespace (vpcnet.agent.liveness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vpcnet.agent.liveness import own_stamp, stamp_alive


def test_a_stamp_names_the_writers_pid_namespace() -> None:
    stamp = own_stamp()
    assert stamp["pid"] == os.getpid()
    assert stamp["pid_ns"] == os.stat("/proc/self/ns/pid").st_ino
    assert stamp_alive(stamp)


def test_a_dead_writer_in_this_namespace_is_not_alive(tmp_path: Path) -> None:
    out = tmp_path / "stamp.json"
    code = "import json, sys; from vpcnet.agent.liveness import own_stamp; print(json.dumps(own_stamp()))"
    out.write_text(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    stamp = json.loads(out.read_text())
    assert stamp["pid"] != os.getpid() and not stamp_alive(stamp)


def test_a_stamp_from_a_namespace_nobody_here_is_in_is_not_alive() -> None:
    # this very pid and start time, but claimed by a pid namespace no process of ours is in
    stamp = {**own_stamp(), "pid_ns": own_stamp()["pid_ns"] + 1}
    assert not stamp_alive(stamp)


def test_stamps_without_a_namespace_are_read_as_the_readers() -> None:
    stamp = own_stamp()
    del stamp["pid_ns"]
    assert stamp_alive(stamp)
    assert not stamp_alive({**stamp, "pid_start": stamp["pid_start"] + 1})
    for bad in ({}, {"pid": True, "pid_start": 1}, {"pid": -1, "pid_start": 1}, {"pid": "1", "pid_start": 1}):
        assert not stamp_alive(bad)
