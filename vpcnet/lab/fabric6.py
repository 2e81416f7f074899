"""IPv6 in the namespace fabric: what `vpcnet.lab.fabric` adds for a VPC with an IPv6 /56 (pure rendering).

How the VPC answers neighbour discovery, chosen by trying it on this kernel (6.18):
- `neigh_suppress on` on the bridge ports, with permanent neighbour entries on the bridge, does not answer:
  the bridge never answers a solicitation that arrives on a port with suppression on (it is meant for EVPN
  uplinks), and every ENI port is such a port.
- Proxy NDP on the bridge (`proxy_ndp 1`, `proxy_delay 0`, an `ip -6 neigh add proxy` entry per assigned
  address) answers, with the router's MAC: same-subnet IPv6 traffic to an assigned address is routed by
  the VPC router (hop limit - 1), not bridged. The router reaches each address through a permanent neighbour
  entry with the owning ENI's MAC, as for IPv4. Redirects are dropped so the path stays the same.
- Linux proxies exact addresses only, so a /80 prefix cannot be answered for address by address: the router
  routes each /80 to the owning ENI (next hop: the EUI-64 link-local address of the ENI's MAC, pinned by a
  permanent neighbour entry), and a node's IPv6 address is a /128 (as DHCPv6 gives it on EC2) with the
  default route via the router, so nodes never solicit for prefix addresses.
The router is `fe80:ec2::1` on every subnet (the address the VPC CNI uses as the IPv6 gateway) and also
answers at the /64's first address + 1. The internet host is reached through an egress-only internet
gateway: replies and errors come back in, nothing from the internet starts a connection. No NAT in IPv6.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

ROUTER_LINK_LOCAL = "fe80:ec2::1"
INTERNET6_CIDR = "2001:db8:ffff::/64"  # documentation range, like the lab's IPv4 internet (TEST-NET-2)
INTERNET6_ROUTER_ADDRESS = "2001:db8:ffff::1"
INTERNET6_HOST_ADDRESS = "2001:db8:ffff::100"
LINK_LOCAL = "fe80::/10"
MULTICAST = "ff00::/8"


def eui64_link_local(mac: str) -> str:
    """fe80::/64 + the modified EUI-64 of `mac`: the ENI's next hop for its /80 prefixes."""
    b = bytes(int(x, 16) for x in mac.split(":"))
    eui = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def subnet_router(ipv6_cidr: str) -> str:
    """The router's global address in the subnet: base + 1, as for IPv4."""
    return str(ipaddress.IPv6Network(ipv6_cidr).network_address + 1)


def vpc_sysctls() -> list[tuple[str, str]]:
    """The VPC namespace routes IPv6 and answers ND by proxy on every bridge (inherited from default)."""
    return [
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.default.proxy_ndp", "1"),
        ("net.ipv6.conf.all.proxy_ndp", "1"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_ra", "0"),
    ]


def bridge_sysctls(bridge: str) -> list[tuple[str, str]]:
    """Answer ND at once (the default delays proxied answers up to 0.8 s); only per device in a netns."""
    return [(f"net.ipv6.neigh.{bridge}.proxy_delay", "0"), (f"net.ipv6.conf.{bridge}.proxy_ndp", "1")]


def render_vpc_base6(inet_link: str) -> list[str]:
    """`ip -batch` lines for the VPC namespace: the router's side of the IPv6 internet link."""
    inet_len = ipaddress.IPv6Network(INTERNET6_CIDR).prefixlen
    return [
        f"address add {INTERNET6_ROUTER_ADDRESS}/{inet_len} dev {inet_link} nodad",
        f"route add default via {INTERNET6_HOST_ADDRESS} dev {inet_link}",
    ]


def render_internet6(vpc_ipv6_cidr: str) -> list[str]:
    inet_len = ipaddress.IPv6Network(INTERNET6_CIDR).prefixlen
    return [
        f"address add {INTERNET6_HOST_ADDRESS}/{inet_len} dev eth0 nodad",
        f"route add {vpc_ipv6_cidr} via {INTERNET6_ROUTER_ADDRESS} dev eth0",
    ]


def render_egress_only_gateway(table: str, inet_link: str) -> str:
    """An `ip6` table in the VPC namespace: from the internet only what answers a flow from inside."""
    return "\n".join(
        [
            f"table ip6 {table} {{}}",
            f"delete table ip6 {table}",
            f"table ip6 {table} {{",
            "  chain forward {",
            "    type filter hook forward priority filter; policy accept;",
            f'    iifname "{inet_link}" ct state established,related accept',
            f'    iifname "{inet_link}" drop',
            "  }",
            "}",
            "",
        ]
    )


def render_subnet6(bridge: str, ipv6_cidr: str) -> list[str]:
    prefix_len = ipaddress.IPv6Network(ipv6_cidr).prefixlen
    return [
        f"address add {ROUTER_LINK_LOCAL}/64 dev {bridge} nodad",
        f"address add {subnet_router(ipv6_cidr)}/{prefix_len} dev {bridge} nodad",
    ]


def render_eni6(
    bridge: str, mac: str, addresses: Iterable[str], prefixes: Iterable[str], *, remove: bool = False
) -> list[str]:
    """`ip -batch` lines: proxy ND and a permanent neighbour per address, a route per /80 prefix."""
    hop = eui64_link_local(mac)
    lines: list[str] = []
    prefixes = list(prefixes)
    if remove:
        lines += [f"route del {p} dev {bridge}" for p in prefixes]
        for a in addresses:
            lines += [f"neigh del proxy {a} dev {bridge}", f"neigh del {a} dev {bridge}"]
        return lines
    if prefixes:
        lines.append(f"neigh replace {hop} lladdr {mac} dev {bridge} nud permanent")
    for a in addresses:
        lines += [
            f"neigh replace {a} lladdr {mac} dev {bridge} nud permanent",
            f"neigh replace proxy {a} dev {bridge}",
        ]
    lines += [f"route replace {p} via {hop} dev {bridge}" for p in prefixes]
    return lines


def render_hop_removal(bridge: str, mac: str) -> list[str]:
    return [f"neigh del {eui64_link_local(mac)} dev {bridge}"]


def render_primary_config6(ifname: str, address: str) -> list[str]:
    """The node's IPv6 on eth0: a /128 and the default route via the router's link-local address."""
    return [
        f"address add {address}/128 dev {ifname} nodad",
        f"route replace default via {ROUTER_LINK_LOCAL} dev {ifname}",
    ]


def set_name6(port: str) -> str:
    return f"a6_{port}"


def render_sets6(port: str, elements: Sequence[str]) -> list[str]:
    lines = [f"  set {set_name6(port)} {{", "    type ipv6_addr; flags interval; auto-merge;"]
    if elements:
        lines.append(f"    elements = {{ {', '.join(elements)} }}")
    lines.append("  }")
    return lines


def ingress_rule6(port: str) -> str:
    """SourceDestCheck for IPv6: only the ENI's addresses and prefixes, link-local and :: (ND, DAD)."""
    return f'    iifname "{port}" ip6 saddr != @{set_name6(port)} ip6 saddr != {{ ::, {LINK_LOCAL} }} drop'


def delivery_rule6(port: str) -> str:
    """Delivery for IPv6: the ENI's own addresses and prefixes, and link-local/multicast (ND)."""
    own = f"ip6 daddr != @{set_name6(port)}"
    return f'    oifname "{port}" {own} ip6 daddr != {{ {LINK_LOCAL}, {MULTICAST} }} drop'


REDIRECT_DROP = "    icmpv6 type nd-redirect drop"
