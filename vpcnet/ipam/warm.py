"""How many addresses the pool should hold: the VPC CNI's warm targets, and vpcnet's adaptive mode.

Pure functions of the pool's numbers. `used` = assigned + cooling: a cooling address cannot be handed out, so
it never counts as warm (the VPC CNI counts it as available, and a churning node then never grows: #2896).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

HOST_NETWORK_PODS = 2  # aws-node and kube-proxy: counted in max pods, need no VPC address
COLD_START_SECONDS = 900.0  # the adaptive mode trusts its arrival history after this long
FORECAST_MARGIN = 1  # one more than the worst burst seen: the next one may be a little bigger
# EC2 calls are what a busy cluster runs out of (throttling), so adaptive mode asks in batches and gives back
# lazily: a refill brings the arrivals of BATCH_HORIZON seconds, and a surplus goes back only after it
# has lasted ADAPTIVE_RELEASE_DELAY seconds and is worth a call (the pool controller's RELEASE_MIN_SHARE).
BATCH_HORIZON = 90.0  # 120 s made 1-2 fewer calls an hour for ~1.5 more idle addresses
ADAPTIVE_RELEASE_DELAY = 300.0


def ceil_to(n: int, unit: int) -> int:
    return -(-n // unit) * unit


@dataclass(frozen=True)
class Capacity:
    instance_type: str
    max_enis: int  # ENIs this node may have: min(MAX_ENI, the type's limit on network card 0)
    slots_per_eni: int  # address slots per ENI for pods: IPv4 per ENI - 1 (the primary address)
    unit: int  # addresses per slot: 1 (secondary IPs) or 16 (/28 prefixes)
    pod_enis: int  # ENIs that carry pods (one fewer with custom networking)
    max_pods: int  # the node's max pods (host-network pods included)
    max_eni_setting: int | None = None

    @property
    def per_eni(self) -> int:
        return self.slots_per_eni * self.unit

    @property
    def address_ceiling(self) -> int:
        return self.pod_enis * self.per_eni

    @property
    def pod_limit(self) -> int:
        """Pods that can hold a VPC address at once on this node."""
        return max(0, min(self.address_ceiling, self.max_pods - HOST_NETWORK_PODS))


@dataclass(frozen=True)
class WarmTargets:
    warm_eni: int = 1
    warm_ip: int = 0
    minimum_ip: int = 0
    warm_prefix: int = 1
    adaptive: bool = False


def desired_total(used: int, targets: WarmTargets, cap: Capacity, forecast: int = 0) -> int:
    """Addresses the pool should hold with `used` addresses assigned or cooling."""
    unit = cap.unit
    if targets.adaptive:
        want = max(used + max(targets.warm_ip, forecast), targets.minimum_ip)
    elif targets.warm_ip or targets.minimum_ip:
        want = max(used + targets.warm_ip, targets.minimum_ip)
    elif unit > 1:
        want = ceil_to(used, unit) + unit * targets.warm_prefix
    else:
        per = cap.per_eni
        enis = max(-(-used // per) + targets.warm_eni, -(-(used + 1) // per))
        want = enis * per
    # A warm target of 0 must never leave a pod waiting with nothing in the pool to give (VPC CNI #2482).
    want = max(want, used + 1)
    want = ceil_to(want, unit)
    return min(want, cap.address_ceiling, ceil_to(cap.pod_limit, unit))


def adaptive_band(
    used: int, targets: WarmTargets, cap: Capacity, forecast: int, batch: int
) -> tuple[int, int]:
    """Adaptive mode's (low, high): the pool grows when it holds less than `low` (the next burst's need)
    and then up to `high` (a batch more), and gives back only what stays above `high`."""
    low = desired_total(used, targets, cap, forecast)
    return low, max(low, desired_total(used, targets, cap, forecast + max(0, batch)))


class ArrivalForecast:
    """Pod arrivals of the recent past, to size the pool for the next burst.

    The forecast is the most arrivals seen within any `lead` seconds (the time a refill from
    EC2 takes) over the last `history` seconds: a pool that holds that many free addresses rides
    out the worst burst of the window while EC2 refills it. For its first 15 minutes it
    holds at least `cold_floor` (one ENI's worth, as WARM_ENI_TARGET=1 would): it knows nothing yet.
    """

    def __init__(self, history: float, cold_floor: int, started: float) -> None:
        self.history = history
        self.cold_floor = cold_floor
        self.started = started
        self.arrivals: deque[float] = deque()

    def record(self, now: float) -> None:
        self.arrivals.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.arrivals and self.arrivals[0] < now - self.history:
            self.arrivals.popleft()

    def batch(self, now: float, horizon: float, limit: int) -> int:
        """Arrivals to expect over the next `horizon` seconds at the window's mean rate (at least 1, at most
        `limit`); before the history is trusted, half the limit (the cold floor holds an ENI's worth free;
        without a batch every pod of the first minutes would cost a call)."""
        self._trim(now)
        seen = min(self.history, now - self.started)
        if seen < min(self.history, COLD_START_SECONDS):
            return limit // 2
        return max(1, min(limit, -(-len(self.arrivals) * int(horizon) // max(1, int(seen)))))

    def forecast(self, now: float, lead: float) -> int:
        self._trim(now)
        times = list(self.arrivals)
        peak = 0
        for i, t in enumerate(times):
            j = bisect.bisect_right(times, t + lead, lo=i)
            peak = max(peak, j - i)
        if now - self.started < min(self.history, COLD_START_SECONDS):
            peak = max(peak, self.cold_floor)
        return peak + FORECAST_MARGIN if self.arrivals else peak
