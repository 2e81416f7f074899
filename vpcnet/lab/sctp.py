"""SCTP over raw IP sockets: just enough of RFC 9260 for an INIT / INIT-ACK exchange.

This kernel has no SCTP stack (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails), but netfilter still
tracks and matches SCTP. So the lab's pods answer SCTP probes on a raw socket of protocol 132: the probe
sends an INIT, the pod answers with an INIT-ACK carrying a state cookie, and the probe ends the association
attempt with an ABORT so conntrack forgets it. Conntrack checks the verification tags (and, where the
packet's checksum is not already trusted, the CRC32c), so both must be right.

Standard library only: the pod server imports this module.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

IPPROTO_SCTP = 132

CHUNK_INIT = 1
CHUNK_INIT_ACK = 2
CHUNK_ABORT = 6
CHUNK_COOKIE_ECHO = 10
CHUNK_COOKIE_ACK = 11

PARAM_STATE_COOKIE = 7
ABORT_FLAG_T = 0x01  # the verification tag is the sender's own, not the peer's (RFC 9260 3.3.7)

_COMMON_HEADER = struct.Struct("!HHII")
_CHUNK_HEADER = struct.Struct("!BBH")
_INIT_FIXED = struct.Struct("!IIHHI")  # initiate tag, a_rwnd, outbound streams, inbound streams, initial TSN
_PARAM_HEADER = struct.Struct("!HH")


class SctpError(ValueError):
    """A packet that is not well-formed SCTP (or not the IPv4 packet it claims to be)."""


def _crc32c_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) as SCTP uses it; crc32c(b"123456789") == 0xE3069283."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def sctp_checksum(packet: bytes) -> bytes:
    """The four checksum bytes for `packet` (its checksum field is treated as zero).

    The kernel stores the CRC little-endian (cpu_to_le32 in include/net/sctp/checksum.h)."""
    zeroed = packet[:8] + b"\x00\x00\x00\x00" + packet[12:]
    return crc32c(zeroed).to_bytes(4, "little")


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


@dataclass(frozen=True)
class Chunk:
    type: int
    flags: int
    value: bytes

    def encode(self) -> bytes:
        return _pad4(
            _CHUNK_HEADER.pack(self.type, self.flags, _CHUNK_HEADER.size + len(self.value)) + self.value
        )


@dataclass(frozen=True)
class Packet:
    src_port: int
    dst_port: int
    vtag: int
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        body = _COMMON_HEADER.pack(self.src_port, self.dst_port, self.vtag, 0)
        body += b"".join(chunk.encode() for chunk in self.chunks)
        return body[:8] + sctp_checksum(body) + body[12:]

    @property
    def first_chunk_type(self) -> int | None:
        return self.chunks[0].type if self.chunks else None


@dataclass(frozen=True)
class Init:
    """The fixed part of an INIT or INIT-ACK chunk, and (for INIT-ACK) the state cookie."""

    initiate_tag: int
    a_rwnd: int = 65535
    outbound_streams: int = 1
    inbound_streams: int = 1
    initial_tsn: int = 1
    cookie: bytes | None = None

    def chunk(self, chunk_type: int) -> Chunk:
        value = _INIT_FIXED.pack(
            self.initiate_tag, self.a_rwnd, self.outbound_streams, self.inbound_streams, self.initial_tsn
        )
        if self.cookie is not None:
            param = (
                _PARAM_HEADER.pack(PARAM_STATE_COOKIE, _PARAM_HEADER.size + len(self.cookie)) + self.cookie
            )
            value += _pad4(param)
        return Chunk(chunk_type, 0, value)

    @classmethod
    def decode(cls, chunk: Chunk) -> Init:
        if chunk.type not in (CHUNK_INIT, CHUNK_INIT_ACK):
            raise SctpError(f"chunk type {chunk.type} is not INIT or INIT-ACK")
        if len(chunk.value) < _INIT_FIXED.size:
            raise SctpError(
                f"INIT chunk value is {len(chunk.value)} bytes, at least {_INIT_FIXED.size} needed"
            )
        tag, rwnd, outbound, inbound, tsn = _INIT_FIXED.unpack_from(chunk.value)
        if tag == 0:
            raise SctpError("INIT chunk carries initiate tag 0, which RFC 9260 forbids")
        cookie = None
        offset = _INIT_FIXED.size
        while offset + _PARAM_HEADER.size <= len(chunk.value):
            ptype, plen = _PARAM_HEADER.unpack_from(chunk.value, offset)
            if plen < _PARAM_HEADER.size or offset + plen > len(chunk.value):
                raise SctpError(f"INIT parameter at offset {offset} has bad length {plen}")
            if ptype == PARAM_STATE_COOKIE:
                cookie = chunk.value[offset + _PARAM_HEADER.size : offset + plen]
            offset += plen + (-plen % 4)
        return cls(tag, rwnd, outbound, inbound, tsn, cookie)


def init_packet(src_port: int, dst_port: int, initiate_tag: int) -> Packet:
    """An INIT: the verification tag in the common header must be 0."""
    return Packet(src_port, dst_port, 0, (Init(initiate_tag).chunk(CHUNK_INIT),))


def init_ack_packet(init: Packet, initiate_tag: int, cookie: bytes) -> Packet:
    """The answer to `init`: ports swapped, tagged with the INIT's initiate tag, carrying a state cookie."""
    peer = Init.decode(init.chunks[0])
    chunk = Init(initiate_tag, cookie=cookie).chunk(CHUNK_INIT_ACK)
    return Packet(init.dst_port, init.src_port, peer.initiate_tag, (chunk,))


