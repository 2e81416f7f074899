"""The VPC address manager in IPv6 mode (ENABLE_IPv6), as the VPC CNI's ipamd runs it.

One /80 prefix on the primary ENI is all a node needs: 2^48 addresses, so there is no warm pool, no ENI
growth and no pool loop. At start-up the prefix is read from IMDS (`ipv6-prefix` of the primary MAC); only
when the ENI has none is one assigned (AssignIpv6Addresses, Ipv6PrefixCount=1). Pods get addresses from it,
and each an IPv4 from 169.254.172.0/22 that never leaves the node (the VPC CNI's egress-v4 plugin: the node
SNATs it to its primary IPv4, so an IPv6 pod still reaches IPv4-only services).

Assignments are checkpointed (the same file format as IPv4 mode, under "ipv6") on every change; a restart
keeps those whose pod still exists and whose address is in the prefix IMDS shows.

Addresses are handed out from a cursor that only moves forward (wrapping at the end of the prefix), so a
just-freed address is not reused while 2^48 others are free: no cooldown needed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from vpcnet.cloud.ec2 import Ec2Api
from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.checkpoint import Allocation, Checkpoint, CheckpointData
from vpcnet.ipam.interfaces import PodExistence
from vpcnet.ipam.types import (
    MAIN_ROUTE_TABLE,
    AddressExhausted,
    AddressManagerNotReady,
    Assignment,
    IpamKey,
    PodAddress,
)

log = logging.getLogger("vpcnet.ipam.ipv6")

EGRESS_V4_CIDR = IPv4Network("169.254.172.0/22")  # the VPC CNI's egress-v4 range
PREFIX_LEN = 80


class Ipv6SetupError(Exception):
    """The node's /80 could not be had (EC2 refused, or answered something else than one /80)."""


@dataclass
class _Held:
    assignment: Assignment
    assigned_at: float


