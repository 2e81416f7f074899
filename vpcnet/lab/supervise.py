"""Keeps a lab node's agent running, as the kubelet keeps a DaemonSet's pod: restarted whenever it exits,
after a back-off that doubles while it keeps failing (the kubelet's CrashLoopBackOff: 10 s doubling to 5 min;
the lab's default: 0.5 s doubling to 30 s) and starts over once the agent stayed up for a while.

Run as `python -m vpcnet.lab.supervise --pid-file P [--initial S] [--max S] -- AGENT ARGV...` inside the
node's namespace (labctl.start_agent); it writes the running agent's pid to P after each start, so the
agent's pid file always names the agent itself (what kill -9 in a fault test hits). On SIGTERM or SIGINT
it stops the agent (SIGTERM, then SIGKILL after a grace period) and exits without restarting it.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

STOP_GRACE = 10.0  # seconds the agent gets to stop on SIGTERM before SIGKILL


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0

    @property
    def stable_after(self) -> float:
        """An agent that ran this long counts as healthy: the next crash waits `initial` again."""
        return 2 * self.maximum

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        if previous is None or ran_for >= self.stable_after:
            return self.initial
        return min(self.maximum, previous * 2)


def parse_backoff(text: str) -> Backoff:
    """ "INITIAL:MAX" in seconds ("0.5:30"); ValueError naming what is wrong."""
    try:
        first, _, last = text.partition(":")
        backoff = Backoff(float(first), float(last or first))
    except ValueError:
        raise ValueError(f"restart back-off {text!r}: expected INITIAL:MAX in seconds, like 0.5:30") from None
    if not (0 < backoff.initial <= backoff.maximum < float("inf")):
        raise ValueError(f"restart back-off {text!r}: need 0 < INITIAL <= MAX (finite seconds)")
    return backoff


class Supervisor:
    def __init__(self, argv: list[str], pid_file: Path, backoff: Backoff) -> None:
        self.argv = argv
        self.pid_file = pid_file
        self.backoff = backoff
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def run(self) -> int:
        delay: float | None = None
        while not self.stopping:
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv)  # stdout/stderr, environment and namespace: ours
            self.pid_file.write_text(f"{self.child.pid}\n")
            code = self.child.wait()
            if self.stopping:
                break
            ran = time.monotonic() - started
            delay = self.backoff.next_delay(delay, ran)
            self.restarts += 1
            print(
                f"vpcnet lab supervisor: the agent exited ({_how(code)}) after {ran:.1f} s; "
                f"restart {self.restarts} in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        self._stop_child()
        return 0

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _how(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vpcnet.lab.supervise")
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--backoff", default="0.5:30", help="INITIAL:MAX restart back-off in seconds")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not argv:
        parser.error("no command to supervise (give it after --)")
    try:
        backoff = parse_backoff(ns.backoff)
    except ValueError as exc:
        parser.error(str(exc))
    supervisor = Supervisor(argv, ns.pid_file, backoff)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
