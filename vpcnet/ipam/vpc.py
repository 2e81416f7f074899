"""The VPC address manager (ipamd): ENIs and their addresses from EC2, a warm pool, the checkpoint.

`VpcAllocator` is the facade the agent, its metrics and the benchmark use; it composes three parts that
share one `VpcPoolState`, each with its own tests:

- `vpc_alloc.VpcAddressAllocator`: what a CNI ADD or DEL sees; no EC2 client (the warm path makes no cloud
  call); a pod that finds the pool empty waits for it to grow (up to `assign_wait`).
- `vpc_pool.PoolController`: keeps the pool at its warm target, growing and (paced) shrinking against EC2.
- `vpc_reconcile.Reconciler`: adopts ENIs and restores the checkpoint at start-up; later drops what EC2
  took away, adopts what was attached, and deletes leaked ENIs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from vpcnet.cloud.ec2 import Ec2Api
from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.checkpoint import Checkpoint
from vpcnet.ipam.eni_pool import AddressPool, PoolStats
from vpcnet.ipam.eni_target import EniTargets
from vpcnet.ipam.interfaces import EniNetworking, PodExistence
from vpcnet.ipam.types import Assignment, IpamKey, PodAddress
from vpcnet.ipam.vpc_alloc import VpcAddressAllocator
from vpcnet.ipam.vpc_pool import PoolController
from vpcnet.ipam.vpc_reconcile import Reconciler
from vpcnet.ipam.vpc_state import Counters, VpcPoolState, VpcSettings
from vpcnet.ipam.warm import Capacity, ceil_to

log = logging.getLogger("vpcnet.ipam")


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
        eni_targets: EniTargets | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = VpcPoolState(
            node=node,
            capacity=capacity,
            settings=settings,
            checkpoint=checkpoint,
            eni_targets=eni_targets,
            wall_clock=wall_clock,
        )
        self.allocator = VpcAddressAllocator(self.state)
        self.controller = PoolController(self.state, ec2, networking)
        self.reconciler = Reconciler(self.state, ec2, networking, pods)
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def ready(self) -> bool:
        return self.state.ready

    async def start(self) -> None:
        """Adopt our ENIs, restore the checkpoint, then keep the pool at its target in the background."""
        await self.reconciler.adopt_enis()
        await self.reconciler.restore()
        self.state.ready = True
        self.state.wake.set()  # fill the pool now, not a pool_interval later: the first pods are coming
        self._tasks.append(asyncio.create_task(self.controller.run(), name="ipam-pool"))
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="ipam-maintenance"))
        stats = self.stats()
        log.info(
            "ipam ready",
            extra={"enis": len(self.pool.enis), "addresses": stats.total, "assigned": stats.assigned},
        )

    async def stop(self) -> None:
        self.state.ready = False
        self.state.stopped = True
        self.state.wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass  # we cancelled it
            except Exception:
                log.exception("ipam task failed while stopping", extra={"task": t.get_name()})
        self._tasks.clear()

    # ------------------------------------------------------------------ the Allocator interface

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        return await self.allocator.assign(key, pod_namespace, pod_name)

    async def release(self, key: IpamKey) -> Assignment | None:
        return await self.allocator.release(key)

    async def lookup(self, key: IpamKey) -> Assignment | None:
        return await self.allocator.lookup(key)

    async def holds(self, address: PodAddress) -> bool:
        return await self.allocator.holds(address)

    # ------------------------------------------------------------------ what the agent and tests read

    @property
    def pool(self) -> AddressPool:
        return self.state.pool

    @property
    def counters(self) -> Counters:
        return self.state.counters

    @property
    def capacity(self) -> Capacity:
        return self.state.capacity

    @property
    def in_progress(self) -> dict[str, int]:
        return self.controller.in_progress

    def stats(self) -> PoolStats:
        return self.state.stats()

    def target(self) -> int:
        return self.controller.target()

    def slot_headroom(self) -> int:
        return self.controller.slot_headroom()

    async def reconcile(self) -> None:
        await self.reconciler.reconcile()

    async def sweep_leaked_enis(self) -> None:
        await self.reconciler.sweep_leaked_enis()

    # ------------------------------------------------------------------ introspection

    def describe(self) -> dict[str, object]:
        pool = self.state.pool
        now = self.state.now()
        s = pool.stats(now)
        enis = []
        for eni in sorted(pool.enis.values(), key=lambda e: e.device_index):
            mine = (sl for sl in pool.slots.values() if sl.eni_id == eni.eni_id)
            slots = sorted(mine, key=lambda x: x.address)
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
                    "cooling": sum(1 for sl in slots if pool.cooling(sl, now)),
                    "ips": [
                        {
                            "address": str(sl.address),
                            "assigned": sl.key is not None,
                            "cooling": pool.cooling(sl, now),
                            "pod": f"{sl.pod_namespace}/{sl.pod_name}" if sl.key is not None else "",
                        }
                        for sl in slots
                    ],
                }
            )
        cap = self.state.capacity
        return {
            "instanceId": self.state.node.instance_id,
            "instanceType": cap.instance_type,
            "ready": self.state.ready,
            "prefixDelegation": cap.unit > 1,
            "totalIPs": s.total,
            "assignedIPs": s.assigned,
            "coolingIPs": s.cooling,
            "availableIPs": s.available,
            "targetIPs": self.target(),
            # EC2 actions under way: until they end, EC2 may hold what the pool does not (yet)
            "ec2InProgress": {fn: n for fn, n in sorted(self.in_progress.items()) if n},
            "maxENIs": cap.max_enis,
            "maxIPs": cap.address_ceiling,
            "maxPods": cap.max_pods,
            "lastError": self.state.last_error,
            "eniTarget": self.state.eni_targets.describe(),
            "ENIs": enis,
        }


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
