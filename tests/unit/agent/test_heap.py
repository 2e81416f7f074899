"""The agent's heap settling: young garbage is reclaimed before the rest is frozen, and the policy loop
settles after a snapshot and after every so many events."""

from __future__ import annotations

import gc
import weakref

from vpcnet.agent.heap import HeapSettler, settle


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_reclaims_young_garbage_cycles_then_freezes_the_rest() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection between making the cycle and settling
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        alive = Node()
        del a, b
        assert gone() is not None  # a garbage cycle, not yet collected
        settle()
        # Frozen while garbage, the cycle would never be reclaimed: it must be collected first.
        assert gone() is None
        assert gc.get_freeze_count() > 0 and alive is not None
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def test_the_settler_settles_after_a_snapshot_and_after_enough_events() -> None:
    calls: list[int] = []
    settler = HeapSettler(every=5, settle=lambda: calls.append(1))
    settler.after_apply(snapshot=True)
    assert len(calls) == 1
    settler.after_apply(events=3)
    assert len(calls) == 1  # 3 events: not yet
    settler.after_apply(events=2)
    assert len(calls) == 2 and settler.pending == 0
    settler.after_apply()
    assert len(calls) == 2
