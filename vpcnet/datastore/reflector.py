"""A reflector: keep a local cache of one kind in step with a Kubernetes-style list/watch API (client-go's).

Independent of the HTTP client: it drives a `ListerWatcher` (vpcnet/datastore/kube_client.py is the real
one; unit tests use an in-memory one). The loop:

- list, then watch from the list's resourceVersion with `allowWatchBookmarks=true`;
- every event and every BOOKMARK moves the resume point; a watch that ends (its `timeoutSeconds`, a cut
  connection, an API server restart) resumes from there, so nothing is missed or repeated;
- 410 Gone / Expired (the resume point was compacted away): list again and diff the new list against the
  cache, emitting DELETED for what vanished in the gap and ADDED/MODIFIED for what appeared or changed;
- periodic resync: a relist with the same diff (not client-go's re-delivery of the cache to handlers: our
  consumers resync their own output, so what they need from us is a cache repaired against the source);
- errors back off exponentially with full jitter (sleep uniform(0, min(cap, base * 2**n)));
- a watch silent (no event, no bookmark) for longer than `idle_timeout`, or still open well past its own
  `timeoutSeconds`, is treated as hung: dropped and resumed.

resourceVersions are opaque strings here, as the API contract says; only the consumer may interpret them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

QUICK_END = 1.0  # seconds: a watch the server ends sooner than this, empty, is retried after a backoff

Object = dict[str, Any]


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410, reason Expired or Gone): list again."""


class WatchHung(Exception):
    """The watch went silent past its deadline."""


@dataclass(frozen=True)
class WatchEvent:
    """One line of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK (ERROR is raised, never yielded)."""

    type: str
    object: Object


@dataclass(frozen=True)
class ListResult:
    items: list[Object]
    resource_version: str


