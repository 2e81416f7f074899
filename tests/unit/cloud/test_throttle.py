"""Retries with full-jitter exponential backoff, and the client-side token bucket, on a virtual clock."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from vpcnet.cloud.ec2 import Ec2Error
from vpcnet.cloud.throttle import Backoff, TokenBucket, call_with_retries
from vpcnet.testing.virtual_time import run_virtual


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    b = Backoff(base=0.2, cap=5.0, max_attempts=8)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.4), (2, 0.8), (3, 1.6), (4, 3.2), (5, 5.0), (9, 5.0)]:
        delays = [b.delay(attempt, rng) for _ in range(400)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling  # spread over the whole range


def test_throttled_calls_are_retried_after_growing_jittered_pauses() -> None:
    failures = 4
    stamps: list[float] = []

    async def attempt() -> str:
        stamps.append(asyncio.get_running_loop().time())
        if len(stamps) <= failures:
            raise Ec2Error("AssignPrivateIpAddresses", "RequestLimitExceeded", "slow down", 503)
        return "ok"

    async def body() -> str:
        return await call_with_retries(
            "AssignPrivateIpAddresses",
            attempt,
            bucket=None,
            backoff=Backoff(1.0, 60.0, 10),
            rng=random.Random(3),
        )

    assert run_virtual(body()) == "ok"
    pauses = [b - a for a, b in itertools.pairwise(stamps)]
    rng = random.Random(3)
    assert pauses == pytest.approx([rng.uniform(0, 2.0**n) for n in range(1, failures + 1)])


def test_retries_stop_at_max_attempts_and_client_errors_are_not_retried() -> None:
    calls: list[str] = []

    async def throttled() -> None:
        calls.append("t")
        raise Ec2Error("CreateNetworkInterface", "RequestLimitExceeded", "slow down", 503)

    async def refused() -> None:
        calls.append("r")
        raise Ec2Error("CreateNetworkInterface", "InvalidSubnetID.NotFound", "no such subnet", 400)

    async def body() -> None:
        with pytest.raises(Ec2Error, match="RequestLimitExceeded"):
            await call_with_retries(
                "CreateNetworkInterface", throttled, bucket=None, backoff=Backoff(0.1, 1, 5)
            )
        with pytest.raises(Ec2Error, match="NotFound"):
            await call_with_retries(
                "CreateNetworkInterface", refused, bucket=None, backoff=Backoff(0.1, 1, 5)
            )

    run_virtual(body())
    assert calls == ["t"] * 5 + ["r"]


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    async def body() -> list[float]:
        bucket = TokenBucket(rate=2.0, burst=4.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = []
        for _ in range(8):
            await bucket.acquire()
            out.append(loop.time() - t0)
        return out

    assert run_virtual(body()) == pytest.approx([0, 0, 0, 0, 0.5, 1.0, 1.5, 2.0])


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)
