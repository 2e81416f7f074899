"""The fabric's IPv6 rendering (pure): next hops, ND proxy entries, /80 routes, nft rules."""

from __future__ import annotations

from vpcnet.lab.fabric import EniWire, SubnetWire, render_nft, render_primary_config, render_subnet
from vpcnet.lab.fabric6 import (
    ROUTER_LINK_LOCAL,
    eui64_link_local,
    render_egress_only_gateway,
    render_eni6,
    subnet_router,
)

SUBNET = SubnetWire("subnet-0aaaaaaaaaaaaaaa1", "10.0.16.0/20", "2001:db8:1f14:8c01::/64")


def _eni(sdc: bool = True) -> EniWire:
    return EniWire(
        eni_id="eni-0aaaaaaaaaaaaaaa1",
        mac="02:00:00:00:00:01",
        subnet=SUBNET,
        node_netns="x-n1",
        device_index=0,
        primary_ip="10.0.16.10",
        addresses=("10.0.16.10",),
        prefixes=(),
        source_dest_check=sdc,
        ipv6_addresses=("2001:db8:1f14:8c01::4",),
        ipv6_prefixes=("2001:db8:1f14:8c01:1::/80",),
    )


def test_eui64_link_local_flips_the_universal_bit() -> None:
    assert eui64_link_local("02:00:00:00:00:01") == "fe80::ff:fe00:1"
    assert eui64_link_local("06:1a:2b:3c:4d:5e") == "fe80::41a:2bff:fe3c:4d5e"


def test_subnet_gets_the_router_addresses() -> None:
    lines = render_subnet(SUBNET)
    assert f"address add {ROUTER_LINK_LOCAL}/64 dev {SUBNET.bridge} nodad" in lines
    assert subnet_router(SUBNET.ipv6_cidr) == "2001:db8:1f14:8c01::1"
    assert render_subnet(SubnetWire("subnet-x", "10.0.0.0/20"))[-1].startswith("link set")  # IPv4 only


def test_eni_entries_and_their_removal() -> None:
    e = _eni()
    lines = render_eni6(SUBNET.bridge, e.mac, e.ipv6_addresses, e.ipv6_prefixes)
    hop = eui64_link_local(e.mac)
    assert f"neigh replace {hop} lladdr {e.mac} dev {SUBNET.bridge} nud permanent" in lines
    assert f"neigh replace proxy 2001:db8:1f14:8c01::4 dev {SUBNET.bridge}" in lines
    assert f"route replace 2001:db8:1f14:8c01:1::/80 via {hop} dev {SUBNET.bridge}" in lines
    gone = render_eni6(SUBNET.bridge, e.mac, e.ipv6_addresses, e.ipv6_prefixes, remove=True)
    assert f"neigh del proxy 2001:db8:1f14:8c01::4 dev {SUBNET.bridge}" in gone
    assert f"route del 2001:db8:1f14:8c01:1::/80 dev {SUBNET.bridge}" in gone
    assert render_primary_config(e)[-1] == f"route replace default via {ROUTER_LINK_LOCAL} dev eth0"


def test_nft_checks_ipv6_sources_and_delivery() -> None:
    on, off = _eni(True), _eni(False)
    text = render_nft("vt01", [on])
    assert "elements = { 2001:db8:1f14:8c01::4, 2001:db8:1f14:8c01:1::/80 }" in text
    assert f'iifname "{on.port}" ip6 saddr != @a6_{on.port} ip6 saddr != {{ ::, fe80::/10 }} drop' in text
    assert text.count(f'oifname "{on.port}" ip6 daddr != @a6_{on.port}') == 2
    assert "icmpv6 type nd-redirect drop" in text
    assert f'iifname "{off.port}"' not in render_nft("vt01", [off])


def test_egress_only_gateway_lets_replies_in_only() -> None:
    text = render_egress_only_gateway("vt01", "inet0")
    assert 'iifname "inet0" ct state established,related accept\n    iifname "inet0" drop' in text
