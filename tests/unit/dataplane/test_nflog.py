"""NFLOG messages as the kernel sends them (built here byte by byte) and the config requests we send."""

from __future__ import annotations

import socket
import struct

import pytest

from vpcnet.dataplane import nflog


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, total: int = 60) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return header + struct.pack("!HHII", sport, dport, 0, 0)


def packet_message(prefix: str, payload: bytes, indev: int = 0, outdev: int = 7, group: int = 20) -> bytes:
    body = struct.pack("=BB", socket.AF_INET, 0) + struct.pack("!H", group)
    body += attr(nflog.NFULA_PACKET_HDR, struct.pack("!HBB", 0x0800, 3, 0))
    if indev:
        body += attr(nflog.NFULA_IFINDEX_INDEV | 0x4000, struct.pack("!I", indev))
    body += attr(nflog.NFULA_IFINDEX_OUTDEV, struct.pack("!I", outdev))
    body += attr(nflog.NFULA_PREFIX, prefix.encode() + b"\0")
    body += attr(nflog.NFULA_PAYLOAD, payload)
    msg_type = (nflog.NFNL_SUBSYS_ULOG << 8) | nflog.NFULNL_MSG_PACKET
    raw = struct.pack("=IHHII", 16 + len(body), msg_type, 0, 0, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def test_a_batch_of_packets_parses_with_prefix_tuple_and_interfaces() -> None:
    data = packet_message("Di0 vpcn-pi-x", ipv4_tcp("10.0.0.2", "10.0.0.3", 40000, 80), indev=5)
    data += packet_message("Te default", ipv4_tcp("10.0.0.3", "10.0.0.9", 40001, 443, total=1500))
    data += struct.pack("=IHHII", 20, nflog.NLMSG_DONE, 0, 0, 0) + b"\0" * 4
    first, second = nflog.parse_packets(data)
    assert first == nflog.LoggedPacket(
        "Di0 vpcn-pi-x", "10.0.0.2", "10.0.0.3", 6, 40000, 80, None, None, 60, 5, 7
    )
    assert (second.prefix, second.dst_port, second.length) == ("Te default", 443, 1500)


def test_icmp_and_udp_and_ipv6() -> None:
    icmp = bytearray(ipv4_tcp("10.0.0.2", "10.0.0.3", 0, 0))
    icmp[9] = 1
    icmp[20:22] = bytes([8, 0])
    assert nflog.parse_ip(bytes(icmp))[2:7] == (1, None, None, 8, 0)  # type: ignore[index]
    udp = bytearray(ipv4_tcp("10.0.0.2", "10.0.0.3", 5353, 53))
    udp[9] = 17
    assert nflog.parse_ip(bytes(udp))[3:5] == (5353, 53)  # type: ignore[index]
    v6 = (
        bytes([0x60, 0, 0, 0]) + struct.pack("!HBB", 8, 17, 64) + socket.inet_pton(socket.AF_INET6, "fd00::1")
    )
    v6 += socket.inet_pton(socket.AF_INET6, "fd00::2") + struct.pack("!HHHH", 1000, 2000, 8, 0)
    assert nflog.parse_ip(v6) == ("fd00::1", "fd00::2", 17, 1000, 2000, None, None, 48)


def test_a_fragment_has_no_ports_and_junk_is_not_a_packet() -> None:
    frag = bytearray(ipv4_tcp("10.0.0.2", "10.0.0.3", 1, 2))
    frag[6:8] = struct.pack("!H", 100)
    assert nflog.parse_ip(bytes(frag))[3:5] == (None, None)  # type: ignore[index]
    assert nflog.parse_ip(b"\x00" * 40) is None
    assert list(nflog.parse_packets(packet_message("x", b"short"))) == []


def test_truncated_messages_are_errors_not_crashes() -> None:
    data = packet_message("Di0 x", ipv4_tcp("10.0.0.2", "10.0.0.3", 1, 2))
    with pytest.raises(nflog.NflogError):
        list(nflog.parse_packets(data[:-8] + struct.pack("=HH", 200, nflog.NFULA_PAYLOAD)))
    bad_len = struct.pack("=I", 9999) + data[4:]
    with pytest.raises(nflog.NflogError):
        list(nflog.parse_packets(bad_len))


def test_config_requests_bind_the_group_in_network_order() -> None:
    bind, mode, *_ = nflog.bind_messages(513, 128)
    length, msg_type, flags, _seq, _ = struct.unpack_from("=IHHII", bind)
    assert length == len(bind) and msg_type == (4 << 8) | 1 and flags == nflog.NLM_F_REQUEST | nflog.NLM_F_ACK
    assert struct.unpack_from("!H", bind, 18)[0] == 513
    assert nflog.attributes(bind[16:], 4) == {nflog.NFULA_CFG_CMD: bytes([nflog.NFULNL_CFG_CMD_BIND])}
    assert nflog.attributes(mode[16:], 4)[nflog.NFULA_CFG_MODE] == struct.pack("!IBB", 128, 2, 0)
    assert nflog.error_code(struct.pack("=i", -16) + bind[:16]) == -16
