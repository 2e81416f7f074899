"""Client-side rate limiting (a token bucket) and retries with jittered exponential backoff.

EC2 throttles each account with token buckets per API; a node that bursts gets RequestLimitExceeded and, if it
retries at once, makes it worse for every node in the account. So each agent spends from its own bucket first,
and retries throttled or failed calls after a "full jitter" delay: uniform(0, min(cap, base * 2**attempt)).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from vpcnet.cloud.ec2 import Ec2Error

T = TypeVar("T")

# Called after every attempt: (api, seconds, error code or None, HTTP status).
CallObserver = Callable[[str, float, str | None, int], None]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. acquire() waits for a token (no busy loop)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._clock = clock or _loop_time
        self._tokens = burst
        self._stamp: float | None = None
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> bool:
        """Take one token if there is one now, without waiting (a server's throttle: refuse instead)."""
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def acquire(self) -> float:
        """Take one token; returns the seconds waited."""
        waited = 0.0
        async with self._lock:  # FIFO: callers are served in arrival order
            self._refill()
            while self._tokens < 1:
                delay = (1 - self._tokens) / self.rate
                await asyncio.sleep(delay)
                waited += delay
                self._refill()
            self._tokens -= 1
        return waited


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


@dataclass(frozen=True)
class Backoff:
    base: float = 0.2
    cap: float = 20.0
    max_attempts: int = 8

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The pause before retry number `attempt` (1 = first retry): full jitter."""
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))


async def call_with_retries(
    api: str,
    attempt_call: Callable[[], Awaitable[T]],
    *,
    bucket: TokenBucket | None,
    backoff: Backoff,
    observer: CallObserver | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run attempt_call until it succeeds, a non-retryable Ec2Error is raised, or attempts run out."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        if bucket is not None:
            await bucket.acquire()
        started = _loop_time()
        try:
            result = await attempt_call()
        except Ec2Error as exc:
            if observer is not None:
                observer(api, _loop_time() - started, exc.code, exc.status)
            attempt += 1
            if not exc.retryable or attempt >= backoff.max_attempts:
                raise
            await asyncio.sleep(backoff.delay(attempt, rng))
            continue
        if observer is not None:
            observer(api, _loop_time() - started, None, 200)
        return result
