"""Batched rtnetlink for the pod hot path: the handful of messages ADD and DEL send, encoded with struct.

Why not pyroute2 here: a pyroute2 request costs ~0.3-1 ms of Python (request filters, NLA encoding,
response futures) and one request per round trip; wiring a pod takes ~10 of them, as much as a whole Go
plugin run. Netlink accepts several messages in one send and acks each, so ADD is three sends (create the
veth; the pod's address, routes and neighbour; the host's route and rules), each message ~10 us to encode.
The kernel runs rtnetlink requests inside sendmsg, so the acks are queued when send returns. pyroute2
stays for everything else (CHECK, the node rules, dumps).

Every message that carries an address takes an IpFamily (IPv4 by default): it sets the header's family
and the address length (4 or 16 bytes), and an address of the other family is refused before anything is sent.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vpcnet.dataplane.family import IpFamily

Address = IPv4Address | IPv6Address | str
V4 = IpFamily.V4

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR = 20
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH = 28
RTM_NEWRULE, RTM_DELRULE = 32, 33

F_REQUEST, F_ACK, F_ECHO = 0x1, 0x4, 0x8
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 5, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NDA_DST, NDA_LLADDR = 1, 2
FRA_DST, FRA_SRC, FRA_PRIORITY, FRA_TABLE = 1, 2, 6, 15

IFF_UP = 0x1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTN_UNICAST = 1
RTPROT_STATIC = 4
FR_ACT_TO_TBL = 1
NUD_PERMANENT = 0x80
MAIN_TABLE = 254


class RtnlError(OSError):
    """The kernel refused a message; errno and the message's name."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}")
        self.what = what


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _ip(address: Address, family: IpFamily) -> bytes:
    return family.packed(address)


def _u32(value: int) -> bytes:
    return struct.pack("I", value)


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _rtmsg(
    family: IpFamily, dst_len: int, scope: int, table: int = MAIN_TABLE, protocol: int = RTPROT_STATIC
) -> bytes:
    return struct.pack(
        "BBBBBBBBI", family.af, dst_len, 0, 0, min(table, 255), protocol, scope, RTN_UNICAST, 0
    )


def _rule_hdr(family: IpFamily, dst_len: int, src_len: int, table: int) -> bytes:
    return struct.pack("BBBBBBBBI", family.af, dst_len, src_len, 0, min(table, 255), 0, 0, FR_ACT_TO_TBL, 0)


@dataclass(frozen=True)
class Message:
    kind: int
    flags: int
    body: bytes
    what: str  # for errors: what this message was meant to do
    ok: tuple[int, ...] = ()  # errnos that count as success (e.g. EEXIST for an add that is idempotent)


def new_veth(host: str, host_mac: str, peer: str, peer_mac: str, peer_netns_fd: int, mtu: int) -> Message:
    """The host end up at creation; the peer created directly in the pod's namespace, down (the kernel
    cannot open a veth end before the pair is joined: ENOTCONN), so set_up() it there."""
    peer_info = _ifinfo() + b"".join(
        (
            _attr(IFLA_IFNAME, _name(peer)),
            _attr(IFLA_ADDRESS, _mac(peer_mac)),
            _attr(IFLA_MTU, _u32(mtu)),
            _attr(IFLA_NET_NS_FD, _u32(peer_netns_fd)),
        )
    )
    linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
    body = _ifinfo(flags=IFF_UP, change=IFF_UP) + b"".join(
        (
            _attr(IFLA_IFNAME, _name(host)),
            _attr(IFLA_ADDRESS, _mac(host_mac)),
            _attr(IFLA_MTU, _u32(mtu)),
            _attr(IFLA_LINKINFO, linkinfo),
        )
    )
    return Message(RTM_NEWLINK, F_CREATE | F_EXCL | F_ECHO, body, f"create veth {host}")


def delete_link(name: str) -> Message:
    """The kernel destroys both ends of a veth (~25 ms, inside the send: keep it off the event loop)."""
    body = _ifinfo() + _attr(IFLA_IFNAME, _name(name))
    return Message(RTM_DELLINK, 0, body, f"delete link {name}", ok=(errno.ENODEV,))


def set_up(index: int) -> Message:
    return Message(RTM_SETLINK, 0, _ifinfo(index, IFF_UP, IFF_UP), f"set link {index} up")


def get_link(name: str) -> Message:
    return Message(RTM_GETLINK, 0, _ifinfo() + _attr(IFLA_IFNAME, _name(name)), f"find link {name}")


