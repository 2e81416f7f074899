"""Conntrack entries over ctnetlink, in bytes (pure): the dump request and the parsed connection.

The kernel's connection tracker knows every connection the node forwards, with per-direction packet and
byte counters when accounting is on (net.netfilter.nf_conntrack_acct=1 when the entry was created; an
entry made before carries no counters). A message of subsystem CTNETLINK (NFNL_SUBSYS_CTNETLINK) carries
an nfgenmsg and nested attributes (linux/netfilter/nfnetlink_conntrack.h): the original tuple (as the
first packet had it), the reply tuple (as the answer comes back: after DNAT its source is the real
destination), the counters of each direction and, with net.netfilter.nf_conntrack_timestamp=1, the
start and stop times. The same message shape comes back for a dump (IPCTNL_MSG_CT_NEW) and in a destroy
event (IPCTNL_MSG_CT_DELETE).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from vpcnet.dataplane.nflog import NflogError, messages

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NFNLGRP_CONNTRACK_DESTROY = 3  # the multicast group of destroy events
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

# enum ctattr_type
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_ID = 12
CTA_TIMESTAMP = 20
# enum ctattr_tuple, ctattr_ip, ctattr_l4proto, ctattr_counters, ctattr_tstamp
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTO_ICMP_TYPE = 5
CTA_PROTO_ICMP_CODE = 6
CTA_PROTO_ICMPV6_ID = 7
CTA_PROTO_ICMPV6_TYPE = 8
CTA_PROTO_ICMPV6_CODE = 9
CTA_COUNTERS_PACKETS = 1
CTA_COUNTERS_BYTES = 2
CTA_COUNTERS32_PACKETS = 3
CTA_COUNTERS32_BYTES = 4
CTA_TIMESTAMP_START = 1
CTA_TIMESTAMP_STOP = 2

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG_SIZE = 4
_ATTR_HEAD = struct.Struct("=HH").unpack_from
_ATTR_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


class ConntrackError(NflogError):
    """A ctnetlink message that does not parse (truncated, or missing its original tuple)."""


@dataclass(frozen=True)
class Tuple:
    """One direction of a connection: addresses, protocol, and ports (ICMP: type, code and id)."""

    src: str
    dst: str
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "src": {"ip": self.src, "port": self.src_port},
            "dst": {"ip": self.dst, "port": self.dst_port},
        }
        if self.icmp_type is not None:
            out["icmp"] = {"type": self.icmp_type, "code": self.icmp_code, "id": self.icmp_id}
        return out


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"packets": self.packets, "bytes": self.bytes}


@dataclass(frozen=True)
class Connection:
    """A conntrack entry. Counters are None when accounting was off as the entry was made."""

    orig: Tuple
    reply: Tuple | None
    orig_counter: Counter | None
    reply_counter: Counter | None
    id: int = 0
    status: int = 0
    start_ns: int | None = None  # CLOCK_REALTIME nanoseconds (nf_conntrack_timestamp)
    stop_ns: int | None = None
    destroyed: bool = False  # from a destroy event: the counters are final

    @property
    def counted(self) -> bool:
        return self.orig_counter is not None


def dump_request(seq: int = 1, family: int = socket.AF_UNSPEC) -> bytes:
    """Ask for every entry of the namespace's table (family AF_UNSPEC: IPv4 and IPv6 alike)."""
    body = struct.pack("=BBH", family, 0, 0)
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_messages(data: bytes) -> Iterator[Connection | int | None]:
    """The connections of one datagram; an int for NLMSG_DONE (0) or NLMSG_ERROR (its negative errno),
    which end a dump; None for a conntrack message that does not parse (the rest still do). Messages of
    other kinds are skipped; a datagram whose framing is broken raises ConntrackError."""
    try:
        parsed = list(messages(data))
    except NflogError as exc:
        raise ConntrackError(str(exc)) from exc
    for msg_type, _flags, payload in parsed:
        if msg_type == NLMSG_DONE:
            yield 0
        elif msg_type == NLMSG_ERROR:
            if len(payload) < 4:
                raise ConntrackError("netlink error message is truncated")
            yield struct.unpack_from("=i", payload)[0]
        elif msg_type >> 8 == NFNL_SUBSYS_CTNETLINK and msg_type & 0xFF in (
            IPCTNL_MSG_CT_NEW,
            IPCTNL_MSG_CT_DELETE,
        ):
            try:
                yield parse_connection(payload, destroyed=msg_type & 0xFF == IPCTNL_MSG_CT_DELETE)
            except ConntrackError:
                yield None


def parse_connection(payload: bytes, destroyed: bool = False) -> Connection:
    """One entry from a message's payload (nfgenmsg, then attributes)."""
    try:
        return _connection(payload, destroyed)
    except ConntrackError:
        raise
    except NflogError as exc:  # the shared netlink layer's: a bad length
        raise ConntrackError(str(exc)) from exc