class Ipv6Allocator:
    """Allocator (vpcnet.ipam.types) of IPv6 pod addresses from the primary ENI's /80."""

    def __init__(
        self,
        *,
        ec2: Ec2Api,
        node: NodeInfo,
        checkpoint: Checkpoint,
        pods: PodExistence,
        imds_prefixes: Callable[[], Awaitable[list[IPv6Network]]],
        egress_cidr: IPv4Network = EGRESS_V4_CIDR,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ec2 = ec2
        self.node = node
        self.checkpoint = checkpoint
        self.pods = pods
        self.imds_prefixes = imds_prefixes
        self.egress_cidr = egress_cidr
        self.wall = wall_clock
        self.prefix: IPv6Network | None = None
        self.assigned_prefix = False  # whether start() asked EC2 for the prefix (False: IMDS had it)
        self._held: dict[IpamKey, _Held] = {}
        self._by_address: dict[PodAddress, IpamKey] = {}
        self._cursor = 1  # offset in the prefix of the next address to try (the prefix's first is skipped)

    # ------------------------------------------------------------------ lifecycle

    def ready(self) -> bool:
        return self.prefix is not None

    async def start(self) -> None:
        prefixes = [p for p in await self.imds_prefixes() if p.prefixlen == PREFIX_LEN]
        if not prefixes:
            _, assigned = await self.ec2.assign_ipv6(self.node.primary_eni_id, prefix_count=1)
            prefixes = [p for p in assigned if p.prefixlen == PREFIX_LEN]
            if not prefixes:
                raise Ipv6SetupError(
                    f"AssignIpv6Addresses(Ipv6PrefixCount=1) on {self.node.primary_eni_id} gave no /80: "
                    f"{[str(p) for p in assigned]}"
                )
            self.assigned_prefix = True
            log.info("assigned the node's IPv6 prefix", extra={"prefix": str(prefixes[0])})
        prefix = prefixes[0]
        await self._restore(prefix)
        self.prefix = prefix

    async def stop(self) -> None:
        """Nothing runs in the background; the prefix stays on the ENI (pods keep their addresses)."""

    async def _restore(self, prefix: IPv6Network) -> None:
        data = self.checkpoint.load()
        kept: list[Allocation] = []
        for a in data.allocations if data is not None else []:
            if not isinstance(a.address, IPv6Address) or a.address not in prefix:
                log.warning(
                    "checkpointed address is not in the node's /80; dropped", extra={"ip": str(a.address)}
                )
                continue
            if not await self.pods.exists(a.key, a.pod_namespace, a.pod_name):
                log.info("checkpointed pod is gone; address released", extra={"ip": str(a.address)})
                continue
            egress = a.egress_v4 if a.egress_v4 is not None and a.egress_v4 in self.egress_cidr else None
            if egress is None or egress in self._by_address:
                egress = self._free_egress()
            self._hold(
                a.key, self._assignment(a.address, prefix, a.pod_namespace, a.pod_name, egress), a.assigned_at
            )
            kept.append(a)
        if kept:
            self._cursor = max(int(a.address) - int(prefix.network_address) for a in kept) + 1
        self._save()

    # ------------------------------------------------------------------ Allocator

    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        prefix = self._prefix()
        held = self._held.get(key)
        if held is not None:
            return held.assignment
        address = self._next_address(prefix)
        egress = self._free_egress()
        assignment = self._assignment(address, prefix, pod_namespace, pod_name, egress)
        self._hold(key, assignment, self.wall())
        try:
            self._save()
        except BaseException:
            self._drop(key)  # the checkpoint says what is held: an unrecorded assignment is not made
            raise
        self._cursor = int(address) - int(prefix.network_address) + 1
        return assignment

    async def release(self, key: IpamKey) -> Assignment | None:
        held = self._held.get(key)
        if held is None:
            return None
        self._drop(key)
        try:
            self._save()
        except BaseException:
            self._hold(key, held.assignment, held.assigned_at)
            raise
        return held.assignment

    async def lookup(self, key: IpamKey) -> Assignment | None:
        held = self._held.get(key)
        return held.assignment if held is not None else None

    async def holds(self, address: PodAddress) -> bool:
        return address in self._by_address

    # ------------------------------------------------------------------ what the agent reads

    def egress_v4_of(self, address: PodAddress) -> IPv4Address | None:
        """The node-local IPv4 of the pod that holds IPv6 address (the policy's IPv4 plane: the only
        source that pod may use over IPv4); None when no pod here holds it."""
        key = self._by_address.get(address)
        held = self._held.get(key) if key is not None and address.version == 6 else None
        return held.assignment.egress_v4 if held is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "ipv6Prefix": str(self.prefix) if self.prefix is not None else None,
            "eniID": self.node.primary_eni_id,
            "egressV4Cidr": str(self.egress_cidr),
            "assignedIPs": len(self._held),
            "assignments": [
                {
                    "ipv6": str(h.assignment.address),
                    "egressIPv4": str(h.assignment.egress_v4),
                    "pod": f"{h.assignment.pod_namespace}/{h.assignment.pod_name}",
                }
                for h in sorted(self._held.values(), key=lambda h: int(h.assignment.address))
            ],
        }

    # ------------------------------------------------------------------ inside

    def _prefix(self) -> IPv6Network:
        if self.prefix is None:
            raise AddressManagerNotReady("the node's IPv6 /80 prefix is not known yet")
        return self.prefix

    def _assignment(
        self, address: IPv6Address, prefix: IPv6Network, ns: str, pod: str, egress: IPv4Address
    ) -> Assignment:
        return Assignment(
            address=address,
            device_number=0,
            route_table=MAIN_ROUTE_TABLE,
            eni_id=self.node.primary_eni_id,
            subnet=prefix,
            pod_namespace=ns,
            pod_name=pod,
            egress_v4=egress,
        )

    def _hold(self, key: IpamKey, assignment: Assignment, at: float) -> None:
        self._held[key] = _Held(assignment, at)
        self._by_address[assignment.address] = key
        if assignment.egress_v4 is not None:
            self._by_address[assignment.egress_v4] = key

    def _drop(self, key: IpamKey) -> None:
        held = self._held.pop(key)
        self._by_address.pop(held.assignment.address, None)
        if held.assignment.egress_v4 is not None:
            self._by_address.pop(held.assignment.egress_v4, None)

    def _next_address(self, prefix: IPv6Network) -> IPv6Address:
        size = prefix.num_addresses
        base = int(prefix.network_address)
        offset = self._cursor
        for _ in range(len(self._held) + 2):  # at most that many taken in a row
            if not 1 <= offset < size:
                offset = 1
            address = IPv6Address(base + offset)
            if address not in self._by_address:
                return address
            offset += 1
        raise AddressExhausted(f"no free address in {prefix}")  # pragma: no cover (2^48 addresses)

    def _free_egress(self) -> IPv4Address:
        for address in self.egress_cidr.hosts():
            if address not in self._by_address:
                return address
        raise AddressExhausted(
            f"all {self.egress_cidr.num_addresses - 2} node-local IPv4 addresses of {self.egress_cidr} "
            "(IPv4 egress of IPv6 pods) are taken"
        )

    def _save(self) -> None:
        self.checkpoint.save(
            CheckpointData(
                instance_id=self.node.instance_id,
                allocations=[
                    Allocation(
                        key=key,
                        address=h.assignment.address,
                        eni_id=h.assignment.eni_id,
                        pod_namespace=h.assignment.pod_namespace,
                        pod_name=h.assignment.pod_name,
                        assigned_at=h.assigned_at,
                        egress_v4=h.assignment.egress_v4,
                    )
                    for key, h in sorted(self._held.items())
                ],
            )
        )
