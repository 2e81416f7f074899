"""What the VPC allocator, its pool controller and its reconciler share: settings, counters, the address
pool, the checkpoint, the EC2 error backoff, and the two events that tie the three together.

`wake` asks the pool controller to look at the pool now (an assignment, a release, a waiting pod);
`notify()` tells pods waiting for an address that the pool changed. The one EC2 call here is the cached
subnet lookup (`subnet_cidr`), made by the pool controller and the reconciler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from vpcnet.cloud.ec2 import Ec2Api, Ec2Error
from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.checkpoint import Allocation, Checkpoint, CheckpointData
from vpcnet.ipam.eni_pool import AddressPool, PoolStats
from vpcnet.ipam.eni_target import EniTargets
from vpcnet.ipam.warm import ArrivalForecast, Capacity, WarmTargets

log = logging.getLogger("vpcnet.ipam")

ERROR_BACKOFF_MAX = 30.0
# EC2 said a subnet is full: ask it again after 1 s, doubling while it stays full, at most 16 s. (The VPC
# CNI waits a fixed 2 minutes; then a subnet freed meanwhile kept every ADD failing for up to 2 minutes.)
SUBNET_FULL_BACKOFF_FIRST = 1.0
SUBNET_FULL_BACKOFF_MAX = 16.0


@dataclass(frozen=True)
class VpcSettings:
    targets: WarmTargets
    cooldown: float = 30.0
    mtu: int = 9001
    release_delay: float = 60.0
    pool_interval: float = 5.0
    reconcile_interval: float = 60.0
    leaked_eni_grace: float = 300.0
    assign_wait: float = 30.0
    adaptive_window: float = 3600.0
    cluster_name: str = ""


@dataclass
class Counters:
    """Monotonic counts, exported as awscni_* metrics."""

    assigns: int = 0
    releases: int = 0
    no_available: int = 0  # assignments that found the pool empty
    waited_for_ec2: int = 0  # assignments that had to wait for EC2 to grow the pool
    waited_for_cooldown: int = 0  # assignments that waited for an address to cool down (pool at its ceiling)
    exhausted: int = 0
    enis_created: int = 0
    enis_deleted: int = 0
    leaked_enis_deleted: int = 0
    force_removed_ips: int = 0
    restored: int = 0
    dropped_stale: int = 0
    ec2_errors: dict[str, int] = field(default_factory=dict)


class VpcPoolState:
    """The node's addresses and what is known about getting more. Needs a running event loop (its clock)."""

    def __init__(
        self,
        *,
        node: NodeInfo,
        capacity: Capacity,
        settings: VpcSettings,
        checkpoint: Checkpoint,
        eni_targets: EniTargets | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        # Where new ENIs go; with custom networking the primary ENI carries no pods.
        self.eni_targets = eni_targets or EniTargets()
        self.capacity = capacity
        self.settings = settings
        self.checkpoint = checkpoint
        self.wall = wall_clock
        self.pool = AddressPool(settings.cooldown)
        self.counters = Counters()
        self.ready = False
        self.stopped = False
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()
        # EC2 is changed by the pool controller and read back by the reconciler: one at a time
        self.ec2_lock = asyncio.Lock()
        self.waiters = 0  # pods waiting in assign() for the pool to grow
        self.forecast = ArrivalForecast(settings.adaptive_window, capacity.per_eni, self.now())
        self.subnets: dict[str, IPv4Network] = {node.subnet_id: node.subnet_cidr}
        self.foreign_devices: set[int] = set()  # device indexes of attached ENIs that are not ours
        # (until when, which subnet): EC2 said the subnet is full; do not ask again before then
        self.subnet_full: tuple[float, str] | None = None
        self.subnet_full_streak = 0  # subnet-full refusals in a row (the backoff doubles with it)
        self.backoff_until = 0.0
        self.error_streak = 0
        self.last_error = ""
        self.eni_targets.on_change = self._targets_changed

    def _targets_changed(self) -> None:
        """The node's ENIConfig changed: the pool may grow now, and waiting pods may have a new answer."""
        if self.last_error.startswith("custom networking:"):
            self.last_error, self.backoff_until = "", 0.0
        self.wake.set()
        self.notify()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def stats(self) -> PoolStats:
        return self.pool.stats(self.now())

    def pod_enis(self) -> int:
        return sum(1 for e in self.pool.enis.values() if e.carries_pods)

    async def subnet_cidr(self, ec2: Ec2Api, subnet_id: str) -> IPv4Network:
        if subnet_id not in self.subnets:
            self.subnets[subnet_id] = (await ec2.describe_subnet(subnet_id)).cidr
        return self.subnets[subnet_id]

    def notify(self) -> None:
        """Wake every pod waiting for an address (they look at the pool again)."""
        self.changed.set()
        self.changed = asyncio.Event()

    def ec2_failed(self, exc: Ec2Error) -> None:
        """Count an EC2 failure and back off from EC2 (exponentially while failures follow each other)."""
        self.counters.ec2_errors[exc.api] = self.counters.ec2_errors.get(exc.api, 0) + 1
        self.last_error = f"{exc.api}: {exc.code}: {exc.message}"
        self.error_streak += 1
        self.backoff_until = self.now() + min(ERROR_BACKOFF_MAX, 0.5 * 2**self.error_streak)
        log.warning("EC2 call failed", extra={"api": exc.api, "code": exc.code, "error": exc.message})

    def subnet_refused(self, subnet_id: str) -> float:
        """EC2 refused an address for a full subnet: do not ask it again for a bounded, doubling while; the
        seconds until then."""
        self.subnet_full_streak += 1
        wait = min(SUBNET_FULL_BACKOFF_MAX, SUBNET_FULL_BACKOFF_FIRST * 2.0 ** (self.subnet_full_streak - 1))
        self.subnet_full = (self.now() + wait, subnet_id)
        return wait

    def subnet_served(self) -> None:
        """EC2 gave addresses again: the subnet is no longer known full."""
        self.subnet_full = None
        self.subnet_full_streak = 0

    def save(self) -> None:
        """Write the assignments and the cooling addresses to the checkpoint (times as wall-clock times)."""
        now, wall = self.now(), self.wall()
        data = CheckpointData(instance_id=self.node.instance_id)
        for slot in self.pool.by_key.values():
            assert slot.key is not None
            data.allocations.append(
                Allocation(
                    slot.key,
                    slot.address,
                    slot.eni_id,
                    slot.pod_namespace,
                    slot.pod_name,
                    wall - (now - slot.assigned_at),
                )
            )
        for slot in self.pool.slots.values():
            if self.pool.cooling(slot, now) and slot.released_at is not None:
                data.cooldown[slot.address] = wall - (now - slot.released_at)
        data.allocations.sort(key=lambda a: a.key)
        self.checkpoint.save(data)
