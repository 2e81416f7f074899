"""The reconciler: makes the pool agree with EC2 and the checkpoint.

At start-up it adopts the ENIs of ours attached to the instance (leaving foreign ones alone) and restores
the checkpointed assignments of pods that still exist. Then, every `reconcile_interval` seconds, it drops
what EC2 took away behind our back and adopts what was attached, and, as often as the grace period needs,
deletes leaked ENIs (ours, unattached for longer than `leaked_eni_grace`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

from vpcnet.cloud.ec2 import (
    DESCRIPTION_PREFIX,
    TAG_CREATED_AT,
    TAG_INSTANCE_ID,
    TAG_NO_MANAGE,
    Ec2Api,
    Ec2Error,
    NetworkInterface,
)
from vpcnet.ipam.eni_pool import Eni
from vpcnet.ipam.interfaces import EniNetworking, PodExistence
from vpcnet.ipam.vpc_state import VpcPoolState

log = logging.getLogger("vpcnet.ipam")


class Reconciler:
    def __init__(
        self, state: VpcPoolState, ec2: Ec2Api, networking: EniNetworking, pods: PodExistence
    ) -> None:
        self.state = state
        self.ec2 = ec2
        self.networking = networking
        self.pods = pods
        self._first_seen_available: dict[str, float] = {}

    # ------------------------------------------------------------------ start-up

    async def adopt_enis(self) -> None:
        """Take in the ENIs attached to the instance: the primary and ours; remember foreign ones' devices."""
        st = self.state
        for ni in await self._attached():
            if ni.attachment is None or ni.attachment.network_card_index != 0:
                continue
            is_primary = ni.eni_id == st.node.primary_eni_id or ni.attachment.device_index == 0
            if not is_primary and not self._ours(ni):
                st.foreign_devices.add(ni.attachment.device_index)
                log.info("leaving a foreign ENI alone", extra={"eni": ni.eni_id})
                continue
            eni = self._eni_from(ni, await st.subnet_cidr(self.ec2, ni.subnet_id))
            st.pool.add_eni(eni)
            st.pool.add_addresses(eni.eni_id, list(ni.secondary_ips))
            for p in ni.prefixes:
                st.pool.add_prefix(eni.eni_id, p)
            if not eni.is_primary:
                await self.networking.setup(eni, st.settings.mtu)
            log.info(
                "adopted ENI",
                extra={
                    "eni": eni.eni_id,
                    "device": eni.device_index,
                    "addresses": len(ni.secondary_ips),
                    "prefixes": len(ni.prefixes),
                },
            )

    async def restore(self) -> None:
        """Re-assign the checkpointed addresses of live pods; the rest cool down (their pods are gone)."""
        st = self.state
        data = st.checkpoint.load()
        if data is None:
            st.save()
            return
        now, wall = st.now(), st.wall()
        for a in data.allocations:
            slot = st.pool.slots.get(a.address) if isinstance(a.address, IPv4Address) else None
            if slot is None:
                log.warning(
                    "checkpointed address is no longer on our ENIs; dropped", extra={"ip": str(a.address)}
                )
                st.counters.dropped_stale += 1
                continue
            if slot.key is not None or a.key in st.pool.by_key:
                log.error(
                    "checkpoint holds an address or key twice; kept the first", extra={"ip": str(a.address)}
                )
                st.counters.dropped_stale += 1
                continue
            if not await self.pods.exists(a.key, a.pod_namespace, a.pod_name):
                log.info(
                    "pod of a checkpointed address is gone; address cools down",
                    extra={"ip": str(a.address), "pod": f"{a.pod_namespace}/{a.pod_name}"},
                )
                slot.released_at = now
                st.counters.dropped_stale += 1
                continue
            st.pool.assign(slot, a.key, a.pod_namespace, a.pod_name, now - max(0.0, wall - a.assigned_at))
            st.counters.restored += 1
        for address, released in data.cooldown.items():
            slot = st.pool.slots.get(address)
            if slot is not None and slot.key is None:
                slot.released_at = now - max(0.0, wall - released)
        st.save()

    # ------------------------------------------------------------------ while running

    async def run(self) -> None:
        st = self.state
        # the leaked-ENI sweep is a Describe call per node: run it only as often as the grace period needs
        sweep_every = max(st.settings.reconcile_interval, st.settings.leaked_eni_grace / 2)
        last_sweep = st.now()
        while not st.stopped:
            await asyncio.sleep(st.settings.reconcile_interval)
            jobs = [self.reconcile]
            if st.now() - last_sweep >= sweep_every:
                jobs.append(self.sweep_leaked_enis)
                last_sweep = st.now()
            for job in jobs:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Ec2Error as exc:
                    st.ec2_failed(exc)
                except Exception:
                    log.exception("maintenance failed", extra={"job": job.__name__})

    async def reconcile(self) -> None:
        """Make the pool agree with EC2: addresses or ENIs that went away are dropped (pods holding them
        lose them: counted in awscni_force_removed_ips), ENIs of ours attached behind our back are adopted."""
        st = self.state
        pool = st.pool
        async with st.ec2_lock:
            attached = {ni.eni_id: ni for ni in await self._attached() if ni.attachment is not None}
            for eni_id, eni in list(pool.enis.items()):
                ni = attached.get(eni_id)
                if ni is None:
                    self._force_remove([a for a, s in pool.slots.items() if s.eni_id == eni_id])
                    pool.remove_eni(eni_id)
                    log.error("ENI vanished from the instance", extra={"eni": eni_id})
                    continue
                on_ec2 = set(ni.secondary_ips)
                gone = [a for a in eni.secondary if a not in on_ec2]
                self._force_remove(gone)
                for a in gone:
                    pool.remove_address(a)
                new = [a for a in on_ec2 if a not in eni.secondary]
                pool.add_addresses(eni_id, new)
                for p in set(eni.prefixes) - set(ni.prefixes):
                    self._force_remove(list(p))
                    pool.remove_prefix(eni_id, p)
                for p in set(ni.prefixes) - set(eni.prefixes):
                    pool.add_prefix(eni_id, p)
            for eni_id, ni in attached.items():
                if eni_id in pool.enis or ni.attachment is None or ni.attachment.network_card_index != 0:
                    continue
                if self._ours(ni):
                    eni = self._eni_from(ni, await st.subnet_cidr(self.ec2, ni.subnet_id))
                    await self.networking.setup(eni, st.settings.mtu)
                    pool.add_eni(eni)
                    pool.add_addresses(eni_id, list(ni.secondary_ips))
                    for p in ni.prefixes:
                        pool.add_prefix(eni_id, p)
                else:
                    st.foreign_devices.add(ni.attachment.device_index)
            st.save()
        st.notify()

    def _force_remove(self, addresses: list[IPv4Address]) -> None:
        st = self.state
        now = st.now()
        for a in addresses:
            slot = st.pool.slots.get(a)
            if slot is not None and slot.key is not None:
                log.error(
                    "address held by a pod was removed from its ENI",
                    extra={"ip": str(a), "key": str(slot.key)},
                )
                st.pool.release(slot.key, now)
                st.counters.force_removed_ips += 1

    async def sweep_leaked_enis(self) -> None:
        """Delete ENIs tagged with our instance id that stayed unattached beyond the grace period (a crash
        between create and attach, or a delete that failed after detach)."""
        # Under the EC2 lock: an ENI the pool controller has created and is still attaching is 'available'
        # too, and may be older than the grace period by its createdAt tag (a slow attach, a short grace).
        async with self.state.ec2_lock:
            await self._sweep_leaked_enis()

    async def _sweep_leaked_enis(self) -> None:
        st = self.state
        now = st.now()
        leaked = await self.ec2.describe_network_interfaces(
            filters={f"tag:{TAG_INSTANCE_ID}": [st.node.instance_id], "status": ["available"]}
        )
        seen = set()
        for ni in leaked:
            if ni.attachment is not None or not ni.description.startswith(DESCRIPTION_PREFIX):
                continue
            seen.add(ni.eni_id)
            age = created_age(ni.tags.get(TAG_CREATED_AT), st.wall())
            first = self._first_seen_available.setdefault(ni.eni_id, now)
            if max(age if age is not None else 0.0, now - first) < st.settings.leaked_eni_grace:
                continue
            try:
                await self.ec2.delete_network_interface(ni.eni_id)
            except Ec2Error as exc:
                st.ec2_failed(exc)
                continue
            st.counters.leaked_enis_deleted += 1
            log.info("deleted leaked ENI", extra={"eni": ni.eni_id})
        for eni_id in list(self._first_seen_available):
            if eni_id not in seen:
                del self._first_seen_available[eni_id]

    # ------------------------------------------------------------------ helpers

    async def _attached(self) -> list[NetworkInterface]:
        return await self.ec2.describe_network_interfaces(
            filters={"attachment.instance-id": [self.state.node.instance_id]}
        )

    def _ours(self, ni: NetworkInterface) -> bool:
        if ni.tags.get(TAG_NO_MANAGE) == "true":
            return False
        return ni.tags.get(TAG_INSTANCE_ID) == self.state.node.instance_id

    def _eni_from(self, ni: NetworkInterface, cidr: IPv4Network) -> Eni:
        st = self.state
        assert ni.attachment is not None
        primary = ni.eni_id == st.node.primary_eni_id or ni.attachment.device_index == 0
        return Eni(
            eni_id=ni.eni_id,
            mac=ni.mac,
            device_index=ni.attachment.device_index,
            primary_ip=ni.primary_ip,
            subnet_id=ni.subnet_id,
            subnet_cidr=cidr,
            is_primary=primary,
            carries_pods=not (primary and st.eni_targets.custom_networking),
            attachment_id=ni.attachment.attachment_id,
            added_at=st.now(),
        )


def created_age(created: str | None, wall: float) -> float | None:
    """Seconds since an ENI's createdAt tag, or None if it has none or it does not parse (then the time
    we first saw the ENI unattached counts alone)."""
    if not created:
        return None
    try:
        t = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        log.warning("ENI createdAt tag does not parse; age counts from first seen", extra={"tag": created})
        return None
    return wall - t
