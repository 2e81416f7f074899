"""The allocation interface between the CNI server and an address manager (VPC warm pool or Calico pool)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

MAIN_ROUTE_TABLE = 254

# A pod's address: IPv4 (the default), or IPv6 in the VPC CNI's IPv6 mode (ENABLE_IPv6).
PodAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, order=True)
class IpamKey:
    """What identifies one pod interface, as in the VPC CNI: (network name, container ID, interface name)."""

    network: str
    container_id: str
    ifname: str


@dataclass(frozen=True)
class Assignment:
    address: PodAddress
    # 0 for the primary ENI; the ENI's device index otherwise (-1 where ENIs do not apply: Calico pools).
    device_number: int
    # Route table for egress from this address: 254 (main) on the primary ENI, device index + 1 otherwise.
    route_table: int
    eni_id: str  # empty in Calico mode
    subnet: IPv4Network | IPv6Network  # the subnet (or block, or /80 prefix) the address came from
    pod_namespace: str
    pod_name: str
    # An IPv6 pod's node-local IPv4 (169.254.172.0/22), SNATed to the node's IPv4 on the way out, as the
    # VPC CNI's egress-v4 plugin gives it; None for IPv4 pods.
    egress_v4: IPv4Address | None = None
    # A dual-stack pod's IPv6 address (Calico mode, both families on): `address` is then its IPv4 one.
    address6: IPv6Address | None = None

    @property
    def addresses(self) -> tuple[PodAddress, ...]:
        """The pod's own addresses: its primary, then (dual stack) its IPv6 one."""
        return (self.address,) if self.address6 is None else (self.address, self.address6)


class AddressExhausted(Exception):
    """No address can be had now; the message names the limit that was reached."""


class AddressWaitTimedOut(AddressExhausted):
    """No hard limit was reached, but no address came within the assignment wait (EC2 slow or throttled):
    a runtime should try again later, not give the pod up."""


class AddressManagerNotReady(Exception):
    """The manager is starting (no pool yet); the caller should try again later."""


class Allocator(Protocol):
    async def assign(self, key: IpamKey, pod_namespace: str, pod_name: str) -> Assignment:
        """Assign an address to key; the same key gets the same answer again (idempotent)."""
        ...

    async def release(self, key: IpamKey) -> Assignment | None:
        """Release key's address; None when key holds nothing (idempotent)."""
        ...

    async def lookup(self, key: IpamKey) -> Assignment | None: ...

    async def holds(self, address: PodAddress) -> bool:
        """Whether some key holds address (the CNI's DEL for an unknown key leaves such an address's
        wiring alone, whatever prevResult says)."""
        ...

    def ready(self) -> bool: ...