class ListerWatcher(Protocol):
    """What the reflector needs from an API client, for one kind."""

    async def list(self) -> ListResult: ...

    def watch(
        self, resource_version: str, *, allow_bookmarks: bool, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        """The changes after resource_version; raises Gone on 410, ends when the server ends it."""
        ...


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    SYNCED = "SYNCED"  # a list was applied: every object up to resource_version is in the cache
    PROGRESS = "PROGRESS"  # a bookmark: every change up to resource_version has been delivered


@dataclass(frozen=True)
class ReflectorEvent:
    type: EventType
    key: str  # "<namespace>/<name>", or "<name>" for cluster-scoped objects ("" for SYNCED/PROGRESS)
    object: Object | None  # the object (the last one known, for DELETED); None for SYNCED/PROGRESS
    resource_version: str  # the object's, or for synthesized DELETED/SYNCED the list's
    from_list: bool = False  # part of a relist's diff (in no particular order), not a watch event


def object_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name", "")
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def object_rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


@dataclass
class ReflectorSettings:
    watch_timeout: float = 300.0  # timeoutSeconds asked for: uniform(watch_timeout, 2 * watch_timeout)
    idle_timeout: float = 150.0  # silence (no event, no bookmark) that means hung; servers bookmark ~1/min
    hang_grace: float = 30.0  # how long past its timeoutSeconds a watch may stay open
    resync_period: float = 900.0  # relist-and-diff this often (0: never)
    backoff_base: float = 0.2
    backoff_cap: float = 30.0


@dataclass
class ReflectorStats:
    lists: int = 0
    watches: int = 0
    gone: int = 0
    hung: int = 0
    errors: int = 0
    synthesized_deletes: int = 0
    last_error: str = ""


class Reflector:
    def __init__(
        self,
        name: str,
        lister_watcher: ListerWatcher,
        sink: Callable[[ReflectorEvent], None],
        settings: ReflectorSettings | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.lw = lister_watcher
        self.sink = sink
        self.settings = settings or ReflectorSettings()
        self.rng = rng or random.Random()
        self._clock = clock
        self.cache: dict[str, Object] = {}
        self.resource_version = ""  # the resume point: every change up to it is in the cache
        self.synced = asyncio.Event()
        self.stats = ReflectorStats()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self) -> None:
        """List and watch until cancelled; never raises otherwise (errors are retried with backoff)."""
        need_list = True
        failures = 0
        next_resync = self._next_resync()
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                    next_resync = self._next_resync()
                started = self._now()
                if await self._watch_until(next_resync):
                    failures = 0
                elif self._now() - started < QUICK_END:
                    # Ended at once with nothing to say: do not hammer the server with new watches.
                    await asyncio.sleep(self._backoff(failures))
                    failures += 1
                if self._now() >= next_resync:
                    need_list = True
            except asyncio.CancelledError:
                raise
            except Gone as err:
                self.stats.gone += 1
                log.info(
                    "%s: watch from %s expired (%s); listing again", self.name, self.resource_version, err
                )
                need_list = True  # relisting at once is right: the server answered, it is not overloaded
            except WatchHung as err:
                self.stats.hung += 1
                log.warning("%s: %s; resuming from %s", self.name, err, self.resource_version)
            except Exception as err:
                self.stats.errors += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                delay = self._backoff(failures)
                failures += 1
                log.warning(
                    "%s: %s (attempt %d); retrying in %.2fs",
                    self.name,
                    self.stats.last_error,
                    failures,
                    delay,
                )
                await asyncio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform over [0, min(cap, base * 2**failures)]."""
        ceiling = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** min(failures, 30))
        return self.rng.uniform(0, ceiling)

    def _next_resync(self) -> float:
        period = self.settings.resync_period
        return self._now() + period if period > 0 else float("inf")

    async def relist(self) -> None:
        """List, and bring the cache to the list: what vanished is DELETED, what is new or changed is
        ADDED/MODIFIED (an object whose resourceVersion did not change is left alone)."""
        result = await self.lw.list()
        self.stats.lists += 1
        fresh = {object_key(obj): obj for obj in result.items}
        for key in [k for k in self.cache if k not in fresh]:
            gone = self.cache.pop(key)
            self.stats.synthesized_deletes += 1
            self.sink(ReflectorEvent(EventType.DELETED, key, gone, result.resource_version, True))
        for key, obj in fresh.items():
            known = self.cache.get(key)
            if known is not None and object_rv(known) == object_rv(obj):
                continue
            self.cache[key] = obj
            kind = EventType.ADDED if known is None else EventType.MODIFIED
            self.sink(ReflectorEvent(kind, key, obj, object_rv(obj), True))
        self.resource_version = result.resource_version
        self.sink(ReflectorEvent(EventType.SYNCED, "", None, result.resource_version, True))
        self.synced.set()

    async def _watch_until(self, stop_at: float) -> int:
        """One watch from the resume point, until the server ends it, the resync is due, or it hangs;
        how many events (bookmarks included) it delivered."""
        settings = self.settings
        timeout_seconds = max(1, round(self.rng.uniform(settings.watch_timeout, 2 * settings.watch_timeout)))
        must_end_by = self._now() + timeout_seconds + settings.hang_grace
        self.stats.watches += 1
        stream = self.lw.watch(self.resource_version, allow_bookmarks=True, timeout_seconds=timeout_seconds)
        iterator = aiter(stream)
        received = 0
        try:
            while True:
                now = self._now()
                if now >= stop_at:
                    return received
                wait = min(settings.idle_timeout, must_end_by - now, stop_at - now)
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                    # lands as its timeout fires, and the reflector would then never stop.
                    async with asyncio.timeout(max(0.0, wait)):
                        event = await anext(iterator)
                except StopAsyncIteration:
                    return received
                except TimeoutError:
                    if self._now() >= stop_at:
                        return received
                    raise WatchHung(
                        f"watch from {self.resource_version} silent for {wait:.1f}s"
                        + (" (past its timeoutSeconds)" if self._now() >= must_end_by else "")
                    ) from None
                received += 1
                self._apply(event)
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def _apply(self, event: WatchEvent) -> None:
        rv = object_rv(event.object)
        if event.type == "BOOKMARK":
            if rv:
                self.resource_version = rv
                self.sink(ReflectorEvent(EventType.PROGRESS, "", None, rv))
            return
        key = object_key(event.object)
        if event.type == "DELETED":
            self.cache.pop(key, None)
            self.sink(ReflectorEvent(EventType.DELETED, key, event.object, rv))
        elif event.type in ("ADDED", "MODIFIED"):
            self.cache[key] = event.object
            self.sink(ReflectorEvent(EventType(event.type), key, event.object, rv))
        else:  # a type from a newer server: skip it rather than stop on it
            log.warning("%s: ignoring a watch event of unknown type %r", self.name, event.type)
            return
        if rv:
            self.resource_version = rv
