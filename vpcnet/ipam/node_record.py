"""A live node's record in the Calico-mode IPAM (pure; no I/O): what other nodes need to route to it.

Written by the node itself (poolnodes, bound to its lease), read by the pool store, and consumed by the
route renderer (dataplane/poolroutes), which therefore needs only this type and not the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network


@dataclass(frozen=True)
class NodeRecord:
    """A live node as the other nodes route to it."""

    name: str
    address: IPv4Address  # the node's primary address (the underlay next hop)
    subnet: IPv4Network  # its subnet: a peer inside it is reached directly in CrossSubnet mode
    vtep_mac: str = ""  # the MAC of its VXLAN device
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # A dual-stack node (an IPv6 subnet): its IPv6 address, /64 and IPv6 VXLAN device's MAC (Calico's
    # Node.spec.bgp.ipv6Address and ipv6VXLANTunnelMACAddr); None/"" on an IPv4-only node.
    address6: IPv6Address | None = None
    subnet6: IPv6Network | None = None
    vtep_mac6: str = ""
    uplink_mac: str = ""  # its primary ENI's MAC: the IPv6 next hop's link address within a subnet

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "address": str(self.address),
                "subnet": str(self.subnet),
                "vtep_mac": self.vtep_mac,
                "zone": self.zone,
                "labels": self.labels,
                **(
                    {
                        "address6": str(self.address6),
                        "subnet6": str(self.subnet6),
                        "vtep_mac6": self.vtep_mac6,
                        "uplink_mac": self.uplink_mac,
                    }
                    if self.address6 is not None and self.subnet6 is not None
                    else {}
                ),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, name: str, raw: bytes) -> NodeRecord:
        """The record of node `name` (its name is the key, not part of the value)."""
        data = json.loads(raw)
        return cls(
            name=name,
            address=IPv4Address(data["address"]),
            subnet=IPv4Network(data["subnet"]),
            vtep_mac=str(data.get("vtep_mac", "")),
            zone=str(data.get("zone", "")),
            labels={str(k): str(v) for k, v in dict(data.get("labels", {})).items()},
            address6=IPv6Address(data["address6"]) if data.get("address6") else None,
            subnet6=IPv6Network(data["subnet6"]) if data.get("subnet6") else None,
            vtep_mac6=str(data.get("vtep_mac6", "")),
            uplink_mac=str(data.get("uplink_mac", "")),
        )
