"""The VPC address manager (ipamd): ENIs and their addresses from EC2, a warm pool, the checkpoint.

Assign and release touch only memory and the checkpoint file (the warm path makes no EC2 call). One
background task keeps the pool at its target: it wakes on every assignment and release, when a cooldown
ends, and every `pool_interval` seconds; it grows the pool (secondary IPs or prefixes on attached ENIs
first, then a new ENI) and gives back a surplus only after it has lasted `release_delay` seconds, and then
only the part of it that was never needed in that time (paced, so the pool does not flap). A pod that finds
the pool empty waits for that growth (up to `assign_wait`) instead of failing, unless a hard limit is
reached: then AddressExhausted names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

from vpcnet.cloud.ec2 import (
    DESCRIPTION_PREFIX,
    SUBNET_FULL_CODES,
    TAG_CLUSTER,
    TAG_CREATED_AT,
    TAG_INSTANCE_ID,
    TAG_NO_MANAGE,
    Ec2Api,
    Ec2Error,
    NetworkInterface,
)
from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.checkpoint import Allocation, Checkpoint, CheckpointData
from vpcnet.ipam.eni_pool import AddressPool, Eni, PoolStats
from vpcnet.ipam.interfaces import EniNetworking, PodExistence
from vpcnet.ipam.types import AddressExhausted, AddressManagerNotReady, Assignment, IpamKey
from vpcnet.ipam.warm import ArrivalForecast, Capacity, WarmTargets, ceil_to, desired_total

log = logging.getLogger("vpcnet.ipam")

SUBNET_FULL_BACKOFF = 120.0  # as the VPC CNI: do not retry a full subnet for two minutes
ERROR_BACKOFF_MAX = 30.0
DETACH_DELETE_ATTEMPTS = 6


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
    # Custom networking: new ENIs go to this subnet with these groups; the primary ENI carries no pods.
    eni_subnet_id: str | None = None
    eni_security_groups: tuple[str, ...] = ()


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


class VpcAllocator:
    def __init__(
        self,
        *,
        ec2: Ec2Api,
        node: NodeInfo,
        capacity: Capacity,
        settings: VpcSettings,
        networking: EniNetworking,
        checkpoint: Checkpoint,
        pods: PodExistence,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ec2 = ec2
        self.node = node
        self.capacity = capacity
        self.settings = settings
        self.networking = networking
        self.checkpoint = checkpoint
        self.pods = pods
        self.wall = wall_clock
        self.pool = AddressPool(settings.cooldown)
        self.counters = Counters()
        self.in_progress: dict[str, int] = {}
        self._ready = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._grow_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters = 0
        self._surplus_since: float | None = None
        self._surplus_min = 0
        self._backoff_until = 0.0
        self._error_streak = 0
        self._subnet_full: tuple[float, str] | None = None
        self._last_error = ""
        # Seconds a refill takes (measured as we go): addresses on an attached ENI (fast), a new ENI (slow).
        self._fast_lead = 1.0
        self._slow_lead = 10.0
        self._subnets: dict[str, IPv4Network] = {node.subnet_id: node.subnet_cidr}
        self._first_seen_available: dict[str, float] = {}
        self.forecast = ArrivalForecast(settings.adaptive_window, capacity.per_eni, self._now())

    # ------------------------------------------------------------------ lifecycle

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Adopt our ENIs, restore the checkpoint, then keep the pool at its target in the background."""
        await self._adopt_enis()
        await self._restore()
        self._ready = True
        self._wake.set()  # fill the pool now, not a pool_interval later: the first pods are coming
        self._tasks.append(asyncio.create_task(self._pool_loop(), name="ipam-pool"))
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="ipam-maintenance"))
        log.info(
            "ipam ready",
            extra={
                "enis": len(self.pool.enis),
                "addresses": self.stats().total,
                "assigned": self.stats().assigned,
            },
        )

    async def stop(self) -> None:
        self._ready = False
        self._stopped = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def _eni_from(self, ni: NetworkInterface, cidr: IPv4Network) -> Eni:
        assert ni.attachment is not None
        primary = ni.eni_id == self.node.primary_eni_id or ni.attachment.device_index == 0
        return Eni(
            eni_id=ni.eni_id,
            mac=ni.mac,
            device_index=ni.attachment.device_index,
            primary_ip=ni.primary_ip,
            subnet_id=ni.subnet_id,
            subnet_cidr=cidr,
            is_primary=primary,
            carries_pods=not (primary and self.settings.eni_subnet_id is not None),
            attachment_id=ni.attachment.attachment_id,
            added_at=self._now(),
        )

    def _ours(self, ni: NetworkInterface) -> bool:
        if ni.tags.get(TAG_NO_MANAGE) == "true":
            return False
        return ni.tags.get(TAG_INSTANCE_ID) == self.node.instance_id

    async def _subnet_cidr(self, subnet_id: str) -> IPv4Network:
        if subnet_id not in self._subnets:
            self._subnets[subnet_id] = (await self.ec2.describe_subnet(subnet_id)).cidr
        return self._subnets[subnet_id]

    async def _attached(self) -> list[NetworkInterface]:
        return await self.ec2.describe_network_interfaces(
            filters={"attachment.instance-id": [self.node.instance_id]}
        )

    async def _adopt_enis(self) -> None:
        self._foreign_devices: set[int] = set()
        for ni in await self._attached():
            if ni.attachment is None or ni.attachment.network_card_index != 0:
                continue
            is_primary = ni.eni_id == self.node.primary_eni_id or ni.attachment.device_index == 0
            if not is_primary and not self._ours(ni):
                self._foreign_devices.add(ni.attachment.device_index)
                log.info("leaving a foreign ENI alone", extra={"eni": ni.eni_id})
                continue
            eni = self._eni_from(ni, await self._subnet_cidr(ni.subnet_id))
            self.pool.add_eni(eni)
            self.pool.add_addresses(eni.eni_id, list(ni.secondary_ips))
            for p in ni.prefixes:
                self.pool.add_prefix(eni.eni_id, p)
            if not eni.is_primary:
                await self.networking.setup(eni, self.settings.mtu)
            log.info(
                "adopted ENI",
                extra={
                    "eni": eni.eni_id,
                    "device": eni.device_index,
                    "addresses": len(ni.secondary_ips),
                    "prefixes": len(ni.prefixes),
                },
            )

    async def _restore(self) -> None:
        data = self.checkpoint.load()
        if data is None:
            self._save()
            return
        now, wall = self._now(), self.wall()
        for a in data.allocations:
            slot = self.pool.slots.get(a.address)
            if slot is None:
                log.warning(
                    "checkpointed address is no longer on our ENIs; dropped", extra={"ip": str(a.address)}
                )
                self.counters.dropped_stale += 1
                continue
            if slot.key is not None or a.key in self.pool.by_key:
                log.error(
                    "checkpoint holds an address or key twice; kept the first", extra={"ip": str(a.address)}
                )
                self.counters.dropped_stale += 1
                continue
            if not await self.pods.exists(a.key, a.pod_namespace, a.pod_name):
                log.info(
                    "pod of a checkpointed address is gone; address cools down",
                    extra={"ip": str(a.address), "pod": f"{a.pod_namespace}/{a.pod_name}"},
                )
                slot.released_at = now
                self.counters.dropped_stale += 1
                continue
            self.pool.assign(slot, a.key, a.pod_namespace, a.pod_name, now - max(0.0, wall - a.assigned_at))
            self.counters.restored += 1
        for address, released in data.cooldown.items():
            slot = self.pool.slots.get(address)
            if slot is not None and slot.key is None:
                slot.released_at = now - max(0.0, wall - released)
        self._save()

    # ------------------------------------------------------------------ the Allocator interface

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        if not self._ready:
            raise AddressManagerNotReady("ipam is starting: the pool is not loaded yet")
        existing = self.pool.by_key.get(key)
        if existing is not None:
            return self.pool.assignment(existing)
        deadline = self._now() + self.settings.assign_wait
        waited = False
        while True:
            now = self._now()
            if self.pool.stats(now).assigned >= self.capacity.pod_limit:
                self.counters.exhausted += 1
                raise AddressExhausted(self._hard_limit() or "pod limit reached")
            slot = self.pool.pick(now)
            if slot is not None:
                self.pool.assign(slot, key, pod_namespace, pod_name, now)
                try:
                    self._save()
                except Exception:
                    self.pool.release(key, now)
                    slot.released_at = None
                    raise
                self.counters.assigns += 1
                self.forecast.record(now)
                self._wake.set()
                return self.pool.assignment(slot)
            if not waited:
                self.counters.no_available += 1
            reason = self._hard_limit()
            if reason is not None:
                self.counters.exhausted += 1
                raise AddressExhausted(reason)
            if now >= deadline:
                self.counters.exhausted += 1
                raise AddressExhausted(
                    f"no address became available within {self.settings.assign_wait:g}s"
                    + (f" (last EC2 error: {self._last_error})" if self._last_error else "")
                )
            if not waited:
                if self.pool.stats(now).total >= self.capacity.address_ceiling:
                    self.counters.waited_for_cooldown += 1  # every address exists; some are cooling
                else:
                    self.counters.waited_for_ec2 += 1
                waited = True
            self._waiters += 1
            changed = self._changed
            self._wake.set()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, deadline - now)):
                        await changed.wait()
            finally:
                self._waiters -= 1

    async def release(self, key: IpamKey) -> Assignment | None:
        now = self._now()
        slot = self.pool.slots.get(self.pool.by_key[key].address) if key in self.pool.by_key else None
        if slot is None:
            return None
        assignment = self.pool.assignment(slot)
        assigned_at = slot.assigned_at
        self.pool.release(key, now)
        try:
            self._save()
        except Exception:
            self.pool.unrelease(slot, key, assignment.pod_namespace, assignment.pod_name, assigned_at)
            raise
        self.counters.releases += 1
        self._wake.set()
        return assignment

    async def lookup(self, key: IpamKey) -> Assignment | None:
        slot = self.pool.by_key.get(key)
        return None if slot is None else self.pool.assignment(slot)

    def _save(self) -> None:
        now, wall = self._now(), self.wall()
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

    # ------------------------------------------------------------------ limits

    def stats(self) -> PoolStats:
        return self.pool.stats(self._now())

    def _pod_enis(self) -> int:
        return sum(1 for e in self.pool.enis.values() if e.carries_pods)

    def _hard_limit(self) -> str | None:
        """Why no address can be had at all (not just now), or None if growing (or waiting) can help."""
        cap, s = self.capacity, self.stats()
        if s.assigned >= cap.pod_limit:
            if cap.pod_limit < cap.address_ceiling:
                return (
                    f"max pods reached: {s.assigned} pods hold VPC addresses and max-pods is"
                    f" {cap.max_pods} on {cap.instance_type} ({cap.max_pods} - 2 host-network pods)"
                )
            enis = f"{cap.max_enis} ENIs" + (
                f" (MAX_ENI={cap.max_eni_setting})" if cap.max_eni_setting is not None else ""
            )
            if cap.pod_enis < cap.max_enis:
                enis += f", {cap.pod_enis} for pods (custom networking: the primary ENI carries none),"
            what = "prefixes of 16" if cap.unit > 1 else "addresses"
            return (
                f"address limit reached: {cap.instance_type} allows {enis} x {cap.slots_per_eni} {what}"
                f" = {cap.address_ceiling} pod addresses, all assigned"
            )
        if self._subnet_full is not None and self._subnet_full[0] > self._now():
            can_use_existing = any(
                e.carries_pods
                and e.used_slots < cap.slots_per_eni + 1
                and e.subnet_id != self._subnet_full[1]
                for e in self.pool.enis.values()
            )
            if not can_use_existing and s.cooling == 0:
                subnet = self._subnet_full[1]
                return f"subnet {subnet} ({self._subnets.get(subnet, '?')}) has no free addresses left"
        return None

    # ------------------------------------------------------------------ the pool loop

    def target(self) -> int:
        now = self._now()
        s = self.pool.stats(now)
        forecast = 0
        if self.settings.targets.adaptive:
            forecast = self.forecast.forecast(now, 2 * self._fast_lead + 0.5)
        want = desired_total(s.used + self._waiters, self.settings.targets, self.capacity, forecast)
        return want

    async def _pool_loop(self) -> None:
        while not self._stopped:
            now = self._now()
            timeout = self.settings.pool_interval
            next_cool = self.pool.next_cooldown_end(now)
            if next_cool is not None:
                timeout = min(timeout, max(0.01, next_cool - now + 0.001))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if self._stopped:
                return
            self._wake.clear()
            if self._waiters and self.pool.pick(self._now()) is not None:
                self._notify()  # a cooldown ended: waiting pods can have an address
            try:
                await self.adjust()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pool adjustment failed")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def adjust(self) -> None:
        """One step toward the target: grow, or (paced) shrink."""
        now = self._now()
        total = self.pool.stats(now).total
        want = self.target()
        if total < want:
            self._surplus_since = None
            if now >= self._backoff_until:
                await self._grow(want - total)
                self._notify()
            return
        if self.settings.targets.adaptive:
            await self._ensure_eni_headroom()
        surplus = total - want
        if surplus <= 0:
            self._surplus_since = None
            return
        if self._surplus_since is None:
            self._surplus_since, self._surplus_min = now, surplus
            return
        self._surplus_min = min(self._surplus_min, surplus)
        if now - self._surplus_since >= self.settings.release_delay:
            amount = self._surplus_min
            self._surplus_since = None
            await self._shrink(amount)

    def _ec2_failed(self, exc: Ec2Error) -> None:
        self.counters.ec2_errors[exc.api] = self.counters.ec2_errors.get(exc.api, 0) + 1
        self._last_error = f"{exc.api}: {exc.code}: {exc.message}"
        self._error_streak += 1
        self._backoff_until = self._now() + min(ERROR_BACKOFF_MAX, 0.5 * 2**self._error_streak)
        log.warning("EC2 call failed", extra={"api": exc.api, "code": exc.code, "error": exc.message})

    async def _grow(self, deficit: int) -> None:
        async with self._grow_lock:
            started = self._now()
            cap = self.capacity
            units = -(-deficit // cap.unit)
            used_new_eni = False
            try:
                for eni in sorted(self.pool.enis.values(), key=lambda e: e.device_index):
                    if units <= 0:
                        break
                    free = cap.slots_per_eni + 1 - eni.used_slots
                    if not eni.carries_pods or free <= 0:
                        continue
                    full = self._subnet_full
                    if full is not None and full[1] == eni.subnet_id and full[0] > self._now():
                        continue
                    n = min(free, units)
                    units -= await self._add_to_eni(eni, n)
                while units > 0 and len(self.pool.enis) + len(self._foreign_devices) < cap.max_enis:
                    if self._pod_enis() >= cap.pod_enis:
                        break
                    eni = await self._new_eni(min(units, cap.slots_per_eni))
                    units -= self.pool.addresses_of(eni) // cap.unit
                    used_new_eni = True
                self._error_streak = 0
                self._last_error = ""
            except Ec2Error as exc:
                self._ec2_failed(exc)
                if exc.code in SUBNET_FULL_CODES:
                    subnet = self.settings.eni_subnet_id or self.node.subnet_id
                    self._subnet_full = (self._now() + SUBNET_FULL_BACKOFF, subnet)
                return
            took = self._now() - started
            # recent worst case, decaying toward new data
            if used_new_eni:
                self._slow_lead = max(took, 0.8 * self._slow_lead + 0.2 * took)
            else:
                self._fast_lead = max(took, 0.8 * self._fast_lead + 0.2 * took)

    def slot_headroom(self) -> int:
        """Addresses obtainable without attaching an ENI: free ones, and free slots on attached ENIs."""
        s = self.pool.stats(self._now())
        slots = sum(
            self.capacity.slots_per_eni + 1 - e.used_slots for e in self.pool.enis.values() if e.carries_pods
        )
        return s.available + slots * self.capacity.unit

    async def _ensure_eni_headroom(self) -> None:
        """Adaptive mode: attach an (empty) ENI ahead of need when the slots left on attached ENIs would
        not cover the arrivals of one ENI attach time; an empty ENI holds no pod address, only its own."""
        cap = self.capacity
        need = self.forecast.forecast(self._now(), 2 * self._slow_lead)
        if self.slot_headroom() >= need or self._now() < self._backoff_until:
            return
        if (
            self._pod_enis() >= cap.pod_enis
            or len(self.pool.enis) + len(self._foreign_devices) >= cap.max_enis
        ):
            return
        async with self._grow_lock:
            started = self._now()
            try:
                await self._new_eni(0)
            except Ec2Error as exc:
                self._ec2_failed(exc)
                return
            took = self._now() - started
            self._slow_lead = max(took, 0.8 * self._slow_lead + 0.2 * took)

    async def _add_to_eni(self, eni: Eni, n: int) -> int:
        self._begin("assign_private_ips")
        try:
            if self.capacity.unit > 1:
                _, prefixes = await self.ec2.assign_private_ips(eni.eni_id, prefix_count=n)
                if eni.eni_id in self.pool.enis:
                    for p in prefixes:
                        self.pool.add_prefix(eni.eni_id, p)
                got = len(prefixes)
            else:
                addresses, _ = await self.ec2.assign_private_ips(eni.eni_id, count=n)
                if eni.eni_id in self.pool.enis:
                    self.pool.add_addresses(eni.eni_id, addresses)
                got = len(addresses)
        finally:
            self._end("assign_private_ips")
        log.info("added addresses", extra={"eni": eni.eni_id, "count": got, "prefix": self.capacity.unit > 1})
        return got

    def _free_device_index(self) -> int:
        taken = {e.device_index for e in self.pool.enis.values()} | self._foreign_devices
        i = 1
        while i in taken:
            i += 1
        return i

    async def _new_eni(self, units: int) -> Eni:
        subnet_id = self.settings.eni_subnet_id or self.node.subnet_id
        groups = self.settings.eni_security_groups or self.node.security_groups
        tags = {
            TAG_INSTANCE_ID: self.node.instance_id,
            TAG_CREATED_AT: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.settings.cluster_name:
            tags[TAG_CLUSTER] = self.settings.cluster_name
        self._begin("allocate_eni")
        try:
            ni = await self.ec2.create_network_interface(
                subnet_id=subnet_id,
                description=f"{DESCRIPTION_PREFIX}{self.node.instance_id}",
                security_groups=groups,
                tags=tags,
                secondary_ip_count=0 if self.capacity.unit > 1 else units,
                prefix_count=units if self.capacity.unit > 1 else 0,
            )
            device = self._free_device_index()
            try:
                attachment_id = await self.ec2.attach_network_interface(
                    ni.eni_id, self.node.instance_id, device
                )
            except Ec2Error:
                # not attached: give it back now (if this fails too, the leaked-ENI sweep deletes it later)
                with contextlib.suppress(Ec2Error):
                    await self.ec2.delete_network_interface(ni.eni_id)
                raise
            with contextlib.suppress(Ec2Error):
                await self.ec2.set_delete_on_termination(ni.eni_id, attachment_id)
            cidr = await self._subnet_cidr(subnet_id)
        finally:
            self._end("allocate_eni")
        eni = Eni(
            eni_id=ni.eni_id,
            mac=ni.mac,
            device_index=device,
            primary_ip=ni.primary_ip,
            subnet_id=subnet_id,
            subnet_cidr=cidr,
            is_primary=False,
            attachment_id=attachment_id,
            added_at=self._now(),
        )
        await self.networking.setup(eni, self.settings.mtu)
        self.pool.add_eni(eni)
        self.pool.add_addresses(eni.eni_id, list(ni.secondary_ips))
        for p in ni.prefixes:
            self.pool.add_prefix(eni.eni_id, p)
        self.counters.enis_created += 1
        log.info(
            "attached new ENI",
            extra={"eni": eni.eni_id, "device": device, "table": eni.route_table, "ip": str(eni.primary_ip)},
        )
        return eni

    async def _shrink(self, amount: int) -> None:
        """Give back up to `amount` idle addresses: whole ENIs with WARM_ENI_TARGET (as the VPC CNI),
        prefixes with prefix delegation, single addresses otherwise; then ENIs left empty."""
        async with self._grow_lock:
            now = self._now()
            t = self.settings.targets
            try:
                if self.capacity.unit > 1:
                    await self._release_prefixes(amount // self.capacity.unit, now)
                elif t.adaptive or t.warm_ip or t.minimum_ip:
                    await self._release_addresses(amount, now)
                else:
                    for eni in self.pool.deletable_enis(now):
                        if self.pool.addresses_of(eni) <= amount:
                            await self._delete_eni(eni)
                            break  # one ENI per round: paced
                keep = self._enis_to_keep()
                for eni in self.pool.deletable_enis(self._now()):
                    if self.pool.addresses_of(eni) == 0 and self._pod_enis() > keep:
                        await self._delete_eni(eni)
                self._error_streak = 0
            except Ec2Error as exc:
                self._ec2_failed(exc)

    def _enis_to_keep(self) -> int:
        """ENIs worth keeping attached even when empty. Adaptive mode keeps the ENIs its target needs
        plus one: an attached ENI costs one subnet address, re-attaching one costs seconds a pod waits."""
        if not self.settings.targets.adaptive:
            return 1
        return min(self.capacity.pod_enis, -(-self.target() // self.capacity.per_eni) + 1)

    async def _release_addresses(self, amount: int, now: float) -> None:
        chosen = self.pool.removable_addresses(now)[:amount]
        by_eni: dict[str, list[IPv4Address]] = {}
        for a in chosen:
            by_eni.setdefault(self.pool.slots[a].eni_id, []).append(a)
        for eni_id, addresses in by_eni.items():
            for a in addresses:  # out of the pool first, so no pod gets one while EC2 takes it back
                self.pool.remove_address(a)
            try:
                await self.ec2.unassign_private_ips(eni_id, addresses=addresses)
            except Ec2Error:
                self.pool.add_addresses(eni_id, addresses)
                raise
            log.info("released addresses", extra={"eni": eni_id, "count": len(addresses)})

    async def _release_prefixes(self, count: int, now: float) -> None:
        for eni_id, prefix in self.pool.removable_prefixes(now)[:count]:
            self.pool.remove_prefix(eni_id, prefix)
            try:
                await self.ec2.unassign_private_ips(eni_id, prefixes=[prefix])
            except Ec2Error:
                self.pool.add_prefix(eni_id, prefix)
                raise
            log.info("released prefix", extra={"eni": eni_id, "prefix": str(prefix)})

    async def _delete_eni(self, eni: Eni) -> None:
        self.pool.remove_eni(eni.eni_id)
        self._begin("free_eni")
        try:
            await self.networking.teardown(eni)
            try:
                await self.ec2.detach_network_interface(eni.attachment_id)
            except Ec2Error:
                self._readopt(eni)
                raise
            for attempt in range(DETACH_DELETE_ATTEMPTS):
                try:
                    await self.ec2.delete_network_interface(eni.eni_id)
                    break
                except Ec2Error as exc:
                    if attempt + 1 == DETACH_DELETE_ATTEMPTS or (
                        exc.code
                        not in (
                            "InvalidNetworkInterface.InUse",
                            "IncorrectState",
                        )
                        and not exc.retryable
                    ):
                        # detached but not deleted: the leaked-ENI sweep deletes it after its grace period
                        log.warning(
                            "could not delete a detached ENI", extra={"eni": eni.eni_id, "error": str(exc)}
                        )
                        break
                    await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        finally:
            self._end("free_eni")
        self.counters.enis_deleted += 1
        log.info("freed ENI", extra={"eni": eni.eni_id, "device": eni.device_index})

    def _readopt(self, eni: Eni) -> None:
        addresses, prefixes = set(eni.secondary), set(eni.prefixes)
        eni.secondary, eni.prefixes = set(), set()
        self.pool.add_eni(eni)
        self.pool.add_addresses(eni.eni_id, list(addresses))
        for p in prefixes:
            self.pool.add_prefix(eni.eni_id, p)

    def _begin(self, fn: str) -> None:
        self.in_progress[fn] = self.in_progress.get(fn, 0) + 1

    def _end(self, fn: str) -> None:
        self.in_progress[fn] -= 1

    # ------------------------------------------------------------------ maintenance

    async def _maintenance_loop(self) -> None:
        # the leaked-ENI sweep is a Describe call per node: run it only as often as the grace period needs
        sweep_every = max(self.settings.reconcile_interval, self.settings.leaked_eni_grace / 2)
        last_sweep = self._now()
        while not self._stopped:
            await asyncio.sleep(self.settings.reconcile_interval)
            jobs = [self.reconcile]
            if self._now() - last_sweep >= sweep_every:
                jobs.append(self.sweep_leaked_enis)
                last_sweep = self._now()
            for job in jobs:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Ec2Error as exc:
                    self._ec2_failed(exc)
                except Exception:
                    log.exception("maintenance failed", extra={"job": job.__name__})

    async def reconcile(self) -> None:
        """Make the pool agree with EC2: addresses or ENIs that went away are dropped (pods holding them
        lose them: counted in awscni_force_removed_ips), ENIs of ours attached behind our back are adopted."""
        async with self._grow_lock:
            attached = {ni.eni_id: ni for ni in await self._attached() if ni.attachment is not None}
            for eni_id, eni in list(self.pool.enis.items()):
                ni = attached.get(eni_id)
                if ni is None:
                    self._force_remove([a for a, s in self.pool.slots.items() if s.eni_id == eni_id])
                    self.pool.remove_eni(eni_id)
                    log.error("ENI vanished from the instance", extra={"eni": eni_id})
                    continue
                on_ec2 = set(ni.secondary_ips)
                gone = [a for a in eni.secondary if a not in on_ec2]
                self._force_remove(gone)
                for a in gone:
                    self.pool.remove_address(a)
                new = [a for a in on_ec2 if a not in eni.secondary]
                self.pool.add_addresses(eni_id, new)
                for p in set(eni.prefixes) - set(ni.prefixes):
                    self._force_remove(list(p))
                    self.pool.remove_prefix(eni_id, p)
                for p in set(ni.prefixes) - set(eni.prefixes):
                    self.pool.add_prefix(eni_id, p)
            for eni_id, ni in attached.items():
                if eni_id in self.pool.enis or ni.attachment is None or ni.attachment.network_card_index != 0:
                    continue
                if self._ours(ni):
                    eni = self._eni_from(ni, await self._subnet_cidr(ni.subnet_id))
                    await self.networking.setup(eni, self.settings.mtu)
                    self.pool.add_eni(eni)
                    self.pool.add_addresses(eni_id, list(ni.secondary_ips))
                    for p in ni.prefixes:
                        self.pool.add_prefix(eni_id, p)
                else:
                    self._foreign_devices.add(ni.attachment.device_index)
            self._save()
        self._notify()

    def _force_remove(self, addresses: list[IPv4Address]) -> None:
        now = self._now()
        for a in addresses:
            slot = self.pool.slots.get(a)
            if slot is not None and slot.key is not None:
                log.error(
                    "address held by a pod was removed from its ENI",
                    extra={"ip": str(a), "key": str(slot.key)},
                )
                self.pool.release(slot.key, now)
                self.counters.force_removed_ips += 1

    async def sweep_leaked_enis(self) -> None:
        """Delete ENIs tagged with our instance id that stayed unattached beyond the grace period (a crash
        between create and attach, or a delete that failed after detach)."""
        now = self._now()
        leaked = await self.ec2.describe_network_interfaces(
            filters={f"tag:{TAG_INSTANCE_ID}": [self.node.instance_id], "status": ["available"]}
        )
        seen = set()
        for ni in leaked:
            if ni.attachment is not None or not ni.description.startswith(DESCRIPTION_PREFIX):
                continue
            seen.add(ni.eni_id)
            age = _age(ni.tags.get(TAG_CREATED_AT), self.wall())
            first = self._first_seen_available.setdefault(ni.eni_id, now)
            if max(age if age is not None else 0.0, now - first) < self.settings.leaked_eni_grace:
                continue
            try:
                await self.ec2.delete_network_interface(ni.eni_id)
            except Ec2Error as exc:
                self._ec2_failed(exc)
                continue
            self.counters.leaked_enis_deleted += 1
            log.info("deleted leaked ENI", extra={"eni": ni.eni_id})
        for eni_id in list(self._first_seen_available):
            if eni_id not in seen:
                del self._first_seen_available[eni_id]

    # ------------------------------------------------------------------ introspection

    def describe(self) -> dict[str, object]:
        now = self._now()
        s = self.pool.stats(now)
        enis = []
        for eni in sorted(self.pool.enis.values(), key=lambda e: e.device_index):
            slots = sorted(
                (sl for sl in self.pool.slots.values() if sl.eni_id == eni.eni_id), key=lambda x: x.address
            )
            enis.append(
                {
                    "id": eni.eni_id,
                    "mac": eni.mac,
                    "deviceNumber": eni.device_index,
                    "routeTableId": eni.route_table,
                    "primaryIP": str(eni.primary_ip),
                    "subnet": eni.subnet_id,
                    "subnetCIDR": str(eni.subnet_cidr),
                    "isPrimary": eni.is_primary,
                    "carriesPods": eni.carries_pods,
                    "prefixes": sorted(str(p) for p in eni.prefixes),
                    "addresses": len(slots),
                    "assigned": sum(1 for sl in slots if sl.key is not None),
                    "cooling": sum(1 for sl in slots if self.pool.cooling(sl, now)),
                    "ips": [
                        {
                            "address": str(sl.address),
                            "assigned": sl.key is not None,
                            "cooling": self.pool.cooling(sl, now),
                            "pod": f"{sl.pod_namespace}/{sl.pod_name}" if sl.key is not None else "",
                        }
                        for sl in slots
                    ],
                }
            )
        cap = self.capacity
        return {
            "instanceId": self.node.instance_id,
            "instanceType": cap.instance_type,
            "ready": self._ready,
            "prefixDelegation": cap.unit > 1,
            "totalIPs": s.total,
            "assignedIPs": s.assigned,
            "coolingIPs": s.cooling,
            "availableIPs": s.available,
            "targetIPs": self.target(),
            "maxENIs": cap.max_enis,
            "maxIPs": cap.address_ceiling,
            "maxPods": cap.max_pods,
            "lastError": self._last_error,
            "ENIs": enis,
        }


def _age(created: str | None, wall: float) -> float | None:
    if not created:
        return None
    try:
        t = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return wall - t


def capacity_for(
    *,
    instance_type: str,
    type_max_enis: int,
    ipv4_per_eni: int,
    max_pods: int,
    prefix_delegation: bool,
    custom_networking: bool,
    max_eni: int | None,
) -> Capacity:
    enis = type_max_enis if max_eni is None else min(type_max_enis, max_eni)
    return Capacity(
        instance_type=instance_type,
        max_enis=enis,
        slots_per_eni=ipv4_per_eni - 1,
        unit=16 if prefix_delegation else 1,
        pod_enis=enis - 1 if custom_networking else enis,
        max_pods=max_pods,
        max_eni_setting=max_eni,
    )


__all__ = ["Capacity", "Counters", "VpcAllocator", "VpcSettings", "capacity_for", "ceil_to"]