def abort_packet(src_port: int, dst_port: int, peer_tag: int) -> Packet:
    return Packet(src_port, dst_port, peer_tag, (Chunk(CHUNK_ABORT, 0, b""),))


def decode_packet(data: bytes, *, verify_checksum: bool = True) -> Packet:
    if len(data) < _COMMON_HEADER.size:
        raise SctpError(f"SCTP packet of {len(data)} bytes is shorter than its 12-byte common header")
    src_port, dst_port, vtag, _ = _COMMON_HEADER.unpack_from(data)
    if verify_checksum and data[8:12] != sctp_checksum(data):
        raise SctpError("SCTP checksum (CRC32c) does not match the packet")
    chunks = []
    offset = _COMMON_HEADER.size
    while offset < len(data):
        if offset + _CHUNK_HEADER.size > len(data):
            raise SctpError(f"truncated chunk header at offset {offset}")
        ctype, flags, length = _CHUNK_HEADER.unpack_from(data, offset)
        if length < _CHUNK_HEADER.size or offset + length > len(data):
            raise SctpError(f"chunk at offset {offset} has bad length {length}")
        chunks.append(Chunk(ctype, flags, data[offset + _CHUNK_HEADER.size : offset + length]))
        offset += length + (-length % 4)
    return Packet(src_port, dst_port, vtag, tuple(chunks))


@dataclass(frozen=True)
class Ipv4Datagram:
    src: str
    dst: str
    protocol: int
    payload: bytes


def decode_ipv4(data: bytes) -> Ipv4Datagram:
    """What an IPv4 raw socket hands to recv(): the IP header, then the payload."""
    if len(data) < 20 or data[0] >> 4 != 4:
        raise SctpError("not an IPv4 packet")
    header_len = (data[0] & 0x0F) * 4
    total_len = struct.unpack_from("!H", data, 2)[0]
    if header_len < 20 or total_len < header_len or len(data) < header_len:
        raise SctpError(f"bad IPv4 header length {header_len} or total length {total_len}")
    return Ipv4Datagram(
        src=socket.inet_ntoa(data[12:16]),
        dst=socket.inet_ntoa(data[16:20]),
        protocol=data[9],
        payload=data[header_len : min(total_len, len(data))],
    )


def raw_socket(family: int = socket.AF_INET) -> socket.socket:
    """A raw socket of protocol 132 of family (AF_INET or AF_INET6; needs CAP_NET_RAW). The kernel writes
    the IP header on send; recv returns the whole IP packet in IPv4, the payload only in IPv6 (see
    recv_datagram). With such a socket open, the kernel does not answer incoming SCTP with ICMP
    protocol-unreachable."""
    sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_SCTP)
    sock.setblocking(False)
    return sock


def recv_datagram(sock: socket.socket) -> tuple[str, bytes]:
    """(source address, SCTP packet) of what a raw socket of either family received; SctpError for an IPv4
    packet that is not well-formed. (SCTP's CRC32c covers no pseudo-header: the packet is the same in both
    families.) Raises BlockingIOError when nothing is waiting."""
    data, address = sock.recvfrom(65535)
    if sock.family == socket.AF_INET6:
        return str(address[0]), data
    datagram = decode_ipv4(data)
    return datagram.src, datagram.payload
