"""An in-memory stand-in for one kind behind the Kubernetes list/watch API, for the reflector's unit tests.

It keeps a revision counter and the history of changes as an etcd-backed API server does, and can be
made to misbehave the ways a real one does: compaction (watches from before it get 410), cut streams,
streams that end cleanly, streams that go silent, and whole outages (a restart).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vpcnet.datastore.reflector import Gone, ListResult, WatchEvent, object_key


@dataclass
class Change:
    rv: int
    type: str
    object: dict[str, Any]


class FakeListWatch:
    def __init__(self, *, bookmarks: bool = True) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rv = 100
        self.history: list[Change] = []
        self.compacted = 0  # watches from a revision below this get Gone
        self.bookmarks = bookmarks  # send a BOOKMARK when a stream has caught up
        self.down = False  # every call fails (an API server restart)
        self.hang = False  # open streams go silent, new ones too
        self.drop_next = False  # lose the next change from watch streams (a server bug: only relist repairs)
        self.generation = 0  # bumped to cut every open stream
        self.ending = 0  # bumped to end every open stream cleanly
        self.watch_calls: list[tuple[str, bool, int]] = []
        self.list_calls = 0
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ writes (the source of truth)

    def _record(self, type_: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if type_ == "DELETED":
            self.objects.pop(object_key(obj), None)
        else:
            self.objects[object_key(obj)] = obj
        if self.drop_next:
            self.drop_next = False
        else:
            self.history.append(Change(self.rv, type_, obj))
        self._wake()

    def put(self, name: str, value: int, namespace: str | None = "default") -> None:
        meta: dict[str, Any] = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        key = object_key({"metadata": meta})
        self._record("MODIFIED" if key in self.objects else "ADDED", {"metadata": meta, "spec": {"v": value}})

    def delete(self, name: str, namespace: str | None = "default") -> None:
        key = f"{namespace}/{name}" if namespace else name
        if key in self.objects:
            self._record("DELETED", self.objects[key])

    def compact(self) -> None:
        self.compacted = self.rv
        self.history = [c for c in self.history if c.rv > self.compacted]

    def cut(self) -> None:
        self.generation += 1
        self._wake()

    def end_streams(self) -> None:
        self.ending += 1
        self._wake()

    def set_hang(self, hang: bool) -> None:
        self.hang = hang
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ the API (ListerWatcher)

    async def list(self) -> ListResult:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("connection refused (API server down)")
        self.list_calls += 1
        return ListResult([copy.deepcopy(o) for o in self.objects.values()], str(self.rv))

    async def watch(
        self, resource_version: str, *, allow_bookmarks: bool, timeout_seconds: int
    ) -> AsyncIterator[WatchEvent]:
        self.watch_calls.append((resource_version, allow_bookmarks, timeout_seconds))
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("connection refused (API server down)")
        position = int(resource_version)
        if position < self.compacted:
            raise Gone(f"too old resource version: {position} ({self.compacted})")
        generation, ending = self.generation, self.ending
        while True:
            if self.down or generation != self.generation:
                raise ConnectionError("connection reset by peer")
            if ending != self.ending:
                return
            if not self.hang:
                if position < self.compacted:
                    raise Gone(f"too old resource version: {position} ({self.compacted})")
                pending = [c for c in self.history if c.rv > position]
                for change in pending:
                    yield WatchEvent(change.type, copy.deepcopy(change.object))
                    position = change.rv
                if not pending and allow_bookmarks and self.bookmarks and position < self.rv:
                    position = self.rv
                    yield WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": str(position)}})
            await self._changed.wait()
