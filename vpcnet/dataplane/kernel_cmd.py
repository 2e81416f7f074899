"""Running the kernel's table tools (iptables-restore, ipset, nft) from asyncio, optionally in a netns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class DataplaneError(Exception):
    """Programming the kernel failed; the message names the tool, its exit code and what it said."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    def check(self, stdin: bytes | None = None) -> CommandResult:
        if self.returncode != 0:
            raise DataplaneError(describe_failure(self, stdin))
        return self


class CommandRunner(Protocol):
    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands in the current network namespace, or in a named one (/run/netns/<name>) via nsenter."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.calls = 0  # how many commands ran: lets tests see that an idle apply sends nothing

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        full = list(argv)
        if self.netns is not None:
            full = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *full]
        self.calls += 1
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        assert proc.returncode is not None
        return CommandResult(tuple(argv), proc.returncode, out, err)


def describe_failure(result: CommandResult, stdin: bytes | None) -> str:
    """The tool, its exit code, its complaint, and the input lines around the line it names (if any)."""
    message = result.stderr.decode(errors="replace").strip() or result.stdout.decode(errors="replace").strip()
    text = f"{' '.join(result.argv)} exited {result.returncode}: {message}"
    if stdin:
        lines = stdin.decode(errors="replace").splitlines()
        line_no = _failing_line(message)
        if line_no is not None and 1 <= line_no <= len(lines):
            window = range(max(1, line_no - 2), min(len(lines), line_no + 2) + 1)
            text += "\n" + "\n".join(f"{'>' if n == line_no else ' '} {n}: {lines[n - 1]}" for n in window)
    return text


def _failing_line(message: str) -> int | None:
    import re

    found = re.search(r"line:? (\d+)", message)
    return int(found.group(1)) if found else None
