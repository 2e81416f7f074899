"""The unit the node agent is composed of: each concern (ipam, cni server, policy, observe) is a Component.

The daemon starts components in registry order (ipam first, so the others find `ctx.allocator` set) and stops
them in reverse order. A component does its blocking set-up in `start()` (the daemon awaits it before
starting the next one) and runs its long-lived work as tasks it owns; `stop()` cancels them and releases
what it holds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Set up; return once the component serves (or raise, which stops the agent with that error)."""
        ...

    async def stop(self) -> None:
        """Stop serving and release what start() acquired; must not raise and must be idempotent."""
        ...

    def ready(self) -> bool:
        """True once the component serves requests (reported on /v1/health and by the metrics)."""
        ...
