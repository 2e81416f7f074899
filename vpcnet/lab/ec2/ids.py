"""Deterministic, unique IDs and MAC addresses from a sequence number.

Multiplying by an odd constant is a bijection modulo a power of two, so distinct sequence numbers give
distinct IDs that still look like EC2's (17 hex digits) rather than a visible counter."""

from __future__ import annotations

_ID_BITS = 68  # 17 hex digits, as EC2's long IDs
_MAC_BITS = 40  # the 5 bytes after the locally administered 02: octet
_MIX = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**k


def make_id(kind: str, seq: int) -> str:
    """`kind`-<17 hex digits>, e.g. make_id("eni", 7) -> "eni-..."; unique per seq."""
    if seq < 0:
        raise ValueError(f"sequence number {seq} must not be negative")
    mixed = (seq * _MIX) % (1 << _ID_BITS)
    return f"{kind}-{mixed:017x}"


def make_mac(seq: int) -> str:
    """A locally administered unicast MAC (02:xx:xx:xx:xx:xx), unique per seq below 2**40."""
    if not 0 <= seq < (1 << _MAC_BITS):
        raise ValueError(f"sequence number {seq} out of range for a MAC")
    mixed = (seq * _MIX) % (1 << _MAC_BITS)
    tail = mixed.to_bytes(5, "big")
    return "02:" + ":".join(f"{b:02x}" for b in tail)
