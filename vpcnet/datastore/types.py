"""The datastore interface: a revisioned key-value store with compare-and-swap, transactions and watches.

etcd v3 is the implementation today (vpcnet/datastore/etcd.py); a Kubernetes API backend can implement the
same Protocol later. Keys are text; values are bytes. Every write answers with the store revision it made,
and every compare-and-swap names the `mod_revision` it expects (0 means "the key must not exist").
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class DatastoreError(Exception):
    """Something went wrong talking to the datastore; the message says what."""


class DatastoreUnavailable(DatastoreError):
    """No endpoint answered; the outcome of a write that raised this is unknown (re-read before retrying)."""


class WatchCompacted(DatastoreError):
    """The revision a watch wanted to start from was compacted away: list again and watch from there."""

    def __init__(self, prefix: str, start_revision: int, compact_revision: int) -> None:
        super().__init__(
            f"watch of {prefix!r} from revision {start_revision}: history compacted up to {compact_revision}"
        )
        self.prefix = prefix
        self.start_revision = start_revision
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int  # writes since creation; 0 never appears for an existing key
    lease: int = 0


@dataclass(frozen=True)
class Listing:
    """The keys under a prefix as of one store revision: watch from `revision + 1` to miss nothing."""

    items: list[KeyValue]
    revision: int


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    key: str
    value: bytes | None  # None on DELETE
    revision: int  # the store revision of the change (the key's mod_revision for a PUT)
    create_revision: int = 0  # 0 on DELETE


# Operations of one transaction: all conditions hold and every write is applied, or nothing is.
@dataclass(frozen=True)
class RevisionIs:
    """Condition: the key's mod_revision equals `mod_revision` (0: the key does not exist)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class PutOp:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class DeleteOp:
    key: str


Condition = RevisionIs
WriteOp = PutOp | DeleteOp


class Datastore(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write unconditionally; returns the new store revision."""
        ...

    async def create(self, key: str, value: bytes, lease: int = 0) -> int | None:
        """Write only if the key is absent; the new revision, or None when the key exists."""
        ...

    async def compare_and_swap(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> int | None:
        """Write only if the key's mod_revision is still `mod_revision`; new revision, None on conflict."""
        ...

    async def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete (only at `mod_revision` when given); False when absent or changed meanwhile."""
        ...

    async def list(self, prefix: str) -> Listing: ...

    async def commit(self, conditions: Sequence[Condition], writes: Sequence[WriteOp]) -> int | None:
        """One atomic transaction; the new revision, or None when a condition failed (nothing written)."""
        ...

    def watch(
        self, prefix: str, start_revision: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Every change under prefix from start_revision on, in order; survives reconnects without losing
        or repeating an event; raises WatchCompacted when history is gone. progress(R), when given, is
        called now and then with a revision R up to which every event has been yielded."""
        ...

    async def grant_lease(self, ttl_seconds: int) -> int: ...

    async def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease; its remaining TTL (0 or less: expired)."""
        ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    async def current_revision(self) -> int: ...

    async def close(self) -> None: ...


def prefix_range_end(prefix: str) -> bytes:
    """The first key after every key that starts with prefix (etcd's range_end for a prefix)."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"  # the prefix is all 0xff: to the end of the keyspace
