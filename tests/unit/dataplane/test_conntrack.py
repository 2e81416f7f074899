"""Ctnetlink messages parsed from bytes built here the way the kernel lays them out (nested attributes,
numbers in network byte order)."""

from __future__ import annotations

import socket
import struct

import pytest

from vpcnet.dataplane import conntrack as ct

NESTED = 0x8000


def attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind | (NESTED if nested else 0))
    return (head + payload).ljust((4 + len(payload) + 3) & ~3, b"\0")


def tuple_attr(kind: int, src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    ip = attr(ct.CTA_IP_V4_SRC, socket.inet_aton(src)) + attr(ct.CTA_IP_V4_DST, socket.inet_aton(dst))
    if proto == 1:
        l4 = attr(ct.CTA_PROTO_NUM, bytes([1])) + attr(ct.CTA_PROTO_ICMP_ID, struct.pack("!H", sport))
        l4 += attr(ct.CTA_PROTO_ICMP_TYPE, bytes([dport])) + attr(ct.CTA_PROTO_ICMP_CODE, b"\0")
    else:
        l4 = attr(ct.CTA_PROTO_NUM, bytes([proto]))
        l4 += attr(ct.CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
        l4 += attr(ct.CTA_PROTO_DST_PORT, struct.pack("!H", dport))
    inner = attr(ct.CTA_TUPLE_IP, ip, nested=True) + attr(ct.CTA_TUPLE_PROTO, l4, nested=True)
    return attr(kind, inner, nested=True)


def counter_attr(kind: int, packets: int, size: int) -> bytes:
    body = attr(ct.CTA_COUNTERS_PACKETS, struct.pack("!Q", packets))
    body += attr(ct.CTA_COUNTERS_BYTES, struct.pack("!Q", size))
    return attr(kind, body, nested=True)


def message(payload_attrs: bytes, msg_type: int = ct.IPCTNL_MSG_CT_NEW) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + payload_attrs
    kind = (ct.NFNL_SUBSYS_CTNETLINK << 8) | msg_type
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def done() -> bytes:
    return struct.pack("=IHHII", 20, ct.NLMSG_DONE, 2, 1, 0) + b"\0\0\0\0"


def tcp_entry(counted: bool = True, msg_type: int = ct.IPCTNL_MSG_CT_NEW) -> bytes:
    attrs = tuple_attr(ct.CTA_TUPLE_ORIG, "10.0.0.2", "172.20.0.10", 6, 40000, 80)
    attrs += tuple_attr(ct.CTA_TUPLE_REPLY, "10.0.0.3", "10.0.0.2", 6, 8080, 40000)  # after DNAT
    if counted:
        attrs += counter_attr(ct.CTA_COUNTERS_ORIG, 12, 300_624)
        attrs += counter_attr(ct.CTA_COUNTERS_REPLY, 9, 70_468)
    attrs += attr(ct.CTA_ID, struct.pack("!I", 0xDEADBEEF))
    attrs += attr(ct.CTA_STATUS, struct.pack("!I", 14))
    return message(attrs, msg_type)


def test_a_dump_yields_entries_then_the_end() -> None:
    items = list(ct.parse_messages(tcp_entry() + tcp_entry(counted=False) + done()))
    assert items[-1] == 0
    conn = items[0]
    assert isinstance(conn, ct.Connection)
    assert conn.orig == ct.Tuple("10.0.0.2", "172.20.0.10", 6, 40000, 80)
    assert conn.reply == ct.Tuple("10.0.0.3", "10.0.0.2", 6, 8080, 40000)
    assert conn.orig_counter == ct.Counter(12, 300_624) and conn.reply_counter == ct.Counter(9, 70_468)
    assert (conn.id, conn.status, conn.destroyed, conn.counted) == (0xDEADBEEF, 14, False, True)
    uncounted = items[1]
    assert isinstance(uncounted, ct.Connection) and not uncounted.counted and uncounted.reply_counter is None


def test_a_destroy_event_is_marked_final() -> None:
    (conn,) = ct.parse_messages(tcp_entry(msg_type=ct.IPCTNL_MSG_CT_DELETE))
    assert isinstance(conn, ct.Connection) and conn.destroyed


def test_icmp_and_ipv6_tuples() -> None:
    attrs = tuple_attr(ct.CTA_TUPLE_ORIG, "10.0.0.2", "10.0.0.3", 1, 77, 8)
    (conn,) = ct.parse_messages(message(attrs))
    assert isinstance(conn, ct.Connection)
    assert (conn.orig.icmp_type, conn.orig.icmp_code, conn.orig.icmp_id, conn.orig.src_port) == (
        8,
        0,
        77,
        None,
    )
    ip = attr(ct.CTA_IP_V6_SRC, socket.inet_pton(socket.AF_INET6, "fd00::2"))
    ip += attr(ct.CTA_IP_V6_DST, socket.inet_pton(socket.AF_INET6, "fd00::3"))
    l4 = attr(ct.CTA_PROTO_NUM, bytes([17])) + attr(ct.CTA_PROTO_SRC_PORT, struct.pack("!H", 5353))
    inner = attr(ct.CTA_TUPLE_IP, ip, True) + attr(ct.CTA_TUPLE_PROTO, l4, True)
    (v6,) = ct.parse_messages(message(attr(ct.CTA_TUPLE_ORIG, inner, True)))
    assert isinstance(v6, ct.Connection) and (v6.orig.src, v6.orig.dst, v6.orig.src_port) == (
        "fd00::2",
        "fd00::3",
        5353,
    )


def test_an_error_ends_a_dump_with_its_errno() -> None:
    error = struct.pack("=IHHII", 36, ct.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    assert list(ct.parse_messages(error)) == [-1]


@pytest.mark.parametrize(
    "payload",
    [
        b"\x02\x00",  # shorter than its nfgenmsg
        struct.pack("=BBH", 2, 0, 0) + attr(ct.CTA_STATUS, b"\0\0\0\1"),  # no original tuple
        struct.pack("=BBH", 2, 0, 0) + attr(ct.CTA_TUPLE_ORIG, attr(ct.CTA_TUPLE_IP, b"", True), True),
        struct.pack("=BBH", 2, 0, 0) + struct.pack("=HH", 200, 1),  # an attribute past its message
    ],
)
def test_malformed_messages_raise(payload: bytes) -> None:
    with pytest.raises(ct.ConntrackError):
        ct.parse_connection(payload)


def test_one_bad_entry_does_not_hide_the_others() -> None:
    bad = message(attr(ct.CTA_STATUS, struct.pack("!I", 1)))
    items = list(ct.parse_messages(bad + tcp_entry() + done()))
    assert items[0] is None and isinstance(items[1], ct.Connection) and items[2] == 0
    with pytest.raises(ct.ConntrackError):
        list(ct.parse_messages(struct.pack("=IHHII", 500, 0x100, 0, 1, 0)))


def test_the_dump_request_asks_for_every_family() -> None:
    request = ct.dump_request(7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), 0x101, 0x301, 7)
    assert request[16] == socket.AF_UNSPEC
