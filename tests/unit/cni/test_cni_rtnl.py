"""The hand-encoded rtnetlink messages, decoded by pyroute2 (an independent implementation)."""

from __future__ import annotations

import re
import socket
import struct
from ipaddress import IPv4Address
from typing import Any

import pytest
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vpcnet.dataplane import rtnl
from vpcnet.dataplane.family import IpFamily


def decode(cls: type, message: rtnl.Message) -> Any:
    header = struct.pack("IHHII", 16 + len(message.body), message.kind, 1 | 4 | message.flags, 1, 0)
    msg = cls(header + message.body)
    msg.decode()
    return msg


def test_veth_with_peer_in_another_namespace() -> None:
    m = rtnl.new_veth("eni68caf03a5f4", "02:00:00:00:00:01", "eth0", "02:00:00:00:00:02", 7, 9001)
    msg = decode(ifinfmsg, m)
    assert msg.get_attr("IFLA_IFNAME") == "eni68caf03a5f4"
    assert msg.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:01"
    assert msg.get_attr("IFLA_MTU") == 9001
    assert msg["flags"] & 1 and msg["change"] & 1
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0"
    assert peer.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:02"
    assert peer.get_attr("IFLA_NET_NS_FD") == 7
    assert m.flags & rtnl.F_CREATE and m.flags & rtnl.F_EXCL and m.flags & rtnl.F_ECHO


def test_pod_side_messages() -> None:
    addr = decode(ifaddrmsg, rtnl.add_address(2, IPv4Address("10.0.1.10")))
    assert (addr["index"], addr["prefixlen"], addr.get_attr("IFA_LOCAL")) == (2, 32, "10.0.1.10")
    link_route = decode(rtmsg, rtnl.replace_route("169.254.1.1", 32, 2))
    assert link_route["scope"] == 253 and link_route["dst_len"] == 32
    assert link_route.get_attr("RTA_DST") == "169.254.1.1" and link_route.get_attr("RTA_OIF") == 2
    default = decode(rtmsg, rtnl.replace_route(None, 0, 2, gateway="169.254.1.1"))
    assert default["dst_len"] == 0 and default.get_attr("RTA_GATEWAY") == "169.254.1.1"
    assert default.get_attr("RTA_TABLE") == 254
    neigh = decode(ndmsg, rtnl.permanent_neighbour(2, "169.254.1.1", "02:00:00:00:00:01"))
    assert neigh["state"] == 0x80 and neigh["ifindex"] == 2
    assert neigh.get_attr("NDA_LLADDR") == "02:00:00:00:00:01"


def test_rules() -> None:
    to_pod = decode(fibmsg, rtnl.add_rule(512, 254, dst="10.0.1.10"))
    assert to_pod.get_attr("FRA_DST") == "10.0.1.10" and to_pod["dst_len"] == 32
    assert to_pod.get_attr("FRA_PRIORITY") == 512 and to_pod.get_attr("FRA_TABLE") == 254
    from_pod = decode(fibmsg, rtnl.add_rule(1536, 2, src="10.0.2.10"))
    assert from_pod.get_attr("FRA_SRC") == "10.0.2.10" and from_pod["src_len"] == 32
    assert from_pod["action"] == 1 and from_pod.get_attr("FRA_TABLE") == 2
    any_table = decode(fibmsg, rtnl.delete_rule(1536, 0, src="10.0.2.10"))
    assert any_table.get_attr("FRA_TABLE") is None and any_table["table"] == 0


def test_ipv6_messages_carry_16_byte_addresses() -> None:
    v6 = IpFamily.V6
    addr = decode(ifaddrmsg, rtnl.add_address(2, "fd00:1::a", family=v6))
    assert addr["family"] == socket.AF_INET6 and addr["prefixlen"] == 128
    assert addr.get_attr("IFA_LOCAL") == "fd00:1::a"
    route = decode(rtmsg, rtnl.replace_route("fd00:1::a", 128, 3, family=v6))
    assert route["family"] == socket.AF_INET6 and route.get_attr("RTA_DST") == "fd00:1::a"
    default = decode(rtmsg, rtnl.replace_route(None, 0, 2, gateway="fe80::1", family=v6))
    assert default.get_attr("RTA_GATEWAY") == "fe80::1"
    gone = decode(rtmsg, rtnl.delete_route("fd00:1::a", 128, 3, family=v6))
    assert gone["family"] == socket.AF_INET6 and gone.get_attr("RTA_OIF") == 3
    neigh = decode(ndmsg, rtnl.permanent_neighbour(2, "fe80::1", "02:00:00:00:00:01", family=v6))
    assert neigh["family"] == socket.AF_INET6 and neigh.get_attr("NDA_DST") == "fe80::1"
    rule = decode(fibmsg, rtnl.add_rule(1536, 2, src="fd00:2::a", family=v6))
    assert rule["family"] == socket.AF_INET6 and rule["src_len"] == 128
    assert rule.get_attr("FRA_SRC") == "fd00:2::a"
    to_pod = decode(fibmsg, rtnl.delete_rule(512, 254, dst="fd00:2::a", family=v6))
    assert to_pod["dst_len"] == 128 and to_pod.get_attr("FRA_DST") == "fd00:2::a"


def test_an_address_of_the_other_family_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("address fd00::1 is not an IPv4 address")):
        rtnl.add_rule(512, 254, dst="fd00::1")
    with pytest.raises(ValueError, match=re.escape("address 10.0.0.1 is not an IPv6 address")):
        rtnl.replace_route("10.0.0.1", 128, 2, family=IpFamily.V6)
    assert decode(ifaddrmsg, rtnl.add_address(2, IPv4Address("10.0.1.10")))["family"] == socket.AF_INET
