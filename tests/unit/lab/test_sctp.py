"""SCTP packet building and parsing, and CRC32c against published vectors."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpcnet.lab import sctp


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789", 0xE3069283),  # the CRC catalogue's check value for CRC-32C
        (b"", 0x00000000),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert sctp.crc32c(data) == expected


def test_crc32c_is_incremental() -> None:
    assert sctp.crc32c(b"56789", sctp.crc32c(b"1234")) == 0xE3069283


def test_checksum_is_stored_little_endian_over_the_zeroed_field() -> None:
    packet = sctp.init_packet(40000, 80, 0x01020304).encode()
    zeroed = packet[:8] + bytes(4) + packet[12:]
    assert packet[8:12] == struct.pack("<I", sctp.crc32c(zeroed))


def test_init_layout() -> None:
    data = sctp.init_packet(40000, 80, 0xDEADBEEF).encode()
    src, dst, vtag = struct.unpack_from("!HHI", data)
    assert (src, dst, vtag) == (40000, 80, 0)  # an INIT travels with verification tag 0
    ctype, flags, length = struct.unpack_from("!BBH", data, 12)
    assert (ctype, flags, length) == (sctp.CHUNK_INIT, 0, 20)
    assert struct.unpack_from("!I", data, 16)[0] == 0xDEADBEEF
    assert len(data) == 32


def test_init_ack_answers_the_init() -> None:
    init = sctp.decode_packet(sctp.init_packet(40000, 80, 0x11111111).encode())
    ack = sctp.decode_packet(sctp.init_ack_packet(init, 0x22222222, b"x/a").encode())
    assert (ack.src_port, ack.dst_port, ack.vtag) == (80, 40000, 0x11111111)
    assert ack.first_chunk_type == sctp.CHUNK_INIT_ACK
    body = sctp.Init.decode(ack.chunks[0])
    assert body.initiate_tag == 0x22222222
    assert body.cookie == b"x/a"


def test_abort() -> None:
    abort = sctp.decode_packet(sctp.abort_packet(40000, 80, 0x22222222).encode())
    assert abort.vtag == 0x22222222
    assert abort.chunks == (sctp.Chunk(sctp.CHUNK_ABORT, 0, b""),)


def test_bad_checksum_is_refused() -> None:
    data = bytearray(sctp.init_packet(1, 2, 3).encode())
    data[-1] ^= 0xFF
    with pytest.raises(sctp.SctpError, match="checksum"):
        sctp.decode_packet(bytes(data))
    assert sctp.decode_packet(bytes(data), verify_checksum=False).src_port == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 4, "shorter than its 12-byte"),
        (sctp.Packet(1, 2, 3).encode() + b"\x01\x00", "truncated chunk header"),
        (sctp.Packet(1, 2, 3).encode() + b"\x01\x00\x00\x02", "bad length 2"),
        (sctp.Packet(1, 2, 3).encode() + b"\x01\x00\x00\x40", "bad length 64"),
    ],
)
def test_malformed_packets_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(sctp.SctpError, match=message):
        sctp.decode_packet(data, verify_checksum=False)


def test_init_with_zero_tag_is_refused() -> None:
    chunk = sctp.Init(0).chunk(sctp.CHUNK_INIT)
    with pytest.raises(sctp.SctpError, match="initiate tag 0"):
        sctp.Init.decode(chunk)


def test_decode_ipv4() -> None:
    payload = sctp.init_packet(5, 6, 7).encode()
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0,
        64,
        132,
        0,
        socket.inet_aton("10.1.2.3"),
        socket.inet_aton("10.4.5.6"),
    )
    datagram = sctp.decode_ipv4(header + payload + b"trailing")
    assert (datagram.src, datagram.dst, datagram.protocol) == ("10.1.2.3", "10.4.5.6", 132)
    assert datagram.payload == payload


def test_decode_ipv4_refuses_other_versions() -> None:
    with pytest.raises(sctp.SctpError, match="not an IPv4"):
        sctp.decode_ipv4(b"\x60" + bytes(39))


@given(
    src=st.integers(0, 65535),
    dst=st.integers(0, 65535),
    tag=st.integers(1, 2**32 - 1),
    cookie=st.binary(max_size=64),
)
def test_round_trip(src: int, dst: int, tag: int, cookie: bytes) -> None:
    init = sctp.decode_packet(sctp.init_packet(src, dst, tag).encode())
    assert sctp.Init.decode(init.chunks[0]).initiate_tag == tag
    ack = sctp.decode_packet(sctp.init_ack_packet(init, tag, cookie).encode())
    assert sctp.Init.decode(ack.chunks[0]).cookie == cookie
    assert (ack.src_port, ack.dst_port) == (dst, src)


@given(st.binary(max_size=80))
def test_decoding_garbage_never_crashes_with_anything_but_sctp_error(data: bytes) -> None:
    try:
        packet = sctp.decode_packet(data, verify_checksum=False)
    except sctp.SctpError:
        return
    for chunk in packet.chunks:
        if chunk.type in (sctp.CHUNK_INIT, sctp.CHUNK_INIT_ACK):
            with contextlib.suppress(sctp.SctpError):
                sctp.Init.decode(chunk)
