"""The pool controller: keeps the node's addresses at the warm target by growing and shrinking against EC2.

One background task wakes on every assignment and release, when a cooldown ends, and every `pool_interval`
seconds; it grows the pool (secondary IPs or prefixes on attached ENIs first, then a new ENI) and gives back
a surplus only after it has lasted `release_delay` seconds, and then only the part of it that was never
needed in that time (paced, so the pool does not flap). In adaptive mode it grows to a band's top (the
target and a batch more) and gives back only what stays over that top for ADAPTIVE_RELEASE_DELAY, one
ENI's addresses (one call) per round, and keeps the ENIs it attached: fewer EC2 calls per pod start, which a
large cluster's EC2 throttling counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from ipaddress import IPv4Address

from vpcnet.cloud.ec2 import (
    DESCRIPTION_PREFIX,
    SUBNET_FULL_CODES,
    TAG_CLUSTER,
    TAG_CREATED_AT,
    TAG_INSTANCE_ID,
    Ec2Api,
    Ec2Error,
)
from vpcnet.ipam.eni_pool import Eni
from vpcnet.ipam.eni_target import EniTargetUnavailable
from vpcnet.ipam.interfaces import EniNetworking
from vpcnet.ipam.vpc_state import VpcPoolState
from vpcnet.ipam.warm import ADAPTIVE_RELEASE_DELAY, BATCH_HORIZON, adaptive_band, desired_total

log = logging.getLogger("vpcnet.ipam")

DETACH_DELETE_ATTEMPTS = 6
# Adaptive mode gives back a lasting surplus only when it is worth a call: at least half of what the band
# holds free (reserve + batch). Smaller releases (a batch, as before) made a call every release delay while
# a node drained: 2.3x the default's calls on the daily trace for ~1 fewer idle address.
RELEASE_MIN_SHARE = 0.5


class PoolController:
    def __init__(self, state: VpcPoolState, ec2: Ec2Api, networking: EniNetworking) -> None:
        self.state = state
        self.ec2 = ec2
        self.networking = networking
        self.in_progress: dict[str, int] = {}  # EC2 actions under way, by the VPC CNI's function names
        self._surplus_since: float | None = None
        self._surplus_min = 0
        # Seconds a refill takes (measured as we go): addresses on an attached ENI (fast), a new ENI (slow).
        self._fast_lead = 1.0
        self._slow_lead = 10.0

    # ------------------------------------------------------------------ the target and the loop

    def target(self) -> int:
        st = self.state
        now = st.now()
        s = st.pool.stats(now)
        forecast = 0
        if st.settings.targets.adaptive:
            # Free addresses cover one refill's lead (the measured, decaying worst assign time): later
            # pods are served by the refill the burst's first pod started.
            forecast = st.forecast.forecast(now, self._fast_lead)
        return desired_total(s.used + st.waiters, st.settings.targets, st.capacity, forecast)

    def band(self) -> tuple[int, int]:
        """(grow below, shrink above): the target itself in static modes; in adaptive mode the target and a
        batch more, so a refill serves many pods with one EC2 call and a small dip costs none."""
        st = self.state
        if not st.settings.targets.adaptive:
            want = self.target()
            return want, want
        now = st.now()
        s = st.pool.stats(now)
        forecast = st.forecast.forecast(now, self._fast_lead)  # one refill's lead, as in desired()
        batch = st.forecast.batch(now, BATCH_HORIZON, st.capacity.per_eni)
        return adaptive_band(s.used + st.waiters, st.settings.targets, st.capacity, forecast, batch)

    async def run(self) -> None:
        st = self.state
        while not st.stopped:
            now = st.now()
            timeout = st.settings.pool_interval
            next_cool = st.pool.next_cooldown_end(now)
            if next_cool is not None:
                timeout = min(timeout, max(0.01, next_cool - now + 0.001))
            with contextlib.suppress(TimeoutError):  # a timeout is a scheduled look, not a failure
                async with asyncio.timeout(timeout):
                    await st.wake.wait()
            if st.stopped:
                return
            st.wake.clear()
            if st.waiters and st.pool.pick(st.now()) is not None:
                st.notify()  # a cooldown ended: waiting pods can have an address
            try:
                await self.adjust()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pool adjustment failed")

    async def adjust(self) -> None:
        """One step toward the target: grow, or (paced) shrink."""
        st = self.state
        now = st.now()
        total = st.pool.stats(now).total
        low, high = self.band()
        if total < low:
            self._surplus_since = None
            if now >= st.backoff_until:
                await self._grow(high - total)
                st.notify()
            return
        adaptive = st.settings.targets.adaptive
        if adaptive:
            await self._ensure_eni_headroom()
        surplus = total - high
        if surplus <= 0:
            self._surplus_since = None
            return
        if self._surplus_since is None:
            self._surplus_since, self._surplus_min = now, surplus
            return
        self._surplus_min = min(self._surplus_min, surplus)
        delay = (
            max(st.settings.release_delay, ADAPTIVE_RELEASE_DELAY) if adaptive else st.settings.release_delay
        )
        if now - self._surplus_since >= delay:
            amount = self._surplus_min
            self._surplus_since = None
            held_free = high - st.pool.stats(now).used - st.waiters  # what the band's top holds free
            if adaptive and amount < max(1, RELEASE_MIN_SHARE * held_free):
                return  # not worth an EC2 call yet: look again after another delay
            await self._shrink(amount)

    # ------------------------------------------------------------------ growing

    async def _grow(self, deficit: int) -> None:
        st = self.state
        async with st.ec2_lock:
            started = st.now()
            cap = st.capacity
            units = asked = -(-deficit // cap.unit)
            used_new_eni = False
            try:
                # one call where one ENI has room for all: an ENI that does first, then by device index
                def order(e: Eni) -> tuple[bool, int]:
                    return (cap.slots_per_eni + 1 - e.used_slots < units, e.device_index)

                for eni in sorted(st.pool.enis.values(), key=order):
                    if units <= 0:
                        break
                    free = cap.slots_per_eni + 1 - eni.used_slots
                    if not eni.carries_pods or free <= 0:
                        continue
                    full = st.subnet_full
                    if full is not None and full[1] == eni.subnet_id and full[0] > st.now():
                        continue
                    n = min(free, units)
                    units -= await self._add_to_eni(eni, n)
                while units > 0 and len(st.pool.enis) + len(st.foreign_devices) < cap.max_enis:
                    if st.pod_enis() >= cap.pod_enis:
                        break
                    eni = await self._new_eni(min(units, cap.slots_per_eni))
                    units -= st.pool.addresses_of(eni) // cap.unit
                    used_new_eni = True
                st.error_streak = 0
                st.last_error = ""
                if units < asked:  # EC2 gave addresses: whatever was full is not now
                    st.subnet_served()
            except EniTargetUnavailable as exc:
                self._no_target(exc)
                return
            except Ec2Error as exc:
                st.ec2_failed(exc)
                if exc.code in SUBNET_FULL_CODES:  # its own bounded backoff replaces the general one
                    wait = st.subnet_refused(self._subnet_of_new_enis())
                    st.backoff_until = st.now() + wait
                return
            took = st.now() - started
            # recent worst case, decaying toward new data
            if used_new_eni:
                self._slow_lead = max(took, 0.8 * self._slow_lead + 0.2 * took)
            else:
                self._fast_lead = max(took, 0.8 * self._fast_lead + 0.2 * took)

    def slot_headroom(self) -> int:
        """Addresses obtainable without attaching an ENI: free ones, and free slots on attached ENIs."""
        st = self.state
        s = st.pool.stats(st.now())
        slots = sum(
            st.capacity.slots_per_eni + 1 - e.used_slots for e in st.pool.enis.values() if e.carries_pods
        )
        return s.available + slots * st.capacity.unit

    async def _ensure_eni_headroom(self) -> None:
        """Adaptive mode: attach an (empty) ENI ahead of need when the slots left on attached ENIs would
        not cover the arrivals of one ENI attach time; an empty ENI holds no pod address, only its own."""
        st = self.state
        cap = st.capacity
        need = st.forecast.forecast(st.now(), 2 * self._slow_lead)
        if self.slot_headroom() >= need or st.now() < st.backoff_until:
            return
        if st.pod_enis() >= cap.pod_enis or len(st.pool.enis) + len(st.foreign_devices) >= cap.max_enis:
            return
        async with st.ec2_lock:
            started = st.now()
            try:
                await self._new_eni(0)
            except EniTargetUnavailable as exc:
                self._no_target(exc)
                return
            except Ec2Error as exc:
                st.ec2_failed(exc)
                return
            took = st.now() - started
            self._slow_lead = max(took, 0.8 * self._slow_lead + 0.2 * took)

    async def _add_to_eni(self, eni: Eni, n: int) -> int:
        st = self.state
        self._begin("assign_private_ips")
        try:
            if st.capacity.unit > 1:
                _, prefixes = await self.ec2.assign_private_ips(eni.eni_id, prefix_count=n)
                if eni.eni_id in st.pool.enis:
                    for p in prefixes:
                        st.pool.add_prefix(eni.eni_id, p)
                got = len(prefixes)
            else:
                addresses, _ = await self.ec2.assign_private_ips(eni.eni_id, count=n)
                if eni.eni_id in st.pool.enis:
                    st.pool.add_addresses(eni.eni_id, addresses)
                got = len(addresses)
        finally:
            self._end("assign_private_ips")
        log.info("added addresses", extra={"eni": eni.eni_id, "count": got, "prefix": st.capacity.unit > 1})
        return got

    def _free_device_index(self) -> int:
        st = self.state
        return lowest_free_index({e.device_index for e in st.pool.enis.values()} | st.foreign_devices)

    def _subnet_of_new_enis(self) -> str:
        try:
            return self.state.eni_targets.for_new_eni(self.state.node).subnet_id
        except EniTargetUnavailable:
            return self.state.node.subnet_id

    def _no_target(self, exc: EniTargetUnavailable) -> None:
        """No ENI can be made (custom networking without a usable ENIConfig): say so once, wait for the
        ENIConfig watcher to wake the pool (no EC2 error backoff: EC2 was not asked)."""
        st = self.state
        if st.last_error != str(exc):
            log.error("cannot grow the pool", extra={"error": str(exc)})
        st.last_error = str(exc)
        # Asking again cannot help until the ENIConfig changes, and that change wakes the pool (and resets
        # this); without it a waiting pod and the pool would wake each other in a loop.
        st.backoff_until = st.now() + st.settings.pool_interval

    async def _new_eni(self, units: int) -> Eni:
        st = self.state
        target = st.eni_targets.for_new_eni(st.node)  # read now: a label change applies to new ENIs only
        subnet_id, groups = target.subnet_id, target.security_groups
        tags = {
            TAG_INSTANCE_ID: st.node.instance_id,
            TAG_CREATED_AT: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if st.settings.cluster_name:
            tags[TAG_CLUSTER] = st.settings.cluster_name
        self._begin("allocate_eni")
        try:
            ni = await self.ec2.create_network_interface(
                subnet_id=subnet_id,
                description=f"{DESCRIPTION_PREFIX}{st.node.instance_id}",
                security_groups=groups,
                tags=tags,
                secondary_ip_count=0 if st.capacity.unit > 1 else units,
                prefix_count=units if st.capacity.unit > 1 else 0,
            )
            device = self._free_device_index()
            try:
                attachment_id = await self.ec2.attach_network_interface(
                    ni.eni_id, st.node.instance_id, device
                )
            except Ec2Error:
                # not attached: give it back now (if this fails too, the leaked-ENI sweep deletes it later)
                try:
                    await self.ec2.delete_network_interface(ni.eni_id)
                except Ec2Error as exc:
                    log.warning(
                        "could not delete an ENI that failed to attach; the leaked-ENI sweep will",
                        extra={"eni": ni.eni_id, "error": str(exc)},
                    )
                raise
            try:
                await self.ec2.set_delete_on_termination(ni.eni_id, attachment_id)
            except Ec2Error as exc:  # only matters if the instance terminates: then the sweep deletes it
                log.warning("could not set DeleteOnTermination", extra={"eni": ni.eni_id, "error": str(exc)})
            cidr = await st.subnet_cidr(self.ec2, subnet_id)
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
            added_at=st.now(),
        )
        await self.networking.setup(eni, st.settings.mtu)
        st.pool.add_eni(eni)
        st.pool.add_addresses(eni.eni_id, list(ni.secondary_ips))
        for p in ni.prefixes:
            st.pool.add_prefix(eni.eni_id, p)
        st.counters.enis_created += 1
        log.info(
            "attached new ENI",
            extra={
                "eni": eni.eni_id,
                "device": device,
                "table": eni.route_table,
                "ip": str(eni.primary_ip),
                "subnet": subnet_id,
                "target": target.source,
            },
        )
        return eni

    # ------------------------------------------------------------------ shrinking

    async def _shrink(self, amount: int) -> None:
        """Give back up to `amount` idle addresses: whole ENIs with WARM_ENI_TARGET (as the VPC CNI),
        prefixes with prefix delegation, single addresses otherwise; then ENIs left empty."""
        st = self.state
        async with st.ec2_lock:
            now = st.now()
            t = st.settings.targets
            try:
                if st.capacity.unit > 1:
                    await self._release_prefixes(amount // st.capacity.unit, now)
                elif t.adaptive or t.warm_ip or t.minimum_ip:
                    await self._release_addresses(amount, now)
                else:
                    for eni in st.pool.deletable_enis(now):
                        if st.pool.addresses_of(eni) <= amount:
                            await self._delete_eni(eni)
                            break  # one ENI per round: paced
                keep = self._enis_to_keep()
                for eni in st.pool.deletable_enis(st.now()):
                    if st.pool.addresses_of(eni) == 0 and st.pod_enis() > keep:
                        await self._delete_eni(eni)
                st.error_streak = 0
            except Ec2Error as exc:
                st.ec2_failed(exc)

    def _enis_to_keep(self) -> int:
        """ENIs kept attached even when empty: adaptive mode keeps all it attached (an empty one holds one
        subnet address; deleting and re-attaching it costs five EC2 calls, and an attach a pod waits for)."""
        st = self.state
        return st.capacity.pod_enis if st.settings.targets.adaptive else 1

    async def _release_addresses(self, amount: int, now: float) -> None:
        pool = self.state.pool
        chosen = pool.removable_addresses(now)[:amount]
        by_eni: dict[str, list[IPv4Address]] = {}
        for a in chosen:
            by_eni.setdefault(pool.slots[a].eni_id, []).append(a)
        if self.state.settings.targets.adaptive:  # one EC2 call per round; the rest waits for the next
            by_eni = dict(list(by_eni.items())[:1])
        for eni_id, addresses in by_eni.items():
            for a in addresses:  # out of the pool first, so no pod gets one while EC2 takes it back
                pool.remove_address(a)
            try:
                await self.ec2.unassign_private_ips(eni_id, addresses=addresses)
            except Ec2Error:
                pool.add_addresses(eni_id, addresses)
                raise
            log.info("released addresses", extra={"eni": eni_id, "count": len(addresses)})

    async def _release_prefixes(self, count: int, now: float) -> None:
        pool = self.state.pool
        for eni_id, prefix in pool.removable_prefixes(now)[:count]:
            pool.remove_prefix(eni_id, prefix)
            try:
                await self.ec2.unassign_private_ips(eni_id, prefixes=[prefix])
            except Ec2Error:
                pool.add_prefix(eni_id, prefix)
                raise
            log.info("released prefix", extra={"eni": eni_id, "prefix": str(prefix)})

    async def _delete_eni(self, eni: Eni) -> None:
        st = self.state
        st.pool.remove_eni(eni.eni_id)
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
                        exc.code not in ("InvalidNetworkInterface.InUse", "IncorrectState")
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
        st.counters.enis_deleted += 1
        log.info("freed ENI", extra={"eni": eni.eni_id, "device": eni.device_index})

    def _readopt(self, eni: Eni) -> None:
        pool = self.state.pool
        addresses, prefixes = set(eni.secondary), set(eni.prefixes)
        eni.secondary, eni.prefixes = set(), set()
        pool.add_eni(eni)
        pool.add_addresses(eni.eni_id, list(addresses))
        for p in prefixes:
            pool.add_prefix(eni.eni_id, p)

    def _begin(self, fn: str) -> None:
        self.in_progress[fn] = self.in_progress.get(fn, 0) + 1

    def _end(self, fn: str) -> None:
        self.in_progress[fn] -= 1


def lowest_free_index(taken: set[int]) -> int:
    """The lowest device index from 1 up that no ENI holds (0 is the primary's)."""
    i = 1
    while i in taken:
        i += 1
    return i
