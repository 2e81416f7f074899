"""Calico mode with IPv6 pods: the IPv4 policy data plane plus the IPv6 guard (vpcnet.dataplane.ipv6_guard).

Policy rules are programmed for IPv4 only; IPv6 policy is not enforced in Calico mode yet. So IPv6 pod
traffic is not left open behind the policies' back: the guard drops it (neighbour discovery aside) while
any policy exists in the cluster, and from start until the policies are known. Each apply programs the
IPv4 state first, then the guard, so the revision the agent reports covers both. Said in the log on every
change of the guard and on /v1/policy ("ipv6").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vpcnet.dataplane.ipv6_guard import Ipv6Guard
from vpcnet.dataplane.kernel_cmd import CommandRunner
from vpcnet.dataplane.policy_backend import ApplyStats, BackendName, PolicyDataplane
from vpcnet.dataplane.policy_state import DesiredState

log = logging.getLogger("vpcnet.agent.policy")

NOT_ENFORCED6 = (
    "IPv6 policy is not enforced in Calico mode yet: IPv6 pod traffic is dropped (fail closed) while any "
    "policy exists, and passes only while none does"
)


class GuardedDataplane:
    """A PolicyDataplane: the IPv4 one, then the IPv6 guard closed as `closed()` says."""

    def __init__(
        self,
        inner: PolicyDataplane,
        runner: CommandRunner,
        prefixes: tuple[str, ...],
        closed: Callable[[], bool],
    ) -> None:
        self.inner = inner
        self.name: BackendName = inner.name
        self.guard = Ipv6Guard(runner, prefixes)
        self.closed = closed
        self._recheck = True  # read the kernel's guard back on the next apply (first apply, resync)

    async def apply(self, state: DesiredState) -> ApplyStats:
        stats = await self.inner.apply(state)
        closed, was = self.closed(), self.guard.closed
        if closed == was and not self._recheck:
            return stats  # unchanged since the last apply: no ip6tables-save per policy change
        await self.guard.apply(closed)
        self._recheck = False
        if closed != was:
            state_word = "closed: IPv6 pod traffic dropped" if closed else "open: no policy exists"
            log.warning("policy: IPv6 guard %s (%s)", state_word, NOT_ENFORCED6)
        return stats

    def resync(self) -> None:
        self.inner.resync()
        self._recheck = True

    async def installed(self) -> bool:
        return await self.inner.installed()

    async def remove_all(self) -> None:
        await self.inner.remove_all()

    def status(self) -> dict[str, Any]:
        guard = "unknown" if self.guard.closed is None else ("closed" if self.guard.closed else "open")
        return {"enforced": False, "guard": guard, "reason": NOT_ENFORCED6}
