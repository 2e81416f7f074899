"""NFLOG over netlink, in bytes (pure): the config requests the agent sends, the packets the kernel sends.

pyroute2 has no nfnetlink_log support, and the format is small: a netlink message of subsystem ULOG
(NFNL_SUBSYS_ULOG) carries an nfgenmsg and attributes (linux/netfilter/nfnetlink_log.h): the packet header,
the in/out interface indexes, the rule's prefix and the first bytes of the packet (its IP header and
ports are all a flow log needs).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

# Packet attributes
NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
# Config attributes and commands
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # res_id is big-endian: packed by hand
_NLATTR = struct.Struct("=HH")
_ATTR_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp", 58: "icmpv6"}
_PORT_PROTOCOLS = (6, 17, 132, 136)


class NflogError(ValueError):
    """A message that does not parse (truncated, or an attribute running past its message)."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    head = _NLATTR.pack(_NLATTR.size + len(payload), kind)
    return (head + payload).ljust(_align(_NLATTR.size + len(payload)), b"\0")


def config_message(group: int, seq: int, attrs: list[tuple[int, bytes]], family: int = 0) -> bytes:
    body = _NFGENMSG.pack(family, 0, 0)[:2] + struct.pack("!H", group)
    body += b"".join(_attr(kind, payload) for kind, payload in attrs)
    msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_messages(group: int, snaplen: int, *, batch: int = 32, flush_centis: int = 5) -> list[bytes]:
    """Bind the socket to group, copying snaplen bytes of each packet; the kernel batches up to batch
    packets or flush_centis hundredths of a second per message (fewer wake-ups under load)."""
    return [
        config_message(group, 1, [(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND]))]),
        config_message(group, 2, [(NFULA_CFG_MODE, struct.pack("!IBB", snaplen, NFULNL_COPY_PACKET, 0))]),
        config_message(group, 3, [(NFULA_CFG_QTHRESH, struct.pack("!I", batch))]),
        config_message(group, 4, [(NFULA_CFG_TIMEOUT, struct.pack("!I", flush_centis))]),
    ]


def unbind_message(group: int) -> bytes:
    return config_message(group, 5, [(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND]))])


@dataclass(frozen=True)
class LoggedPacket:
    """One packet the kernel logged: the verdict point's prefix and the packet's 5-tuple."""

    prefix: str
    src: str
    dst: str
    protocol: int
    src_port: int | None  # TCP/UDP/SCTP/UDP-Lite; None otherwise
    dst_port: int | None
    icmp_type: int | None  # ICMP(v6) type and code; None otherwise
    icmp_code: int | None
    length: int  # the IP packet's length (its header says so, whatever was copied)
    in_ifindex: int = 0
    out_ifindex: int = 0

    @property
    def protocol_name(self) -> str:
        return PROTOCOLS.get(self.protocol, str(self.protocol))


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise NflogError(f"netlink message at byte {offset} has a bad length {length}")
        yield msg_type, flags, data[offset + _NLMSGHDR.size : offset + length]
        offset += _align(length)


def error_code(payload: bytes) -> int:
    """The (negative) errno of an NLMSG_ERROR message; 0 is an acknowledgement."""
    if len(payload) < 4:
        raise NflogError("netlink error message is truncated")
    code: int = struct.unpack_from("=i", payload)[0]
    return code


def attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + _NLATTR.size <= len(payload):
        length, kind = _NLATTR.unpack_from(payload, offset)
        if length < _NLATTR.size or offset + length > len(payload):
            raise NflogError(f"netlink attribute at byte {offset} has a bad length {length}")
        attrs[kind & _ATTR_TYPE_MASK] = payload[offset + _NLATTR.size : offset + length]
        offset += _align(length)
    return attrs


def parse_packets(data: bytes) -> Iterator[LoggedPacket]:
    """The logged packets of one datagram (other messages, and packets that are not IP, are skipped)."""
    packet_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
    for msg_type, _flags, payload in messages(data):
        if msg_type != packet_type:
            continue
        attrs = attributes(payload, _NFGENMSG.size)
        packet = parse_ip(attrs.get(NFULA_PAYLOAD, b""))
        if packet is None:
            continue
        prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace")
        yield LoggedPacket(
            prefix,
            *packet,
            in_ifindex=_u32(attrs.get(NFULA_IFINDEX_INDEV)),
            out_ifindex=_u32(attrs.get(NFULA_IFINDEX_OUTDEV)),
        )


def _u32(raw: bytes | None) -> int:
    return struct.unpack("!I", raw[:4])[0] if raw is not None and len(raw) >= 4 else 0


_Fields = tuple[str, str, int, int | None, int | None, int | None, int | None, int]


def parse_ip(data: bytes) -> _Fields | None:
    """(src, dst, protocol, src port, dst port, icmp type, icmp code, length) of an IPv4/IPv6 packet's
    first bytes; None when they are not an IP packet's header."""
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if version == 4:
        header = (data[0] & 0x0F) * 4
        if header < 20 or len(data) < header:
            return None
        length = struct.unpack_from("!H", data, 2)[0]
        protocol = data[9]
        src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
        fragment_offset = struct.unpack_from("!H", data, 6)[0] & 0x1FFF
        l4 = data[header:] if fragment_offset == 0 else b""
    elif version == 6 and len(data) >= 40:
        length = struct.unpack_from("!H", data, 4)[0] + 40
        protocol = data[6]  # extension headers are not followed: their packets get no ports
        src = str(ipaddress.IPv6Address(data[8:24]))
        dst = str(ipaddress.IPv6Address(data[24:40]))
        l4 = data[40:]
    else:
        return None
    src_port = dst_port = icmp_type = icmp_code = None
    if protocol in _PORT_PROTOCOLS and len(l4) >= 4:
        src_port, dst_port = struct.unpack_from("!HH", l4)
    elif protocol in (1, 58) and len(l4) >= 2:
        icmp_type, icmp_code = l4[0], l4[1]
    return src, dst, protocol, src_port, dst_port, icmp_type, icmp_code, length
