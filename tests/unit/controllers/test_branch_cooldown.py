"""When a released branch ENI cools, may be reused, is evicted for its VLAN id or deleted."""

from __future__ import annotations

import math
from ipaddress import IPv4Address

import pytest

from vpcnet.cloud.ec2 import NetworkInterface
from vpcnet.controllers.branch_cooldown import (
    EKS_MIN_COOLDOWN,
    RELEASED_TAG,
    CoolDown,
    eks_cooldown,
    released_at,
)

TRUNK = "trunk"


def _branch(
    eni_id: str, at: str, groups: tuple[str, ...] = ("sg-a",), trunk: str = "eni-t"
) -> NetworkInterface:
    return NetworkInterface(
        eni_id=eni_id,
        mac="02:00:00:00:00:01",
        subnet_id="subnet-1",
        vpc_id="vpc-1",
        availability_zone="us-east-1a",
        status="in-use",
        primary_ip=IPv4Address("10.0.0.9"),
        tags={RELEASED_TAG: at, TRUNK: trunk},
        security_groups=groups,
    )


def test_release_time_is_read_from_the_tag_and_a_held_or_garbled_one_is_none() -> None:
    assert released_at(_branch("eni-1", "100.5")) == 100.5
    assert released_at(_branch("eni-1", "")) is None
    assert released_at(_branch("eni-1", "soon")) is None
    assert released_at(_branch("eni-1", "nan")) is None


def test_cooled_then_expired() -> None:
    timing = CoolDown(cooldown=60, reuse_window=30)
    b = _branch("eni-1", "100")
    assert not timing.cooled(b, 159.9) and timing.cooled(b, 160)
    assert not timing.expired(b, 189.9) and timing.expired(b, 190)
    assert timing.next_due([b], 100) == 60 and timing.next_due([b], 170) == 20
    assert timing.next_due([b], 200) is None and timing.next_due([], 0) is None


def test_reuse_needs_the_same_trunk_the_same_groups_and_a_finished_cooldown() -> None:
    timing = CoolDown(cooldown=60, reuse_window=600)
    older = _branch("eni-old", "100", ("sg-b", "sg-a"))
    newer = _branch("eni-new", "110", ("sg-a", "sg-b"))
    other_trunk = _branch("eni-x", "50", ("sg-a", "sg-b"), trunk="eni-t2")
    released = [newer, older, other_trunk]
    assert timing.reusable(released, "eni-t", ["sg-a", "sg-b"], 159, TRUNK) is None  # still cooling
    assert timing.reusable(released, "eni-t", ["sg-b", "sg-a"], 200, TRUNK) is older
    assert timing.reusable(released, "eni-t", ["sg-a"], 200, TRUNK) is None
    assert timing.evictable(released, "eni-t", 165, TRUNK) is older
    assert timing.evictable(released, "eni-t", 150, TRUNK) is None


def test_eks_floor_and_bad_values() -> None:
    assert eks_cooldown(5) == EKS_MIN_COOLDOWN and eks_cooldown(90) == 90
    with pytest.raises(ValueError, match="cool-down"):
        eks_cooldown(math.inf)
    with pytest.raises(ValueError, match="reuse window -1"):
        CoolDown(60, -1)