def _connection(payload: bytes, destroyed: bool) -> Connection:
    if len(payload) < _NFGENMSG_SIZE:
        raise ConntrackError("conntrack message is shorter than its nfgenmsg")
    attrs = attributes(payload, _NFGENMSG_SIZE)
    if CTA_TUPLE_ORIG not in attrs:
        raise ConntrackError("conntrack message has no original tuple")
    reply = attrs.get(CTA_TUPLE_REPLY)
    start = stop = None
    if CTA_TIMESTAMP in attrs:
        stamps = attributes(attrs[CTA_TIMESTAMP], 0)
        start = _be(stamps.get(CTA_TIMESTAMP_START))
        stop = _be(stamps.get(CTA_TIMESTAMP_STOP))
    return Connection(
        orig=parse_tuple(attrs[CTA_TUPLE_ORIG]),
        reply=parse_tuple(reply) if reply is not None else None,
        orig_counter=_counter(attrs.get(CTA_COUNTERS_ORIG)),
        reply_counter=_counter(attrs.get(CTA_COUNTERS_REPLY)),
        id=_be(attrs.get(CTA_ID)) or 0,
        status=_be(attrs.get(CTA_STATUS)) or 0,
        start_ns=start or None,
        stop_ns=stop or None,
        destroyed=destroyed,
    )


def parse_tuple(raw: bytes) -> Tuple:
    nested = attributes(raw, 0)
    ip = attributes(nested.get(CTA_TUPLE_IP, b""), 0)
    proto = attributes(nested.get(CTA_TUPLE_PROTO, b""), 0)
    if CTA_IP_V4_SRC in ip and CTA_IP_V4_DST in ip:
        src, dst = _v4(ip[CTA_IP_V4_SRC]), _v4(ip[CTA_IP_V4_DST])
    elif CTA_IP_V6_SRC in ip and CTA_IP_V6_DST in ip:
        src, dst = _v6(ip[CTA_IP_V6_SRC]), _v6(ip[CTA_IP_V6_DST])
    else:
        raise ConntrackError("conntrack tuple has no IPv4 or IPv6 addresses")
    if CTA_PROTO_NUM not in proto or not proto[CTA_PROTO_NUM]:
        raise ConntrackError("conntrack tuple has no protocol number")
    number = proto[CTA_PROTO_NUM][0]
    v6 = number == 58
    return Tuple(
        src,
        dst,
        number,
        src_port=_be(proto.get(CTA_PROTO_SRC_PORT)),
        dst_port=_be(proto.get(CTA_PROTO_DST_PORT)),
        icmp_type=_byte(proto.get(CTA_PROTO_ICMPV6_TYPE if v6 else CTA_PROTO_ICMP_TYPE)),
        icmp_code=_byte(proto.get(CTA_PROTO_ICMPV6_CODE if v6 else CTA_PROTO_ICMP_CODE)),
        icmp_id=_be(proto.get(CTA_PROTO_ICMPV6_ID if v6 else CTA_PROTO_ICMP_ID)),
    )


def attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    """The attributes from offset on (the shared netlink walk, tightened: a dump of a large table runs
    this about nine times per entry)."""
    attrs: dict[int, bytes] = {}
    end = len(payload)
    while offset + 4 <= end:
        length, kind = _ATTR_HEAD(payload, offset)
        stop = offset + length
        if length < 4 or stop > end:
            raise ConntrackError(f"netlink attribute at byte {offset} has a bad length {length}")
        attrs[kind & _ATTR_TYPE_MASK] = payload[offset + 4 : stop]
        offset = (stop + 3) & ~3
    return attrs


def _counter(raw: bytes | None) -> Counter | None:
    if raw is None:
        return None
    nested = attributes(raw, 0)
    packets = _be(nested.get(CTA_COUNTERS_PACKETS, nested.get(CTA_COUNTERS32_PACKETS)))
    size = _be(nested.get(CTA_COUNTERS_BYTES, nested.get(CTA_COUNTERS32_BYTES)))
    if packets is None or size is None:
        raise ConntrackError("conntrack counters lack packets or bytes")
    return Counter(packets, size)


def _be(raw: bytes | None) -> int | None:
    """A big-endian unsigned number of 1, 2, 4 or 8 bytes (network byte order, as ctnetlink sends)."""
    if raw is None:
        return None
    if len(raw) not in (1, 2, 4, 8):
        raise ConntrackError(f"conntrack number of {len(raw)} bytes")
    return int.from_bytes(raw, "big")


def _byte(raw: bytes | None) -> int | None:
    return raw[0] if raw else None


def _v4(raw: bytes) -> str:
    if len(raw) != 4:
        raise ConntrackError(f"IPv4 address of {len(raw)} bytes")
    return socket.inet_ntoa(raw)


def _v6(raw: bytes) -> str:
    if len(raw) != 16:
        raise ConntrackError(f"IPv6 address of {len(raw)} bytes")
    return str(ipaddress.IPv6Address(raw))
