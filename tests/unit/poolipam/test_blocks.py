"""The pure block model: FIFO reuse, sequence numbers that stop late releases, consistent state."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcnet.ipam.blocks import Block, block_cidrs, block_name, cidr_key, within

CIDR = IPv4Network("10.244.1.0/29")


def test_allocate_in_order_then_full() -> None:
    block = Block.new(CIDR, "n1")
    got = [block.allocate(f"h{i}", "n1") for i in range(8)]
    assert [o for o, _ in got if True] == list(range(8))  # type: ignore[misc]
    assert [s for _, s in got] == list(range(8))  # type: ignore[misc]
    assert block.allocate("h9", "n1") is None
    assert block.address(7) == IPv4Address("10.244.1.7")
    assert block.ordinal(IPv4Address("10.244.1.3")) == 3


def test_released_address_is_reused_last_and_late_release_frees_nothing() -> None:
    block = Block.new(CIDR, "n1")
    first = block.allocate("a", "n1")
    assert first == (0, 0)
    assert block.release(0, sequence=0, handle="a")
    # Ordinal 0 goes to the tail: the next allocations take 1..7 before 0 comes back.
    order = [block.allocate(f"b{i}", "n1") for i in range(8)]
    assert [o for o, _ in order] == [1, 2, 3, 4, 5, 6, 7, 0]  # type: ignore[misc]
    reused_seq = order[-1][1]  # type: ignore[index]
    # A late release of the first allocation (sequence 0) must not free the reused ordinal 0.
    assert not block.release(0, sequence=0)
    assert not block.release(0, handle="a")
    assert block.allocations[0].handle == "b7"
    assert block.release(0, sequence=reused_seq)


def test_json_round_trip() -> None:
    block = Block.new(CIDR, "n1")
    block.allocate("a", "n2", "ns", "pod")
    again = Block.from_spec(block.to_spec())
    assert again == block
    assert again.allocations[0].node == "n2"


def test_block_cidrs_cover_the_pool_once_from_a_node_dependent_start() -> None:
    pool = IPv4Network("10.244.0.0/22")
    a = list(block_cidrs(pool, 26, "node-a"))
    b = list(block_cidrs(pool, 26, "node-b"))
    assert sorted(a) == sorted(b) == list(pool.subnets(new_prefix=26))
    assert a != b  # different starts (these two names hash apart)
    assert list(block_cidrs(pool, 26, "node-a")) == a  # stable
    assert block_name(a[0]) == str(a[0]).replace(".", "-").replace("/", "-")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=60))
def test_random_allocate_release_keeps_the_block_consistent(ops: list[tuple[bool, int]]) -> None:
    block = Block.new(CIDR, "n1")
    held: dict[int, int] = {}
    for i, (allocate, ordinal) in enumerate(ops):
        if allocate:
            got = block.allocate(f"h{i}", "n1")
            if got is None:
                assert len(held) == 8
            else:
                assert got[0] not in held
                held[got[0]] = got[1]
        else:
            ok = block.release(ordinal, held.get(ordinal, -1))
            assert ok == (ordinal in held)
            held.pop(ordinal, None)
        assert block.check() == []
        assert {o: a.sequence for o, a in block.allocations.items()} == held
    assert len(set(held.values())) == len(held)  # sequence numbers never repeat


def test_ipv6_blocks_of_122_and_their_names() -> None:
    pool = IPv6Network("fd00:10:244::/64")
    first = next(block_cidrs(pool, 122))
    assert first == IPv6Network("fd00:10:244::/122")
    block = Block.new(IPv6Network("fd00:10:244::40/122"), "n1")
    assert block.size == 64
    assert block.allocate("h", "n1") == (0, 0)
    assert block.address(5) == IPv6Address("fd00:10:244::45")
    assert block.ordinal(IPv6Address("fd00:10:244::7f")) == 63
    # Another family's address is never in a block (no comparison error either).
    with pytest.raises(ValueError, match="not in block"):
        block.ordinal(IPv4Address("10.0.0.1"))
    assert Block.from_spec(block.to_spec()) == block
    assert block_name(block.cidr) == "fd00-10-244--40-122"
    assert block_name(IPv6Network("::/122")) == "x---122"  # an object name may not start with '-'
    # Two nodes' rotations start apart in a pool with 2**58 blocks, and stay inside it.
    a, b = next(block_cidrs(pool, 122, "node-a")), next(block_cidrs(pool, 122, "node-b"))
    assert a != b and a.subnet_of(pool) and b.subnet_of(pool)


def test_cidr_key_sorts_both_families_and_within_refuses_across() -> None:
    nets = [IPv6Network("fd00::/122"), IPv4Network("10.0.0.0/26"), IPv4Network("9.0.0.0/26")]
    assert sorted(nets, key=cidr_key)[0] == IPv4Network("9.0.0.0/26")
    assert sorted(nets, key=cidr_key)[-1] == IPv6Network("fd00::/122")
    assert within(IPv6Network("fd00::/122"), IPv6Network("fd00::/64"))
    assert not within(IPv4Network("10.0.0.0/26"), IPv6Network("fd00::/64"))
