"""Address actions: Assign/UnassignPrivateIpAddresses (IPv4 addresses and /28 prefixes of an ENI) and
Assign/UnassignIpv6Addresses (IPv6 addresses and /80 prefixes)."""

from __future__ import annotations

from vpcnet.lab.ec2.actions.common import Answer, Handler, Params, required
from vpcnet.lab.ec2.state import Cloud


class AddressActions:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def handlers(self) -> dict[str, Handler]:
        return {
            "AssignPrivateIpAddresses": self.assign_private_ip_addresses,
            "UnassignPrivateIpAddresses": self.unassign_private_ip_addresses,
            "AssignIpv6Addresses": self.assign_ipv6_addresses,
            "UnassignIpv6Addresses": self.unassign_ipv6_addresses,
        }

    def assign_private_ip_addresses(self, p: Params) -> Answer:
        eni_id = required(p, "NetworkInterfaceId")
        addresses, prefixes = self.cloud.assign_private_ip_addresses(
            eni_id,
            secondary_count=p.get("SecondaryPrivateIpAddressCount", 0),
            addresses=p.get("PrivateIpAddresses", []),
            prefix_count=p.get("Ipv4PrefixCount", 0),
            prefixes=p.get("Ipv4Prefixes", []),
            allow_reassignment=bool(p.get("AllowReassignment", False)),
        )
        return {
            "NetworkInterfaceId": eni_id,
            "AssignedPrivateIpAddresses": [{"PrivateIpAddress": a} for a in addresses] or None,
            "AssignedIpv4Prefixes": [{"Ipv4Prefix": x} for x in prefixes] or None,
        }

    def unassign_private_ip_addresses(self, p: Params) -> Answer:
        self.cloud.unassign_private_ip_addresses(
            required(p, "NetworkInterfaceId"),
            addresses=p.get("PrivateIpAddresses", []),
            prefixes=p.get("Ipv4Prefixes", []),
        )
        return {}

    def assign_ipv6_addresses(self, p: Params) -> Answer:
        eni_id = required(p, "NetworkInterfaceId")
        addresses, prefixes = self.cloud.assign_ipv6_addresses(
            eni_id,
            address_count=p.get("Ipv6AddressCount", 0),
            addresses=p.get("Ipv6Addresses", []),
            prefix_count=p.get("Ipv6PrefixCount", 0),
            prefixes=p.get("Ipv6Prefixes", []),
        )
        return {
            "NetworkInterfaceId": eni_id,
            "AssignedIpv6Addresses": addresses or None,
            "AssignedIpv6Prefixes": prefixes or None,
        }

    def unassign_ipv6_addresses(self, p: Params) -> Answer:
        eni_id = required(p, "NetworkInterfaceId")
        addresses, prefixes = self.cloud.unassign_ipv6_addresses(
            eni_id, addresses=p.get("Ipv6Addresses", []), prefixes=p.get("Ipv6Prefixes", [])
        )
        return {
            "NetworkInterfaceId": eni_id,
            "UnassignedIpv6Addresses": addresses or None,
            "UnassignedIpv6Prefixes": prefixes or None,
        }
