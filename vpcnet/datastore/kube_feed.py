"""The Kubernetes store's event feed: per-kind reflectors write into it, `snapshot` and `watch` read from it.

Why a log: a consumer takes a snapshot (the reflectors' caches) and then starts a watch from "the snapshot's
revision + 1", possibly after other awaits. Each kind has its own watch and its own resume point, so that
revision cannot select events across kinds exactly. Instead every snapshot marks the log position it was
taken at, and a watch from that revision + 1 replays the log from the earliest position handed out for that
revision: possibly a few events already in the snapshot again (each is an object's whole state, applied in
order, so replaying a suffix converges), never one missed. A watch from a revision this store did not hand
out, or one whose position fell off the bounded log, gets WatchCompacted: take a snapshot again, exactly as
over etcd.

The revision of a snapshot is the smallest of the kinds' resume points: every change of every one of those
kinds up to it is in the snapshot. progress(R) markers are queued behind the events they cover.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

from vpcnet.datastore.resources import ResourceEvent
from vpcnet.datastore.types import WatchCompacted

LOG_ENTRIES = 50_000


@dataclass(frozen=True)
class Progress:
    revision: int


@dataclass(eq=False)
class Subscriber:
    kinds: frozenset[str]
    queue: asyncio.Queue[ResourceEvent | Progress] = field(default_factory=asyncio.Queue)


class EventFeed:
    def __init__(self, max_entries: int = LOG_ENTRIES) -> None:
        self.max_entries = max_entries
        self.seq = 0  # position of the newest entry
        self.entries: deque[tuple[int, str, ResourceEvent]] = deque()
        self.progress: dict[str, int] = {}  # kind -> every change up to this revision is in the log
        self.marks: dict[int, int] = {}  # revision handed out -> the earliest log position for it
        self.subscribers: set[Subscriber] = set()

    def record(self, kind: str, event: ResourceEvent) -> None:
        self.seq += 1
        self.entries.append((self.seq, kind, event))
        while len(self.entries) > self.max_entries:
            self.entries.popleft()
        first = self.entries[0][0]
        if len(self.marks) > 1024 or (self.marks and min(self.marks.values()) < first - 1):
            self.marks = {r: s for r, s in self.marks.items() if s >= first - 1}
        for sub in self.subscribers:
            if kind in sub.kinds:
                sub.queue.put_nowait(event)

    def advance(self, kind: str, revision: int) -> None:
        if revision <= self.progress.get(kind, 0):
            return
        self.progress[kind] = revision
        for sub in self.subscribers:
            if kind in sub.kinds:
                sub.queue.put_nowait(Progress(self.revision_of(sub.kinds)))

    def revision_of(self, kinds: Collection[str]) -> int:
        return min((self.progress.get(kind, 0) for kind in kinds), default=0)

    def mark(self, kinds: Collection[str]) -> int:
        """The revision of a snapshot taken now, remembered for a watch from it + 1."""
        revision = self.revision_of(kinds)
        self.marks.setdefault(revision, self.seq)
        return revision

    def subscribe(self, kinds: Collection[str], start_revision: int) -> Subscriber:
        kinds = frozenset(kinds)
        base = self.marks.get(start_revision - 1)
        first = self.entries[0][0] if self.entries else self.seq + 1
        if base is None or base < first - 1:
            raise WatchCompacted(",".join(sorted(kinds)), start_revision, self.revision_of(kinds))
        sub = Subscriber(kinds)
        for seq, kind, event in self.entries:
            if seq > base and kind in kinds:
                sub.queue.put_nowait(event)
        sub.queue.put_nowait(Progress(self.revision_of(kinds)))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
