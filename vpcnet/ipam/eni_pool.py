"""The node's address inventory: ENIs, their addresses (secondary IPs or /28 prefixes), who holds each.

Pure bookkeeping, no I/O. Times are the caller's clock (seconds). An address released by a pod cools
down for `cooldown` seconds before it is handed out again (kube-proxy and peers must forget it first);
while cooling it is neither assigned nor available, and its ENI or prefix cannot be given back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from vpcnet.ipam.types import MAIN_ROUTE_TABLE, Assignment, IpamKey


@dataclass
class Slot:
    address: IPv4Address
    eni_id: str
    prefix: IPv4Network | None  # the /28 it belongs to (prefix delegation), None for a secondary IP
    key: IpamKey | None = None
    pod_namespace: str = ""
    pod_name: str = ""
    assigned_at: float = 0.0
    released_at: float | None = None  # start of cooldown; None = never used


@dataclass
class Eni:
    eni_id: str
    mac: str
    device_index: int
    primary_ip: IPv4Address
    subnet_id: str
    subnet_cidr: IPv4Network
    is_primary: bool
    carries_pods: bool = True  # False for the primary ENI under custom networking
    attachment_id: str = ""
    added_at: float = 0.0
    secondary: set[IPv4Address] = field(default_factory=set)
    prefixes: set[IPv4Network] = field(default_factory=set)

    @property
    def route_table(self) -> int:
        return MAIN_ROUTE_TABLE if self.device_index == 0 else self.device_index + 1

    @property
    def used_slots(self) -> int:
        """Address slots taken on the ENI, its primary address included (EC2's limit counts it)."""
        return 1 + len(self.secondary) + len(self.prefixes)

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet_cidr.network_address + 1


@dataclass(frozen=True)
class PoolStats:
    total: int  # addresses that pods could hold
    assigned: int
    cooling: int
    enis: int
    prefixes: int

    @property
    def available(self) -> int:
        """Addresses a pod can get now (cooling ones do not count: they cannot be handed out)."""
        return self.total - self.assigned - self.cooling

    @property
    def used(self) -> int:
        return self.assigned + self.cooling


class AddressPool:
    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self.enis: dict[str, Eni] = {}
        self.slots: dict[IPv4Address, Slot] = {}
        self.by_key: dict[IpamKey, Slot] = {}

    # --- inventory ---

    def add_eni(self, eni: Eni) -> None:
        if eni.eni_id in self.enis:
            raise ValueError(f"ENI {eni.eni_id} is already in the pool")
        self.enis[eni.eni_id] = eni

    def remove_eni(self, eni_id: str) -> None:
        eni = self.enis.pop(eni_id)
        for a in list(eni.secondary):
            self._drop(a)
        for p in list(eni.prefixes):
            for a in p:
                self._drop(a)

    def add_addresses(self, eni_id: str, addresses: list[IPv4Address]) -> None:
        eni = self.enis[eni_id]
        for a in addresses:
            eni.secondary.add(a)
            self.slots.setdefault(a, Slot(a, eni_id, None))

    def add_prefix(self, eni_id: str, prefix: IPv4Network) -> None:
        eni = self.enis[eni_id]
        eni.prefixes.add(prefix)
        for a in prefix:
            self.slots.setdefault(a, Slot(a, eni_id, prefix))

    def remove_address(self, address: IPv4Address) -> None:
        slot = self.slots[address]
        if slot.key is not None:
            raise ValueError(f"{address} is held by {slot.key}")
        self.enis[slot.eni_id].secondary.discard(address)
        self._drop(address)

    def remove_prefix(self, eni_id: str, prefix: IPv4Network) -> None:
        if any(self.slots[a].key is not None for a in prefix if a in self.slots):
            raise ValueError(f"{prefix} still has assigned addresses")
        self.enis[eni_id].prefixes.discard(prefix)
        for a in prefix:
            self._drop(a)

    def _drop(self, address: IPv4Address) -> None:
        slot = self.slots.pop(address, None)
        if slot is not None and slot.key is not None:
            self.by_key.pop(slot.key, None)

    # --- state of a slot ---

    def cooling(self, slot: Slot, now: float) -> bool:
        return slot.key is None and slot.released_at is not None and now - slot.released_at < self.cooldown

    def free(self, slot: Slot, now: float) -> bool:
        return slot.key is None and not self.cooling(slot, now) and self.enis[slot.eni_id].carries_pods

    def stats(self, now: float) -> PoolStats:
        total = assigned = cooling = 0
        for slot in self.slots.values():
            if not self.enis[slot.eni_id].carries_pods:
                continue
            total += 1
            if slot.key is not None:
                assigned += 1
            elif self.cooling(slot, now):
                cooling += 1
        prefixes = sum(len(e.prefixes) for e in self.enis.values())
        return PoolStats(total, assigned, cooling, len(self.enis), prefixes)

    def next_cooldown_end(self, now: float) -> float | None:
        ends = [
            s.released_at + self.cooldown
            for s in self.slots.values()
            if s.released_at is not None and self.cooling(s, now)
        ]
        return min(ends) if ends else None

    # --- assignment ---

    def assignment(self, slot: Slot) -> Assignment:
        eni = self.enis[slot.eni_id]
        return Assignment(
            address=slot.address,
            device_number=eni.device_index,
            route_table=eni.route_table,
            eni_id=eni.eni_id,
            subnet=eni.subnet_cidr,
            pod_namespace=slot.pod_namespace,
            pod_name=slot.pod_name,
        )

    def pick(self, now: float) -> Slot | None:
        """The free address to hand out next: on the lowest device index first (keeps higher ENIs
        empty, so they can be given back), and among those the one released longest ago."""
        best: Slot | None = None
        best_rank: tuple[int, float, int] | None = None
        for slot in self.slots.values():
            if not self.free(slot, now):
                continue
            rank = (
                self.enis[slot.eni_id].device_index,
                slot.released_at if slot.released_at is not None else float("-inf"),
                int(slot.address),
            )
            if best_rank is None or rank < best_rank:
                best, best_rank = slot, rank
        return best

    def assign(self, slot: Slot, key: IpamKey, pod_namespace: str, pod_name: str, now: float) -> None:
        if key in self.by_key:
            raise ValueError(f"{key} already holds {self.by_key[key].address}")
        if slot.key is not None:
            raise ValueError(f"{slot.address} is already held by {slot.key}")
        slot.key, slot.pod_namespace, slot.pod_name = key, pod_namespace, pod_name
        slot.assigned_at = now
        slot.released_at = None
        self.by_key[key] = slot

    def release(self, key: IpamKey, now: float) -> Slot | None:
        slot = self.by_key.pop(key, None)
        if slot is None:
            return None
        slot.key = None
        slot.released_at = now
        return slot

    def unrelease(
        self, slot: Slot, key: IpamKey, pod_namespace: str, pod_name: str, assigned_at: float
    ) -> None:
        """Undo a release (the checkpoint write failed)."""
        slot.key, slot.pod_namespace, slot.pod_name = key, pod_namespace, pod_name
        slot.assigned_at = assigned_at
        slot.released_at = None
        self.by_key[key] = slot

    # --- what can be given back ---

    def removable_addresses(self, now: float) -> list[IPv4Address]:
        """Secondary IPs neither assigned nor cooling, highest device index first (empties ENIs first)."""
        out = [
            s for s in self.slots.values() if s.prefix is None and s.key is None and not self.cooling(s, now)
        ]
        out.sort(key=lambda s: (-self.enis[s.eni_id].device_index, -int(s.address)))
        return [s.address for s in out]

    def removable_prefixes(self, now: float) -> list[tuple[str, IPv4Network]]:
        out = []
        for eni in self.enis.values():
            for p in eni.prefixes:
                if all(self.slots[a].key is None and not self.cooling(self.slots[a], now) for a in p):
                    out.append((eni.device_index, eni.eni_id, p))
        out.sort(key=lambda t: (-t[0], -int(t[2].network_address)))
        return [(e, p) for _, e, p in out]

    def deletable_enis(self, now: float) -> list[Eni]:
        """Secondary ENIs with nothing assigned or cooling, highest device index first."""
        busy = {s.eni_id for s in self.slots.values() if s.key is not None or self.cooling(s, now)}
        out = [e for e in self.enis.values() if not e.is_primary and e.eni_id not in busy]
        out.sort(key=lambda e: -e.device_index)
        return out

    def addresses_of(self, eni: Eni) -> int:
        return len(eni.secondary) + 16 * len(eni.prefixes)