def add_address(
    index: int,
    address: Address,
    prefixlen: int | None = None,
    family: IpFamily = V4,
    *,
    nodad: bool = False,
) -> Message:
    """The address on the interface; prefixlen defaults to one host (/32, /128). nodad: usable at once
    (IPv6: no duplicate address detection, for an address the allocator made unique)."""
    if prefixlen is None:
        prefixlen = family.host_prefixlen
    packed = _ip(address, family)
    flags = IFA_F_NODAD if nodad else 0
    body = struct.pack("BBBBI", family.af, prefixlen, flags, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    if flags:
        body += _attr(IFA_FLAGS, _u32(flags))
    return Message(RTM_NEWADDR, F_CREATE | F_REPLACE, body, f"add {address}/{prefixlen}")


def replace_route(
    dst: Address | None,
    dst_len: int,
    oif: int,
    gateway: Address | None = None,
    table: int = MAIN_TABLE,
    family: IpFamily = V4,
) -> Message:
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = _rtmsg(family, dst_len, scope, table) + _attr(RTA_TABLE, _u32(table)) + _attr(RTA_OIF, _u32(oif))
    if dst is not None:
        body += _attr(RTA_DST, _ip(dst, family))
    if gateway is not None:
        body += _attr(RTA_GATEWAY, _ip(gateway, family))
    return Message(RTM_NEWROUTE, F_CREATE | F_REPLACE, body, f"route {dst or 'default'}/{dst_len}")


def delete_route(
    dst: Address,
    dst_len: int,
    oif: int,
    table: int = MAIN_TABLE,
    missing_ok: bool = True,
    family: IpFamily = V4,
) -> Message:
    """Only the route through oif; missing_ok=False reports ESRCH when there is none."""
    # Scope "nowhere" and protocol 0 match any route to dst through oif (as `ip route del` does).
    body = _rtmsg(family, dst_len, RT_SCOPE_NOWHERE, table, 0) + _attr(RTA_TABLE, _u32(table))
    body += _attr(RTA_DST, _ip(dst, family)) + _attr(RTA_OIF, _u32(oif))
    ok = (errno.ESRCH, errno.ENODEV) if missing_ok else ()
    return Message(RTM_DELROUTE, 0, body, f"delete route {dst}/{dst_len}", ok=ok)


def permanent_neighbour(index: int, address: Address, mac: str, family: IpFamily = V4) -> Message:
    body = struct.pack("BxxxiHBB", family.af, index, NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, _ip(address, family)) + _attr(NDA_LLADDR, _mac(mac))
    return Message(RTM_NEWNEIGH, F_CREATE | F_REPLACE, body, f"neighbour {address}")


def _rule(priority: int, table: int, dst: str | None, src: str | None, family: IpFamily) -> bytes:
    host = family.host_prefixlen
    body = _rule_hdr(family, host if dst else 0, host if src else 0, table)
    if dst:
        body += _attr(FRA_DST, _ip(dst, family))
    if src:
        body += _attr(FRA_SRC, _ip(src, family))
    body += _attr(FRA_PRIORITY, _u32(priority))
    if table:
        body += _attr(FRA_TABLE, _u32(table))
    return body


def add_rule(
    priority: int, table: int, *, dst: str | None = None, src: str | None = None, family: IpFamily = V4
) -> Message:
    body = _rule(priority, table, dst, src, family)
    what = f"rule {'to ' + dst if dst else 'from ' + str(src)} lookup {table} prio {priority}"
    # The same rule for the same address already there is what we want.
    return Message(RTM_NEWRULE, F_CREATE | F_EXCL, body, what, ok=(errno.EEXIST,))


def delete_rule(
    priority: int, table: int, *, dst: str | None = None, src: str | None = None, family: IpFamily = V4
) -> Message:
    """table 0 matches a rule of any table."""
    body = _rule(priority, table, dst, src, family)
    what = f"delete rule {'to ' + dst if dst else 'from ' + str(src)} prio {priority}"
    return Message(RTM_DELRULE, 0, body, what, ok=(errno.ENOENT, errno.ESRCH))


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    peer_index: int  # IFLA_LINK: for a veth, the peer's index in its namespace


def _parse_link(data: bytes, offset: int, end: int) -> Link:
    (index,) = struct.unpack_from("i", data, offset + 16 + 4)
    pos = offset + 16 + 16
    name, peer = "", 0
    while pos + 4 <= end:
        length, kind = struct.unpack_from("HH", data, pos)
        if length < 4:
            break
        payload = data[pos + 4 : pos + length]
        if kind == IFLA_IFNAME:
            name = payload.rstrip(b"\0").decode()
        elif kind == IFLA_LINK:
            (peer,) = struct.unpack("I", payload[:4])
        pos += (length + 3) & ~3
    return Link(index, name, peer)


class Rtnl:
    """A NETLINK_ROUTE socket (opened by the caller in the right namespace) that sends batches."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def batch(self, messages: list[Message]) -> tuple[list[RtnlError], list[Link]]:
        """Send all messages at once; returns the errors (not counting each message's `ok` errnos) and the
        links echoed or answered, in order."""
        seqs: dict[int, Message] = {}
        out = bytearray()
        for msg in messages:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            flags = F_REQUEST | F_ACK | msg.flags
            out += struct.pack("IHHII", 16 + len(msg.body), msg.kind, flags, self._seq, 0) + msg.body
            seqs[self._seq] = msg
        self.sock.send(bytes(out))
        errors: list[RtnlError] = []
        links: list[Link] = []
        pending = set(seqs)
        while pending:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("IHHII", data, pos)
                if length < 16:
                    break
                if seq in pending:
                    if kind == NLMSG_ERROR:
                        pending.discard(seq)
                        (code,) = struct.unpack_from("i", data, pos + 16)
                        if code and -code not in seqs[seq].ok:
                            errors.append(RtnlError(-code, seqs[seq].what))
                    elif kind == RTM_NEWLINK:  # an echo (create) or an answer (get); the ack follows
                        links.append(_parse_link(data, pos, pos + length))
                pos += (length + 3) & ~3
        return errors, links

    def run(self, messages: list[Message]) -> list[Link]:
        errors, links = self.batch(messages)
        if errors:
            raise errors[0]
        return links

    def find_link(self, name: str) -> Link | None:
        errors, links = self.batch([get_link(name)])
        if errors:
            if errors[0].errno == errno.ENODEV:
                return None
            raise errors[0]
        return links[0] if links else None
