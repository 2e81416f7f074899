"""The IPv6 guard's data plane wrapper: the IPv4 state first, then the guard closed or open as asked, read
back from the kernel only when it changes or after a resync (a fake runner stands in for ip6tables)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from vpcnet.agent.policy_guard6 import GuardedDataplane
from vpcnet.dataplane.kernel_cmd import CommandResult
from vpcnet.dataplane.policy_backend import ApplyStats, BackendName
from vpcnet.dataplane.policy_state import DesiredState


class FakeIp6tables:
    """ip6tables-save / -restore over an in-memory filter table."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.calls: list[str] = []

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        self.calls.append(argv[0])
        if argv[0] == "ip6tables-save":
            return CommandResult(
                tuple(argv), 0, ("\n".join(["*filter", *self.lines, "COMMIT"]) + "\n").encode(), b""
            )
        assert stdin is not None
        for line in stdin.decode().splitlines():
            if line.startswith(":vpcn6-guard"):
                self.lines = [x for x in self.lines if not x.startswith("-A vpcn6-guard")]
            elif line.startswith("-I FORWARD 1"):
                self.lines.append(line.replace("-I FORWARD 1", "-A FORWARD"))
            elif line.startswith("-A "):
                self.lines.append(line)
        return CommandResult(tuple(argv), 0, b"", b"")


class Inner:
    name: BackendName = "iptables"

    def __init__(self) -> None:
        self.applied = 0

    async def apply(self, state: DesiredState) -> ApplyStats:
        self.applied += 1
        return ApplyStats(0, 0)

    def resync(self) -> None:
        pass

    async def installed(self) -> bool:
        return True

    async def remove_all(self) -> None:
        pass


def test_guard_follows_the_policies_and_reads_the_kernel_only_when_needed() -> None:
    kernel, inner = FakeIp6tables(), Inner()
    policies = {"closed": True}
    plane = GuardedDataplane(inner, kernel, ("cali",), lambda: policies["closed"])
    state = DesiredState(("cali",), {}, {}, {})

    async def run() -> None:
        await plane.apply(state)
        assert inner.applied == 1 and "-A vpcn6-guard -i cali+ -j DROP" in kernel.lines
        assert plane.status() == {"enforced": False, "guard": "closed", "reason": plane.status()["reason"]}
        calls = len(kernel.calls)
        await plane.apply(state)  # nothing changed: the kernel is not read again
        assert len(kernel.calls) == calls
        policies["closed"] = False
        await plane.apply(state)
        assert not [x for x in kernel.lines if x.startswith("-A vpcn6-guard")]
        assert any("vpcnet IPv6 guard" in x for x in kernel.lines)  # the jump stays, the chain is empty
        assert plane.status()["guard"] == "open"
        kernel.lines.append("-A vpcn6-guard -j DROP")  # someone's edit: repaired on the next resync
        plane.resync()
        await plane.apply(state)
        assert not [x for x in kernel.lines if x.startswith("-A vpcn6-guard")]

    asyncio.run(run())
