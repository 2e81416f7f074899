"""The IP address family of everything on the data-plane path: one home for what differs between IPv4 and v6.

Renderers, appliers and the netlink packer take an IpFamily instead of spelling "iptables-restore",
"family inet", "ip saddr" or AF_INET themselves, so an IPv6 data plane is the same code with the other value.
"""

from __future__ import annotations

import enum
import ipaddress
import socket


class IpFamily(enum.IntEnum):
    V4 = 4
    V6 = 6

    @property
    def af(self) -> int:
        """The socket / netlink address family constant."""
        return socket.AF_INET if self is IpFamily.V4 else socket.AF_INET6

    @property
    def address_bytes(self) -> int:
        return 4 if self is IpFamily.V4 else 16

    @property
    def host_prefixlen(self) -> int:
        """The prefix length of one address (/32 or /128)."""
        return 8 * self.address_bytes

    @property
    def iptables_restore(self) -> str:
        return "iptables-restore" if self is IpFamily.V4 else "ip6tables-restore"

    @property
    def iptables_save(self) -> str:
        return "iptables-save" if self is IpFamily.V4 else "ip6tables-save"

    @property
    def ipset_family(self) -> str:
        """ipset's `family` option of a set."""
        return "inet" if self is IpFamily.V4 else "inet6"

    @property
    def nft_table_family(self) -> str:
        """The nftables table family our table lives in (one table per family, like iptables/ip6tables)."""
        return "ip" if self is IpFamily.V4 else "ip6"

    @property
    def nft_address_match(self) -> str:
        """The nftables payload keyword for the network header ("ip saddr" / "ip6 saddr")."""
        return "ip" if self is IpFamily.V4 else "ip6"

    @property
    def nft_address_type(self) -> str:
        return "ipv4_addr" if self is IpFamily.V4 else "ipv6_addr"

    @property
    def icmp_protocol(self) -> str:
        """The protocol name of this family's ICMP (a rule's "icmp" means ICMPv6 in an IPv6 table)."""
        return "icmp" if self is IpFamily.V4 else "ipv6-icmp"

    def address(self, text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """text as an address of this family; a ValueError naming it and the family otherwise."""
        try:
            parsed = ipaddress.ip_address(text)  # type: ignore[arg-type]
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address") from None
        if parsed.version != self.value:
            raise ValueError(f"address {text} is not an IPv{self.value} address")
        return parsed

    def network(self, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """text as a network of this family (host bits allowed); a ValueError naming it otherwise."""
        try:
            parsed = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP network") from None
        if parsed.version != self.value:
            raise ValueError(f"network {text} is not an IPv{self.value} network")
        return parsed

    def packed(self, text: object) -> bytes:
        """The address in network byte order: 4 or 16 bytes."""
        return self.address(text).packed
