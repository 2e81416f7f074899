"""The etcd datastore against a real etcd: CAS, transactions, paged lists, leases, watches across restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from etcd_fixture import EtcdServer

from vpcnet.datastore import etcd as etcd_module
from vpcnet.datastore.etcd import EtcdDatastore
from vpcnet.datastore.settings import EtcdSettings
from vpcnet.datastore.types import (
    DatastoreUnavailable,
    DeleteOp,
    EventType,
    PutOp,
    RevisionIs,
    WatchCompacted,
    WatchEvent,
)

pytestmark = pytest.mark.root

T = TypeVar("T")


def run(server: EtcdServer, body: Callable[[EtcdDatastore], Awaitable[T]], **settings: float) -> T:
    async def main() -> T:
        store = EtcdDatastore(server.settings(**settings))
        try:
            return await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    return asyncio.run(main())


def test_get_put_create_cas_delete(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    key = etcd_prefix + "k"

    async def body(ds: EtcdDatastore) -> None:
        assert await ds.get(key) is None
        rev1 = await ds.create(key, b"one")
        assert rev1 is not None
        assert await ds.create(key, b"again") is None  # exists: refused
        kv = await ds.get(key)
        assert kv is not None and kv.value == b"one" and kv.mod_revision == rev1 and kv.version == 1
        rev2 = await ds.compare_and_swap(key, b"two", rev1)
        assert rev2 is not None and rev2 > rev1
        assert await ds.compare_and_swap(key, b"stale", rev1) is None  # lost the race: nothing written
        assert (await ds.get(key)).value == b"two"  # type: ignore[union-attr]
        assert await ds.delete(key, mod_revision=rev1) is False  # CAS delete at an old revision
        assert await ds.get(key) is not None
        assert await ds.delete(key, mod_revision=rev2) is True
        assert await ds.get(key) is None
        assert await ds.delete(key) is False
        rev3 = await ds.put(key, b"three")
        assert await ds.current_revision() >= rev3

    run(etcd_server, body)


def test_commit_is_all_or_nothing(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    a, b, c = (etcd_prefix + n for n in "abc")

    async def body(ds: EtcdDatastore) -> None:
        rev_a = await ds.put(a, b"1")
        await ds.put(c, b"gone soon")
        # One condition fails (b must be absent but we claim a revision for it): nothing is written.
        assert (
            await ds.commit([RevisionIs(a, rev_a), RevisionIs(b, 12345)], [PutOp(a, b"2"), PutOp(b, b"2")])
            is None
        )
        assert (await ds.get(a)).value == b"1"  # type: ignore[union-attr]
        assert await ds.get(b) is None
        rev = await ds.commit(
            [RevisionIs(a, rev_a), RevisionIs(b, 0)], [PutOp(a, b"2"), PutOp(b, b"2"), DeleteOp(c)]
        )
        assert rev is not None
        listing = await ds.list(etcd_prefix)
        assert [(kv.key, kv.value, kv.mod_revision) for kv in listing.items] == [
            (a, b"2", rev),
            (b, b"2", rev),
        ]

    run(etcd_server, body)


def test_list_pages_are_pinned_to_one_revision(
    etcd_server: EtcdServer, etcd_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_module, "_LIST_PAGE", 7)

    async def body(ds: EtcdDatastore) -> None:
        for i in range(30):
            await ds.put(f"{etcd_prefix}{i:03d}", str(i).encode())
        await ds.put(etcd_prefix[:-1] + "X", b"outside the prefix")
        listing = await ds.list(etcd_prefix)
        assert [kv.value for kv in listing.items] == [str(i).encode() for i in range(30)]
        assert listing.revision == await ds.current_revision()

    run(etcd_server, body)


def test_lease_expiry_removes_keys(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    key = etcd_prefix + "leased"

    async def body(ds: EtcdDatastore) -> None:
        lease = await ds.grant_lease(30)
        assert await ds.keep_alive(lease) > 0
        await ds.put(key, b"x", lease=lease)
        assert (await ds.get(key)).lease == lease  # type: ignore[union-attr]
        await ds.revoke_lease(lease)
        assert await ds.get(key) is None
        await ds.revoke_lease(lease)  # twice is fine

    run(etcd_server, body)


async def _collect(ds: EtcdDatastore, prefix: str, start: int, count: int, into: list[WatchEvent]) -> None:
    async for event in ds.watch(prefix, start):
        into.append(event)
        if len(into) == count:
            return


def test_watch_from_revision_sees_history_and_filters_prefix(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    async def body(ds: EtcdDatastore) -> None:
        start = await ds.current_revision() + 1
        await ds.put(etcd_prefix + "a", b"1")
        await ds.put("/elsewhere" + etcd_prefix, b"not ours")
        await ds.put(etcd_prefix + "a", b"2")
        await ds.delete(etcd_prefix + "a")
        events: list[WatchEvent] = []
        await _collect(ds, etcd_prefix, start, 3, events)
        assert [(e.type, e.key, e.value) for e in events] == [
            (EventType.PUT, etcd_prefix + "a", b"1"),
            (EventType.PUT, etcd_prefix + "a", b"2"),
            (EventType.DELETE, etcd_prefix + "a", None),
        ]
        assert events[0].revision < events[1].revision < events[2].revision

    run(etcd_server, body)


def test_watch_resumes_after_etcd_restart_without_loss_or_repeat(
    fresh_etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    server = fresh_etcd_server

    async def body(ds: EtcdDatastore) -> None:
        start = await ds.current_revision() + 1
        events: list[WatchEvent] = []
        watcher = asyncio.create_task(_collect(ds, etcd_prefix, start, 40, events))
        for i in range(10):
            await ds.put(f"{etcd_prefix}k{i}", b"before")
        while len(events) < 10:
            await asyncio.sleep(0.01)
        # Kill etcd hard, bring it back, and write at once: the watcher is still reconnecting.
        await asyncio.to_thread(server.restart)
        for i in range(10, 40):
            await ds.put(f"{etcd_prefix}k{i}", b"after")
        await watcher
        assert [e.key for e in events] == [f"{etcd_prefix}k{i}" for i in range(40)]
        assert len({e.revision for e in events}) == 40

    run(server, body)


def test_watch_from_compacted_revision_raises(fresh_etcd_server: EtcdServer, etcd_prefix: str) -> None:
    async def body(ds: EtcdDatastore) -> None:
        first = await ds.put(etcd_prefix + "a", b"1")
        last = await ds.put(etcd_prefix + "a", b"2")
        await ds.compact(last)
        with pytest.raises(WatchCompacted) as info:
            await _collect(ds, etcd_prefix, first, 1, [])
        assert info.value.compact_revision == last
        # From the compaction point on, the watch works.
        events: list[WatchEvent] = []
        await _collect(ds, etcd_prefix, last, 1, events)
        assert events[0].value == b"2"

    run(fresh_etcd_server, body)


def test_second_endpoint_answers_when_first_is_dead(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    dead = EtcdSettings.from_strings(["127.0.0.1:1"]).endpoints[0]
    live = etcd_server.settings().endpoints[0]

    async def main() -> None:
        ds = EtcdDatastore(
            EtcdSettings(endpoints=(dead, live), request_timeout=2, unavailable_retry_seconds=5)
        )
        try:
            assert await ds.get(etcd_prefix + "nothing") is None  # read moves on to the live endpoint
            await ds.put(etcd_prefix + "x", b"1")
        finally:
            await ds.close()

    asyncio.run(main())


def test_only_dead_endpoint_is_a_clear_error(etcd_prefix: str) -> None:
    async def main() -> None:
        ds = EtcdDatastore(
            EtcdSettings.from_strings(["127.0.0.1:1"], request_timeout=1, unavailable_retry_seconds=0.5)
        )
        try:
            with pytest.raises(DatastoreUnavailable, match=r"127\.0\.0\.1:1"):
                await ds.get(etcd_prefix + "x")
            with pytest.raises(DatastoreUnavailable):
                await ds.put(etcd_prefix + "x", b"1")
        finally:
            await ds.close()

    asyncio.run(main())


def test_watch_progress_follows_other_keys_and_never_runs_ahead_of_events(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    """progress(R) comes for changes outside the prefix too, and only after every event up to R was
    yielded: what `vpcnet lab wait` relies on through the policy agent."""

    async def body(ds: EtcdDatastore) -> None:
        start = await ds.current_revision() + 1
        yielded: list[int] = []
        ahead: list[tuple[int, int]] = []  # (progress, last event yielded) where an event was missing
        reported: list[int] = []
        ours: list[int] = []

        def progress(revision: int) -> None:
            reported.append(revision)
            missing = [r for r in ours if r <= revision and r not in yielded]
            if missing:
                ahead.append((revision, max(yielded, default=0)))

        async def consume() -> None:
            async for event in ds.watch(etcd_prefix, start, progress):
                yielded.append(event.revision)

        task = asyncio.create_task(consume())
        try:
            for i in range(20):
                ours.append(await ds.put(etcd_prefix + f"k{i % 3}", str(i).encode()))
                await ds.put("/elsewhere" + etcd_prefix, str(i).encode())
            last = await ds.put("/elsewhere" + etcd_prefix, b"last")
            for _ in range(100):
                if reported and reported[-1] >= last:
                    break
                await asyncio.sleep(0.05)
            assert reported and reported[-1] >= last, "progress reaches a change outside the prefix"
            assert yielded == ours and ahead == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(etcd_server, body)
