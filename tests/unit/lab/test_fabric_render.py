"""The fabric's pure renderers: names within kernel limits, neighbour lines, the nft table."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vpcnet.lab.fabric import (
    EniWire,
    SubnetWire,
    bridge_name,
    port_name,
    render_neighbours,
    render_nft,
    render_port,
    router_mac,
)

SUBNET = SubnetWire("subnet-0123456789abcdef0", "10.0.16.0/20")


def eni(eni_id: str = "eni-0aaaaaaaaaaaaaaa1", sdc: bool = True, device_index: int = 1) -> EniWire:
    return EniWire(
        eni_id=eni_id,
        mac="02:00:00:00:00:01",
        subnet=SUBNET,
        node_netns="vt01-node1",
        device_index=device_index,
        primary_ip="10.0.16.10",
        addresses=("10.0.16.10", "10.0.16.11"),
        prefixes=("10.0.16.32/28",),
        source_dest_check=sdc,
    )


@given(st.text(min_size=1, max_size=40))
def test_names_fit_the_kernel(ident: str) -> None:
    assert len(port_name(ident)) <= 15
    assert len(bridge_name(ident)) <= 15
    assert port_name(ident) != port_name(ident + "x")


def test_router_mac_is_unicast_and_local() -> None:
    mac = router_mac(SUBNET.subnet_id)
    first = int(mac.split(":")[0], 16)
    assert first & 1 == 0 and first & 2 == 2
    assert mac == router_mac(SUBNET.subnet_id)


def test_subnet_gateway() -> None:
    assert SUBNET.gateway == "10.0.16.1"
    assert SUBNET.prefix_len == 20


def test_port_lines_put_the_peer_in_the_node_with_the_mac() -> None:
    ip_lines, bridge_lines = render_port(eni())
    assert "peer name eth1 address 02:00:00:00:00:01 mtu 9001 netns vt01-node1" in ip_lines[0]
    assert any("proxy_arp on" in line and "learning off" in line for line in ip_lines)
    assert bridge_lines == [
        f"fdb replace 02:00:00:00:00:01 dev {port_name('eni-0aaaaaaaaaaaaaaa1')} master static"
    ]


def test_neighbours_cover_prefix_members() -> None:
    e = eni()
    hosts = e.owned_hosts()
    assert len(hosts) == 2 + 16
    assert "10.0.16.47" in hosts and "10.0.16.48" not in hosts
    lines = render_neighbours(e, hosts)
    assert lines[0] == f"neigh replace 10.0.16.10 lladdr 02:00:00:00:00:01 dev {SUBNET.bridge} nud permanent"
    assert render_neighbours(e, ["10.0.16.11"], remove=True) == [f"neigh del 10.0.16.11 dev {SUBNET.bridge}"]


def test_nft_checks_source_only_with_source_dest_check() -> None:
    on, off = eni("eni-on", sdc=True), eni("eni-off", sdc=False)
    text = render_nft("vt01", [on, off])
    assert text.startswith("table bridge vt01 {}\ndelete table bridge vt01\n")
    assert f'iifname "{on.port}" ip saddr != @a_{on.port} drop' in text
    assert f'iifname "{off.port}"' not in text
    # Delivery only to the owner of the destination, unless the check is off (EC2: NAT, Calico routing).
    assert text.count(f'oifname "{on.port}" ip daddr != @a_{on.port} drop') == 2  # bridged and routed
    assert f'oifname "{off.port}"' not in text
    assert "elements = { 10.0.16.10, 10.0.16.11, 10.0.16.32/28 }" in text


def test_nft_without_enis_is_valid_shape() -> None:
    text = render_nft("vt01", [])
    assert "ether type != { ip, arp, ip6 } drop" in text
    assert "set " not in text
