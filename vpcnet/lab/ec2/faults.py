"""Faults the endpoint injects, for tests and the demo: latency per action, EC2-style throttling (a token
bucket per action class) and injected failures. Thread-safe; settable at start and at run time.

JSON form (POST /lab/faults replaces the sections it names; GET /lab/faults shows the config and live levels):

    {
      "latency":  {"AttachNetworkInterface": 2.0, "*": 0.05},          # seconds before the action runs
      "throttle": {"mutating": {"capacity": 20, "refill_per_second": 5},  # null: that class is unthrottled
                   "describe": {"capacity": 100, "refill_per_second": 20},
                   "AttachNetworkInterface": {"capacity": 5, "refill_per_second": 1}},  # an action's own
      "failures": {"AssignPrivateIpAddresses": {"code": "InsufficientFreeAddressesInSubnet",
                                                "count": 2, "probability": 0.0,
                                                "message": "injected", "status": 400}},
      "reset": true                                                      # optional: clear everything first
    }

"*" in latency and failures means every action (a specific entry wins). A failure fails the next `count`
calls, then each call with `probability`. Throttling, as EC2 does it, takes a token from the action's class
bucket (Describe* are "describe", the rest "mutating") and from the action's own bucket if it has one; an
empty bucket answers RequestLimitExceeded (HTTP 503). `load_faults(path)` reads such a document from a file.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpcnet.lab.ec2.api import ACTIONS, is_mutating
from vpcnet.lab.ec2.errors import Ec2Error

CLASSES = ("mutating", "describe")

# EC2's documented request-token buckets by category (Describe*: 100 tokens, 20/s back; mutating actions:
# 50 tokens, 5/s back). EC2 now keeps one such bucket per API; a throttle document can name actions too.
EC2_LIKE_THROTTLE: dict[str, dict[str, float]] = {
    "describe": {"capacity": 100, "refill_per_second": 20},
    "mutating": {"capacity": 50, "refill_per_second": 5},
}
_SERVER_CODES = {
    "RequestLimitExceeded": 503,
    "Unavailable": 503,
    "InternalError": 500,
    "InternalFailure": 500,
}


class FaultsError(ValueError):
    """A faults document is malformed; the message names the field."""


@dataclass
class _Bucket:
    capacity: float
    refill_per_second: float
    tokens: float
    stamp: float

    def can_take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill_per_second)
        self.stamp = now
        return self.tokens >= 1.0

    def take(self, now: float) -> bool:
        if self.can_take(now):
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Failure:
    code: str
    message: str
    status: int
    count: int
    probability: float


def _number(raw: Any, where: str, minimum: float = 0.0) -> float:
    # NaN passes every comparison and infinity sleeps forever: both refused (JSON allows NaN, Infinity).
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or (isinstance(raw, int) and abs(raw) >= 2**1023)
        or not math.isfinite(raw)
        or raw < minimum
    ):
        shown = repr(raw) if not isinstance(raw, int) or abs(raw) < 10**30 else "a huge integer"
        raise FaultsError(f"{where}: expected a finite number >= {minimum}, got {shown}")
    return float(raw)


def _action(name: Any, where: str) -> str:
    if name != "*" and name not in ACTIONS:
        raise FaultsError(f"{where}: unknown action {name!r} (one of {', '.join(ACTIONS)} or '*')")
    return str(name)


class Faults:
    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._latency: dict[str, float] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._failures: dict[str, _Failure] = {}
        if config:
            self.update(config)

    def update(self, doc: Mapping[str, Any]) -> None:
        """Apply a faults document (validated whole first: a bad one changes nothing)."""
        if not isinstance(doc, Mapping):
            raise FaultsError("the faults document must be a JSON object")
        unknown = set(doc) - {"latency", "throttle", "failures", "reset"}
        if unknown:
            raise FaultsError(f"unknown key(s) {sorted(unknown)}; known: latency, throttle, failures, reset")
        latency = self._parse_latency(doc["latency"]) if "latency" in doc else None
        buckets = self._parse_throttle(doc["throttle"]) if "throttle" in doc else None
        failures = self._parse_failures(doc["failures"]) if "failures" in doc else None
        with self._lock:
            if doc.get("reset"):
                self._latency, self._buckets, self._failures = {}, {}, {}
            if latency is not None:
                self._latency = latency
            if buckets is not None:
                self._buckets = buckets
            if failures is not None:
                self._failures = failures

    def _parse_latency(self, raw: Any) -> dict[str, float]:
        if not isinstance(raw, Mapping):
            raise FaultsError("latency: expected an object {action: seconds}")
        return {_action(k, f"latency.{k}"): _number(v, f"latency.{k}") for k, v in raw.items()}

    def _parse_throttle(self, raw: Any) -> dict[str, _Bucket]:
        if not isinstance(raw, Mapping):
            raise FaultsError(
                "throttle: expected an object {mutating|describe: {capacity, refill_per_second}}"
            )
        buckets: dict[str, _Bucket] = {}
        now = self._clock()
        for cls, spec in raw.items():
            if cls not in CLASSES and cls not in ACTIONS:
                raise FaultsError(
                    f"throttle.{cls}: neither an action class ({', '.join(CLASSES)}) nor an action"
                )
            if spec is None:
                continue
            if not isinstance(spec, Mapping) or set(spec) != {"capacity", "refill_per_second"}:
                raise FaultsError(f"throttle.{cls}: expected {{capacity, refill_per_second}}")
            capacity = _number(spec["capacity"], f"throttle.{cls}.capacity", 1.0)
            refill = _number(spec["refill_per_second"], f"throttle.{cls}.refill_per_second")
            buckets[cls] = _Bucket(capacity, refill, capacity, now)
        return buckets

    def _parse_failures(self, raw: Any) -> dict[str, _Failure]:
        if not isinstance(raw, Mapping):
            raise FaultsError("failures: expected an object {action: {code, count, probability, ...}}")
        failures: dict[str, _Failure] = {}
        for name, spec in raw.items():
            where = f"failures.{name}"
            action = _action(name, where)
            if not isinstance(spec, Mapping):
                raise FaultsError(f"{where}: expected an object")
            unknown = set(spec) - {"code", "message", "status", "count", "probability"}
            if unknown:
                raise FaultsError(f"{where}: unknown key(s) {sorted(unknown)}")
            code = spec.get("code")
            if not isinstance(code, str) or not code:
                raise FaultsError(f"{where}.code: expected an EC2 error code")
            count = spec.get("count", 0)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise FaultsError(f"{where}.count: expected an integer >= 0, got {count!r}")
            probability = _number(spec.get("probability", 0.0), f"{where}.probability")
            if probability > 1.0:
                raise FaultsError(f"{where}.probability: expected 0..1, got {probability}")
            status = spec.get("status", _SERVER_CODES.get(code, 400))
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise FaultsError(f"{where}.status: expected an HTTP error status 400..599, got {status!r}")
            message = str(spec.get("message", f"injected failure of {action} (lab faults)"))
            failures[action] = _Failure(code, message, status, count, probability)
        return failures

    def describe(self) -> dict[str, Any]:
        """The current configuration, bucket levels and remaining failure counts (JSON-able)."""
        with self._lock:
            now = self._clock()
            throttle: dict[str, Any] = {}
            for cls, b in self._buckets.items():
                level = min(b.capacity, b.tokens + (now - b.stamp) * b.refill_per_second)
                throttle[cls] = {
                    "capacity": b.capacity,
                    "refill_per_second": b.refill_per_second,
                    "tokens": round(level, 3),
                }
            return {
                "latency": dict(self._latency),
                "throttle": throttle,
                "failures": {
                    a: {
                        "code": f.code,
                        "message": f.message,
                        "status": f.status,
                        "count": f.count,
                        "probability": f.probability,
                    }
                    for a, f in self._failures.items()
                },
            }

    def before(self, action: str) -> None:
        """Run before an action: throttle (raises RequestLimitExceeded), sleep the latency, then raise an
        injected failure if one is due. The sleep happens outside every lock."""
        cls = "mutating" if is_mutating(action) else "describe"
        with self._lock:
            now = self._clock()
            buckets = [b for b in (self._buckets.get(cls), self._buckets.get(action)) if b is not None]
            if not all(b.can_take(now) for b in buckets):
                raise Ec2Error("RequestLimitExceeded", "Request limit exceeded.", status=503)
            for b in buckets:  # every bucket had a token: take them together (a refused call costs none)
                b.take(now)
            delay = self._latency.get(action, self._latency.get("*", 0.0))
        if delay > 0:
            self._sleep(delay)
        with self._lock:
            failure = self._failures.get(action) or self._failures.get("*")
            if failure is None:
                return
            if failure.count > 0:
                failure.count -= 1
            elif not (failure.probability > 0 and self._rng.random() < failure.probability):
                return
            raise Ec2Error(failure.code, failure.message, status=failure.status)


def load_faults(path: str | Path) -> dict[str, Any]:
    """A faults document from a JSON file (for a lab started with faults); errors name the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise FaultsError(f"{path}: cannot read a faults document: {e}") from e
    if not isinstance(doc, dict):
        raise FaultsError(f"{path}: the faults document must be a JSON object")
    try:
        Faults(doc)  # validated now: a bad file is refused before anything starts
    except FaultsError as e:
        raise FaultsError(f"{path}: {e}") from e
    return doc
