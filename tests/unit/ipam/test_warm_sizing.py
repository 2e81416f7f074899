"""Adaptive sizing against EC2's latency: a burst shape the pool has seen is served without waiting for EC2,
with the pool sized by the arrivals of one refill's lead (not more), and its surplus given back lazily."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from vpcnode import key, make_node, run, settle

from vpcnet.ipam.warm import ArrivalForecast, WarmTargets


@settings(max_examples=12, deadline=None)
@given(
    size=st.integers(3, 6),
    spread=st.floats(0.25, 0.45),
    gap=st.floats(400.0, 900.0),
    share=st.floats(0.05, 1.0),
)
def test_a_burst_seen_before_never_waits_for_ec2(size: int, spread: float, gap: float, share: float) -> None:
    """Bursts of `size` pods over `spread` s (just under the 0.5 s an assign takes), many minutes apart (a
    batch alone would not cover one): none waits for EC2, and between bursts the pool holds the burst and one
    more free. Fails if the refill window shrinks below the lead or the band drops the burst."""
    node = make_node("m5.large")  # 3 ENIs x 9 addresses: two bursts live fit
    life = share * gap

    async def body() -> None:
        a = node.allocator(WarmTargets(adaptive=True), cooldown=30.0)
        await a.start()
        await settle(60)
        n = 0

        async def pod(i: int, delay: float) -> None:
            await asyncio.sleep(delay)
            await a.assign(key(i), "ns", f"p{i}")
            await asyncio.sleep(life)
            await a.release(key(i))

        tasks = []
        for _ in range(int(3600 / gap)):  # past the cold start (its first 15 minutes hold an ENI's worth)
            tasks += [asyncio.create_task(pod(n + i, spread * i / size)) for i in range(size)]
            n += size
            await asyncio.sleep(gap)
            s = a.stats()
            # free = total - used (assigned + cooling): what the next burst can have without a call
            assert s.total - s.assigned - s.cooling >= size + 1
        await asyncio.gather(*tasks)
        assert a.counters.waited_for_ec2 == 0
        await a.stop()

    run(body)


@given(times=st.lists(st.floats(0.0, 3000.0), min_size=1, max_size=40), window=st.floats(0.1, 5.0))
def test_the_forecast_covers_every_window_of_the_history(times: list[float], window: float) -> None:
    f = ArrivalForecast(history=3600, cold_floor=0, started=-1000.0)
    for t in sorted(times):
        f.record(t)
    now = max(times)
    worst = max(sum(1 for u in times if t <= u <= t + window) for t in times)
    assert f.forecast(now, window) >= worst + 1  # the pool holds the worst burst of a window, and one more
