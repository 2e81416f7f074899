"""Watch streams as the real server sends them: ADDED / MODIFIED / DELETED for the changes after a
resourceVersion, BOOKMARK now and then when asked for, ERROR 410 Expired when that version was compacted.

With a selector, an object that starts matching arrives as ADDED and one that stops matching as DELETED,
as in the real server; to know whether an object matched before a change we read its previous revision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vpcnet.datastore.types import EventType, WatchCompacted, WatchEvent
from vpcnet.lab.kubeapi.errors import ApiError, expired
from vpcnet.lab.kubeapi.resources import ResourceType
from vpcnet.lab.kubeapi.selectors import Selector
from vpcnet.lab.kubeapi.storage import ObjectStore, decode

log = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(frozen=True)
class WatchSpec:
    rt: ResourceType
    namespace: str | None
    selector: Selector | None
    start: int | None  # None: first the current objects as ADDED (no resourceVersion, or "0")
    bookmarks: bool
    timeout: float  # seconds; the stream then ends cleanly
    bookmark_interval: float


def bookmark(rt: ResourceType, revision: int) -> Event:
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(revision)},
        },
    }


def error_event(err: ApiError) -> Event:
    return {"type": "ERROR", "object": err.status()}


class _Translator:
    """etcd events -> API watch events for one watch (remembers which keys matched its selector)."""

    def __init__(self, store: ObjectStore, spec: WatchSpec) -> None:
        self.store = store
        self.spec = spec
        self.matched: dict[str, bool] = {}

    async def _matched_before(self, event: WatchEvent) -> bool:
        known = self.matched.get(event.key)
        if known is not None:
            return known
        if event.type is EventType.PUT and event.create_revision == event.revision:
            return False  # created by this very event
        previous = await self.store.get_at(event.key, event.revision - 1)
        return previous is not None and (self.spec.selector is None or self.spec.selector(previous))

    async def translate(self, event: WatchEvent) -> Event | None:
        rt, select = self.spec.rt, self.spec.selector
        if event.type is EventType.DELETE:
            previous = await self.store.get_at(event.key, event.revision - 1)
            was = self.matched.pop(event.key, None)
            if previous is None:
                return None
            if select is not None and not (was if was is not None else select(previous)):
                return None
            previous["metadata"]["resourceVersion"] = str(event.revision)
            return {"type": "DELETED", "object": self.store.with_version(rt, previous)}
        assert event.value is not None
        obj = self.store.with_version(rt, decode(event.value, event.revision))
        if select is None:
            kind = "ADDED" if event.create_revision == event.revision else "MODIFIED"
            return {"type": kind, "object": obj}
        was, now = await self._matched_before(event), select(obj)
        self.matched[event.key] = now
        if now:
            return {"type": "MODIFIED" if was else "ADDED", "object": obj}
        return {"type": "DELETED", "object": obj} if was else None


async def _pump(
    store: ObjectStore, spec: WatchSpec, start: int, queue: asyncio.Queue[tuple[str, Any]]
) -> None:
    translator = _Translator(store, spec)
    try:
        async for change in store.watch(
            spec.rt, spec.namespace, start + 1, lambda r: queue.put_nowait(("progress", r))
        ):
            event = await translator.translate(change)
            if event is not None:
                queue.put_nowait(("event", event))
    except WatchCompacted as err:
        message = f"too old resource version: {start} ({err.compact_revision})"
        queue.put_nowait(("event", error_event(expired(message))))
    except Exception as err:  # the stream ends with the reason rather than hanging
        log.exception("watch of %s failed", spec.rt.plural)
        queue.put_nowait(("event", error_event(ApiError(500, "InternalError", f"watch failed: {err}"))))
    queue.put_nowait(("end", None))


async def watch_events(store: ObjectStore, spec: WatchSpec) -> AsyncIterator[Event]:
    """The events of one watch request, until its timeout, an error, or the consumer stops."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.timeout
    start = spec.start
    if start is None:
        items, start = await store.list(spec.rt, spec.namespace)
        for obj in items:
            if spec.selector is None or spec.selector(obj):
                yield {"type": "ADDED", "object": obj}
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    producer = asyncio.create_task(_pump(store, spec, start, queue))
    last_bookmark = loop.time()
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                what, payload = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                return
            if what == "end":
                return
            if what == "event":
                yield payload
            elif spec.bookmarks and loop.time() - last_bookmark >= spec.bookmark_interval:
                last_bookmark = loop.time()
                yield bookmark(spec.rt, payload)
    finally:
        producer.cancel()
        await asyncio.wait([producer])  # let it unwind; its outcome is already in the queue or moot
