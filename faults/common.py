"""What every fault scenario shares: its lab (random prefix, torn down in finally, checked for leftovers),
its command line (--quick, --iterations, --cases) and its figures.

The scenarios reuse the root tests' lab helpers (tests/root/lab_fixture.py, tests/root/ipamd/ipamd_lab.py)
rather than a second copy of them, and bench/figures.py for the `FIGURE <name> <value>` lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "bench", ROOT / "tests" / "root", ROOT / "tests" / "root" / "ipamd"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from figures import Figures  # noqa: E402
from lab_fixture import LabHandle, leftovers, running_lab  # noqa: E402

__all__ = ["Figures", "LabHandle", "Scenario", "log", "netns_left", "poll"]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def netns_left(prefix: str) -> list[str]:
    """`ip netns list` entries that carry the prefix (what a torn-down lab must not leave)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{prefix}-")]


def poll(check: Callable[[], bool], timeout: float, interval: float = 0.3) -> bool:
    """True once check() holds (exceptions count as not yet), False if it did not within timeout."""
    end = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:  # the thing polled may be restarting: not yet
            pass
        if time.monotonic() > end:
            return False
        time.sleep(interval)


class Scenario:
    """One fault scenario's run: options, figures (prefixed faults.<name>.) and its labs."""

    def __init__(self, name: str, doc: str, iterations: tuple[int, int], cases: tuple[int, int] = (0, 0)):
        parser = argparse.ArgumentParser(description=doc.splitlines()[0])
        parser.add_argument("--quick", action="store_true", help="the bounded form CI runs")
        parser.add_argument("--iterations", type=int, default=None, help="rounds of the fault")
        parser.add_argument("--cases", type=int, default=None, help="fuzz cases (fuzz campaigns)")
        opts = parser.parse_args()
        self.name = name
        self.quick: bool = opts.quick
        full_n, quick_n = iterations
        self.iterations: int = opts.iterations or (quick_n if opts.quick else full_n)
        full_c, quick_c = cases
        self.cases: int = opts.cases or (quick_c if opts.quick else full_c)
        self.figures = Figures()
        self.started = time.monotonic()
        # SIGTERM (a CI timeout, `kill`) unwinds like ^C, so the lab is still taken down in finally
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def add(self, figure: str, value: float) -> None:
        self.figures.add(f"faults.{self.name}.{figure}", value)

    @contextlib.contextmanager
    def lab(self, **shape: object) -> Iterator[LabHandle]:
        """A lab for the scenario; after `lab down`, anything of it still there is a figure that must be 0."""
        if os.geteuid() != 0:
            raise SystemExit("the fault suite needs root (network namespaces)")
        handle: LabHandle | None = None
        try:
            with running_lab(**shape) as handle:  # type: ignore[arg-type]
                log(f"lab {handle.prefix} up: {', '.join(handle.node_names)}")
                yield handle
        finally:
            if handle is not None:
                left = leftovers(handle.layout) + [f"netns {n}" for n in netns_left(handle.prefix)]
                for item in left:
                    log(f"LEFT BEHIND by lab {handle.prefix}: {item}")
                self.add("leftovers", len(set(left)))

    def finish(self) -> int:
        self.add("wall_s", time.monotonic() - self.started)
        self.figures.print()
        return 0
