"""The reflector against an in-memory list/watch source: each behaviour, then convergence under random
sequences of changes, cuts, compactions, silent streams and outages (hypothesis)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from fake_listwatch import FakeListWatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpcnet.datastore.reflector import EventType, Reflector, ReflectorEvent, ReflectorSettings, object_rv

FAST = ReflectorSettings(
    watch_timeout=300, idle_timeout=0.2, hang_grace=0.1, resync_period=0, backoff_base=0.001, backoff_cap=0.01
)
DEADLINE = 15.0


class Consumer:
    """The view a consumer builds from the events alone."""

    def __init__(self) -> None:
        self.view: dict[str, dict[str, Any]] = {}
        self.events: list[ReflectorEvent] = []

    def __call__(self, event: ReflectorEvent) -> None:
        self.events.append(event)
        if event.type is EventType.DELETED:
            assert event.key in self.view, f"DELETED for {event.key}, which the consumer never saw"
            del self.view[event.key]
        elif event.type in (EventType.ADDED, EventType.MODIFIED):
            assert event.object is not None
            self.view[event.key] = event.object

    def of(self, *types: EventType) -> list[tuple[EventType, str]]:
        return [(e.type, e.key) for e in self.events if e.type in types]


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def converged(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> bool:
    return consumer.view == api.objects and reflector.cache == api.objects


def run(body: Callable[[FakeListWatch, Reflector, Consumer], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        api = FakeListWatch(bookmarks=kwargs.pop("bookmarks", True))
        consumer = Consumer()
        reflector = Reflector("test", api, consumer, kwargs.pop("settings", FAST), rng=random.Random(7))
        task = asyncio.create_task(reflector.run())
        try:
            await body(api, reflector, consumer)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_lists_then_watches_from_the_lists_version_with_bookmarks() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        await until(lambda: reflector.synced.is_set(), "sync")
        assert api.list_calls == 1
        await until(lambda: bool(api.watch_calls), "a watch")
        rv, bookmarks, timeout = api.watch_calls[0]
        assert rv == "100" and bookmarks and 300 <= timeout <= 600
        api.put("a", 1)
        api.put("b", 1, namespace=None)
        api.put("a", 2)
        api.delete("b", namespace=None)
        await until(lambda: converged(api, reflector, consumer), "convergence")
        assert consumer.of(EventType.ADDED, EventType.MODIFIED, EventType.DELETED) == [
            (EventType.ADDED, "default/a"),
            (EventType.ADDED, "b"),
            (EventType.MODIFIED, "default/a"),
            (EventType.DELETED, "b"),
        ]
        assert api.list_calls == 1 and reflector.resource_version == str(api.rv)

    run(body)


def test_a_cut_watch_resumes_from_the_last_event_or_bookmark_without_relisting() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        api.put("a", 1)
        await until(lambda: converged(api, reflector, consumer), "a")
        api.cut()
        await until(lambda: len(api.watch_calls) == 2, "a second watch")
        assert api.watch_calls[1][0] == str(api.rv)  # resumed from a's version
        api.put("other", 1)
        api.delete("other")  # moves the revision on...
        await until(lambda: reflector.resource_version == str(api.rv), "the bookmark")
        assert consumer.of(EventType.PROGRESS) or consumer.of(EventType.DELETED)
        api.put("b", 1)
        api.cut()
        await until(lambda: converged(api, reflector, consumer), "b after the cut")
        assert api.list_calls == 1  # never relisted: resumed each time
        watched_from = [int(call[0]) for call in api.watch_calls]
        assert watched_from == sorted(watched_from)
        added = consumer.of(EventType.ADDED)
        assert len(added) == len(set(added)), f"an event was delivered twice: {added}"

    run(body)


def test_bookmarks_move_the_resume_point_of_a_quiet_kind() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        await until(lambda: reflector.synced.is_set(), "sync")
        api.rv += 50  # other kinds were written: this kind hears only a bookmark
        api.end_streams()
        await until(lambda: reflector.resource_version == "150", "the bookmark's version")
        assert consumer.events[-1] == ReflectorEvent(EventType.PROGRESS, "", None, "150")
        api.compact()  # compacted to 150: a resume from 150 still works, from 100 would not
        api.cut()
        api.put("a", 1)
        await until(lambda: converged(api, reflector, consumer), "a")
        assert api.list_calls == 1

    run(body)


def test_on_410_it_relists_and_synthesizes_the_gap() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        for name in ("keep", "change", "vanish", "recreate"):
            api.put(name, 1)
        await until(lambda: converged(api, reflector, consumer), "first four")
        api.set_hang(True)  # the stream goes quiet while the gap opens
        api.put("change", 2)
        api.delete("vanish")
        api.delete("recreate")
        api.put("recreate", 1)
        api.put("new", 1)
        api.compact()
        consumer.events.clear()
        api.set_hang(False)
        api.cut()
        await until(lambda: converged(api, reflector, consumer), "convergence after 410")
        assert reflector.stats.gone == 1 and api.list_calls == 2
        gap = consumer.of(EventType.ADDED, EventType.MODIFIED, EventType.DELETED)
        assert len(gap) == 4 and set(gap) == {
            (EventType.MODIFIED, "default/change"),
            (EventType.DELETED, "default/vanish"),
            (EventType.MODIFIED, "default/recreate"),  # a new object under the same name
            (EventType.ADDED, "default/new"),
        }
        deleted = next(e for e in consumer.events if e.type is EventType.DELETED)
        assert deleted.object is not None and object_rv(deleted.object) != deleted.resource_version
        assert deleted.resource_version == str(api.rv)  # the list's version

    run(body)


def test_resync_relists_and_repairs_what_the_watch_lost() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        api.put("a", 1)
        await until(lambda: converged(api, reflector, consumer), "a")
        api.drop_next = True  # the stream never carries this change
        api.put("a", 2)
        await until(lambda: converged(api, reflector, consumer), "the resync's repair")
        assert api.list_calls >= 2
        before = len(consumer.of(EventType.ADDED, EventType.MODIFIED, EventType.DELETED))
        lists = api.list_calls
        await until(lambda: api.list_calls >= lists + 2, "two more resyncs")
        after = len(consumer.of(EventType.ADDED, EventType.MODIFIED, EventType.DELETED))
        assert after == before  # a resync that finds nothing new says nothing

    settings = ReflectorSettings(**{**FAST.__dict__, "resync_period": 0.2})
    run(body, settings=settings)


def test_a_silent_watch_is_detected_and_restarted_from_the_same_version() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        api.put("a", 1)
        await until(lambda: converged(api, reflector, consumer), "a")
        api.set_hang(True)
        await until(lambda: reflector.stats.hung >= 1, "hang detection")
        api.set_hang(False)
        api.put("b", 1)
        await until(lambda: converged(api, reflector, consumer), "b after the hang")
        assert api.list_calls == 1
        assert {call[0] for call in api.watch_calls[1:]} >= {str(api.rv - 1)}

    run(body, bookmarks=False)


def test_a_watch_open_past_its_timeout_is_treated_as_hung() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        # Bookmarks keep coming (so it never looks idle) but the server never ends the stream.
        loop = asyncio.get_running_loop()
        started = loop.time()
        while reflector.stats.hung == 0:
            api.rv += 1
            api._wake()
            await asyncio.sleep(0.02)
            assert loop.time() - started < DEADLINE
        assert loop.time() - started >= 1.0  # not before timeoutSeconds (>= 1) + grace

    settings = ReflectorSettings(**{**FAST.__dict__, "watch_timeout": 0.5})
    run(body, settings=settings)


def test_errors_back_off_exponentially_with_full_jitter() -> None:
    class RecordingRandom(random.Random):
        def __init__(self) -> None:
            super().__init__(1)
            self.ceilings: list[float] = []

        def uniform(self, a: float, b: float) -> float:
            if a == 0:
                self.ceilings.append(b)
            return super().uniform(a, b)

    async def main() -> None:
        api = FakeListWatch()
        api.down = True
        consumer = Consumer()
        rng = RecordingRandom()
        settings = ReflectorSettings(**{**FAST.__dict__, "backoff_base": 0.001, "backoff_cap": 0.008})
        reflector = Reflector("test", api, consumer, settings, rng=rng)
        task = asyncio.create_task(reflector.run())
        await until(lambda: len(rng.ceilings) >= 6, "six retries")
        assert rng.ceilings[:6] == [0.001, 0.002, 0.004, 0.008, 0.008, 0.008]
        assert reflector.stats.errors >= 6 and "API server down" in reflector.stats.last_error
        api.down = False
        api.put("a", 1)
        await until(lambda: converged(api, reflector, consumer), "recovery")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_api_restart_with_compaction_and_deletions_converges() -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        for i in range(5):
            api.put(f"p{i}", i)
        await until(lambda: converged(api, reflector, consumer), "five")
        api.down = True
        api.cut()
        api.delete("p1")
        api.delete("p3")
        api.put("p4", 40)
        api.compact()
        await asyncio.sleep(0.05)
        api.down = False
        await until(lambda: converged(api, reflector, consumer), "convergence after the restart")
        assert reflector.stats.gone == 1

    run(body)


# ---------------------------------------------------------------------- random histories

NAMES = st.sampled_from(["a", "b", "c", "d"])
OPERATIONS = st.one_of(
    st.tuples(st.just("put"), NAMES, st.integers(0, 3)),
    st.tuples(st.just("delete"), NAMES, st.just(0)),
    st.tuples(
        st.sampled_from(["compact", "cut", "end", "hang", "down", "drop", "settle"]), st.just(""), st.just(0)
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(OPERATIONS, max_size=25), bookmarks=st.booleans(), resync=st.booleans())
def test_the_view_converges_to_the_source_whatever_happens(
    operations: list[tuple[str, str, int]], bookmarks: bool, resync: bool
) -> None:
    async def body(api: FakeListWatch, reflector: Reflector, consumer: Consumer) -> None:
        dropped = False
        for op, name, value in operations:
            if op == "put":
                api.put(name, value)
            elif op == "delete":
                api.delete(name)
            elif op == "compact":
                api.compact()
            elif op == "cut":
                api.cut()
            elif op == "end":
                api.end_streams()
            elif op == "hang":
                api.set_hang(not api.hang)
            elif op == "down":
                api.down = not api.down
                api.cut()
            elif op == "drop":
                dropped = dropped or resync  # only a resync can repair a lost event
                api.drop_next = resync
            await asyncio.sleep(0.01 if op == "settle" else 0)
        api.down = False
        api.set_hang(False)
        await until(lambda: converged(api, reflector, consumer), "convergence")
        if bookmarks and not dropped:  # caught up: the resume point is the source's present
            await until(lambda: reflector.resource_version == str(api.rv), "the resume point")

    settings = ReflectorSettings(**{**FAST.__dict__, "resync_period": 0.3 if resync else 0})
    run(body, bookmarks=bookmarks, settings=settings)
