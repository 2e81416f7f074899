"""Apply ipsets through `ipset restore`, diffed against what we last applied (or what the kernel has)."""

from __future__ import annotations

from collections.abc import Mapping

from vpcnet.dataplane import ipset_render
from vpcnet.dataplane.family import IpFamily
from vpcnet.dataplane.ipset_render import KernelSet
from vpcnet.dataplane.kernel_cmd import CommandRunner
from vpcnet.dataplane.policy_state import IpSetSpec


class IpsetApplier:
    def __init__(self, runner: CommandRunner, family: IpFamily = IpFamily.V4) -> None:
        self._runner = runner
        self.family = family
        self._known: dict[str, KernelSet] | None = None  # None: read the kernel before the next diff
        self.bytes_sent = 0

    def forget(self) -> None:
        """Distrust our record (after a failure, or for a resync): the next apply reads the kernel."""
        self._known = None

    async def read_kernel(self) -> dict[str, KernelSet]:
        result = (await self._runner.run(["ipset", "save"])).check()
        return ipset_render.parse_save(result.stdout.decode(), family=self.family)

    async def _current(self) -> dict[str, KernelSet]:
        if self._known is None:
            self._known = await self.read_kernel()
        return self._known

    async def apply_updates(self, desired: Mapping[str, IpSetSpec]) -> int:
        """Create and fill what is wanted; returns the bytes sent (0: nothing to do, nothing ran)."""
        current = await self._current()
        lines = ipset_render.render_updates(desired, current, self.family)
        sent = await self._restore(lines)
        assert self._known is not None
        for name, spec in desired.items():
            self._known[name] = KernelSet(spec.kind, spec.members)
        return sent

    async def apply_deletes(self, desired: Mapping[str, IpSetSpec]) -> int:
        current = await self._current()
        # Temporary sets left by an interrupted swap are ours to remove too.
        lines = ipset_render.render_deletes(desired, current)
        sent = await self._restore(lines)
        assert self._known is not None
        for name in [n for n in self._known if n not in desired]:
            del self._known[name]
        return sent

    async def _restore(self, lines: list[str]) -> int:
        if not lines:
            return 0
        data = ("\n".join(lines) + "\n").encode()
        try:
            (await self._runner.run(["ipset", "-exist", "restore"], data)).check(data)
        except Exception:
            self.forget()
            raise
        self.bytes_sent += len(data)
        return len(data)
