"""The allocator a CNI ADD or DEL sees: an address from the warm pool, or back to it.

It holds no EC2 client: assign and release touch only memory and the checkpoint (the warm path makes no
cloud call). A pod that finds the pool empty wakes the pool controller and waits for its growth (up to
`assign_wait`) instead of failing, unless a hard limit is reached: then AddressExhausted names it. A wait
that runs out is AddressWaitTimedOut (CNI "try again later"): no limit was hit, EC2 was only slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from ipaddress import IPv4Address

from vpcnet.ipam.types import (
    AddressExhausted,
    AddressManagerNotReady,
    AddressWaitTimedOut,
    Assignment,
    IpamKey,
    PodAddress,
)
from vpcnet.ipam.vpc_state import VpcPoolState


class VpcAddressAllocator:
    def __init__(self, state: VpcPoolState) -> None:
        self.state = state

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        st = self.state
        if not st.ready:
            raise AddressManagerNotReady("ipam is starting: the pool is not loaded yet")
        existing = st.pool.by_key.get(key)
        if existing is not None:
            return st.pool.assignment(existing)
        deadline = st.now() + st.settings.assign_wait
        waited = False
        while True:
            now = st.now()
            if st.pool.stats(now).assigned >= st.capacity.pod_limit:
                st.counters.exhausted += 1
                raise AddressExhausted(self.hard_limit() or "pod limit reached")
            slot = st.pool.pick(now)
            if slot is not None:
                st.pool.assign(slot, key, pod_namespace, pod_name, now)
                try:
                    st.save()
                except Exception:
                    st.pool.release(key, now)
                    slot.released_at = None
                    raise
                st.counters.assigns += 1
                st.forecast.record(now)
                st.wake.set()
                return st.pool.assignment(slot)
            if not waited:
                st.counters.no_available += 1
            reason = self.hard_limit()
            if reason is not None:
                st.counters.exhausted += 1
                raise AddressExhausted(reason)
            if now >= deadline:
                st.counters.exhausted += 1
                raise AddressWaitTimedOut(
                    f"no address became available within {st.settings.assign_wait:g}s (VPCNET_ASSIGN_WAIT)"
                    + (f" (last EC2 error: {st.last_error})" if st.last_error else "")
                )
            if not waited:
                if st.pool.stats(now).total >= st.capacity.address_ceiling:
                    st.counters.waited_for_cooldown += 1  # every address exists; some are cooling
                else:
                    st.counters.waited_for_ec2 += 1
                waited = True
            st.waiters += 1
            changed = st.changed
            st.wake.set()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, deadline - now)):
                        await changed.wait()
            finally:
                st.waiters -= 1

    async def release(self, key: IpamKey) -> Assignment | None:
        st = self.state
        now = st.now()
        slot = st.pool.slots.get(st.pool.by_key[key].address) if key in st.pool.by_key else None
        if slot is None:
            return None
        assignment = st.pool.assignment(slot)
        assigned_at = slot.assigned_at
        st.pool.release(key, now)
        try:
            st.save()
        except Exception:
            st.pool.unrelease(slot, key, assignment.pod_namespace, assignment.pod_name, assigned_at)
            raise
        st.counters.releases += 1
        st.wake.set()
        return assignment

    async def lookup(self, key: IpamKey) -> Assignment | None:
        slot = self.state.pool.by_key.get(key)
        return None if slot is None else self.state.pool.assignment(slot)

    async def holds(self, address: PodAddress) -> bool:
        slot = self.state.pool.slots.get(address) if isinstance(address, IPv4Address) else None
        return slot is not None and slot.key is not None

    def hard_limit(self) -> str | None:
        """Why no address can be had at all (not just now), or None if growing (or waiting) can help."""
        st = self.state
        cap, s = st.capacity, st.stats()
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
        if (
            st.eni_targets.problem
            and s.cooling == 0
            and not any(
                e.carries_pods and e.used_slots < cap.slots_per_eni + 1 for e in st.pool.enis.values()
            )
        ):
            return st.eni_targets.problem  # no ENI can be made, none attached has room
        if st.subnet_full is not None and st.subnet_full[0] > st.now():
            can_use_existing = any(
                e.carries_pods and e.used_slots < cap.slots_per_eni + 1 and e.subnet_id != st.subnet_full[1]
                for e in st.pool.enis.values()
            )
            if not can_use_existing and s.cooling == 0:
                subnet = st.subnet_full[1]
                retry = max(1, math.ceil(st.subnet_full[0] - st.now()))
                return (
                    f"EC2 refused: subnet exhausted ({subnet}, {st.subnets.get(subnet, '?')}), "
                    f"retrying in {retry} s"
                )
        return None
