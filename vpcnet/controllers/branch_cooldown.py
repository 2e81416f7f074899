"""When a branch ENI whose pod is gone may be reused, and when it is deleted.

The VPC resource controller does not delete a gone pod's branch at once: it keeps it, still associated
with its trunk (its VLAN id and a share of the node's branch capacity stay taken), for a cool-down
(`branch-eni-cooldown`, 60 s by default, never under 30 s) so that the node has time to remove what it
wired for the old pod before the address can mean anything else; then it deletes it, and the VLAN id
comes back. vpcnet does the same, and also lets a cooled branch serve a new pod on the same trunk that
needs exactly its groups, for `reuse_window` seconds after its cool-down: a tag write instead of
Create + Associate now and Disassociate + Delete later.

The state lives on the ENI (the `vpcnet.io/released-at` tag: the wall-clock second of the release, empty
while a pod holds the branch), so a restarted controller keeps every clock where it was.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vpcnet.cloud.ec2 import NetworkInterface

log = logging.getLogger(__name__)

RELEASED_TAG = "vpcnet.io/released-at"
EKS_DEFAULT_COOLDOWN = 60.0
EKS_MIN_COOLDOWN = 30.0  # the resource controller raises a lower branch-eni-cooldown to this
DEFAULT_REUSE_WINDOW = 60.0


def released_at(branch: NetworkInterface) -> float | None:
    """When the branch's pod was found gone (None: a pod holds it, or an unreadable tag, taken as held)."""
    raw = branch.tags.get(RELEASED_TAG, "")
    try:
        value = float(raw) if raw else None
    except ValueError:
        log.warning("branch %s: %s=%r is not a time; taken as held", branch.eni_id, RELEASED_TAG, raw)
        return None
    return value if value is not None and math.isfinite(value) else None


def eks_cooldown(seconds: float) -> float:
    """A cool-down as the resource controller takes its configuration: at least EKS_MIN_COOLDOWN."""
    if not math.isfinite(seconds):
        raise ValueError(f"branch ENI cool-down {seconds!r}: expected a number of seconds")
    if seconds < EKS_MIN_COOLDOWN:
        log.warning(
            "branch ENI cool-down %.0f s is under EKS's floor; %.0f s is used", seconds, EKS_MIN_COOLDOWN
        )
        return EKS_MIN_COOLDOWN
    return seconds


@dataclass(frozen=True)
class CoolDown:
    cooldown: float = EKS_DEFAULT_COOLDOWN
    reuse_window: float = DEFAULT_REUSE_WINDOW

    def __post_init__(self) -> None:
        for name in ("cooldown", "reuse_window"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"branch ENI {name.replace('_', ' ')} {value!r}: expected seconds >= 0")

    def cooled(self, branch: NetworkInterface, now: float) -> bool:
        """Past its cool-down: its old pod's wiring is taken as gone."""
        at = released_at(branch)
        return at is not None and now >= at + self.cooldown

    def expired(self, branch: NetworkInterface, now: float) -> bool:
        """Past its cool-down and its reuse window: to be deleted."""
        at = released_at(branch)
        return at is not None and now >= at + self.cooldown + self.reuse_window

    def reusable(
        self,
        released: Iterable[NetworkInterface],
        trunk_id: str,
        groups: Sequence[str],
        now: float,
        trunk_tag: str,
    ) -> NetworkInterface | None:
        """A cooled branch of this trunk with exactly these groups (the longest cooled first)."""
        wanted = sorted(groups)
        fits = [
            b
            for b in released
            if b.tags.get(trunk_tag) == trunk_id
            and sorted(b.security_groups) == wanted
            and self.cooled(b, now)
        ]
        return min(fits, key=lambda b: released_at(b) or 0.0) if fits else None

    def evictable(
        self, released: Iterable[NetworkInterface], trunk_id: str, now: float, trunk_tag: str
    ) -> NetworkInterface | None:
        """A cooled branch of this trunk to delete for a pod that finds no free VLAN id (one still cooling
        keeps its VLAN, as the resource controller counts its delete queue against the capacity)."""
        fits = [b for b in released if b.tags.get(trunk_tag) == trunk_id and self.cooled(b, now)]
        return min(fits, key=lambda b: released_at(b) or 0.0) if fits else None

    def next_due(self, released: Iterable[NetworkInterface], now: float) -> float | None:
        """Seconds until the next branch cools or expires (None: none is waiting)."""
        dues = []
        for branch in released:
            at = released_at(branch)
            if at is None:
                continue
            dues += [t - now for t in (at + self.cooldown, at + self.cooldown + self.reuse_window) if t > now]
        return max(min(dues), 0.0) if dues else None
