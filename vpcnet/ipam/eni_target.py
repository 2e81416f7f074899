"""Where the node's next secondary ENI goes: which subnet, with which security groups.

Without custom networking that is the primary ENI's subnet and groups, always. With it
(AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true) it is the node's ENIConfig, which can change while the agent runs
(its label is edited, the ENIConfig is replaced): the agent's watcher calls `use` or `unavailable`, and the
pool reads the target each time it makes an ENI. ENIs already attached keep the subnet they were made in,
as in the VPC CNI: a change applies to new ENIs only. While the ENIConfig is unknown or missing no ENI is
made at all (one in the node's own subnet would hand pods addresses the user asked not to use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vpcnet.cloud.node import NodeInfo


class EniTargetUnavailable(Exception):
    """Custom networking is on and the node's ENIConfig is not usable; the message says why."""


@dataclass(frozen=True)
class EniTarget:
    subnet_id: str
    security_groups: tuple[str, ...]  # empty: the primary ENI's groups (the VPC CNI's fallback)
    source: str  # e.g. "ENIConfig us-east-1a (label k8s.amazonaws.com/eniConfig)"


class EniTargets:
    def __init__(self, custom_networking: bool = False) -> None:
        self.custom_networking = custom_networking
        self._target: EniTarget | None = None
        self._problem = ""  # why the ENIConfig is not usable (a pod asking now is told this)
        self.changes = 0  # how often the target changed (introspection, tests)
        self.on_change: Callable[[], None] | None = None  # the pool's wake-up: look again

    def use(self, target: EniTarget) -> None:
        if target != self._target or self._problem:
            self._changed()
        self._target, self._problem = target, ""

    def unavailable(self, problem: str) -> None:
        if problem != self._problem or self._target is not None:
            self._changed()
        self._target, self._problem = None, problem

    def _changed(self) -> None:
        self.changes += 1
        if self.on_change is not None:
            self.on_change()

    @property
    def problem(self) -> str:
        """Why no ENI can be made ("" when one can, or while the ENIConfig is still being read: a pod then
        waits for it like for EC2)."""
        return self._problem if self.custom_networking else ""

    def for_new_eni(self, node: NodeInfo) -> EniTarget:
        if not self.custom_networking:
            return EniTarget(node.subnet_id, node.security_groups, "the primary ENI's subnet")
        if self._target is None:
            problem = self._problem or "the node's ENIConfig has not been read yet"
            raise EniTargetUnavailable(f"custom networking: {problem}; no ENI is created")
        groups = self._target.security_groups or node.security_groups
        return EniTarget(self._target.subnet_id, groups, self._target.source)

    def describe(self) -> dict[str, object]:
        t = self._target
        return {
            "customNetworking": self.custom_networking,
            "subnet": t.subnet_id if t else "",
            "securityGroups": list(t.security_groups) if t else [],
            "source": t.source if t else "",
            "problem": self.problem,
            "changes": self.changes,
        }
