from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpcnet.ipam.warm_oracle import (
    PodLife,
    assigned_curve,
    budgeted_oracle,
    held_curve,
    integral,
    oracle,
    pieces_of,
    used_curve,
)


def test_one_pod_held_from_one_lead_before_until_its_cooldown_ends() -> None:
    # used = 1 on [10, 25); held = 1 on [9, 25); assigned on [10, 20): idle area 16 - 10 = 6
    r = oracle([PodLife(10, 20)], lead=1.0, cooldown=5.0, span=(0.0, 25.0))
    assert r.mean_idle == pytest.approx(6 / 25)
    assert r.mean_held == pytest.approx(16 / 25)
    assert r.peak_held == 1


def test_a_gap_shorter_than_the_lead_is_bridged() -> None:
    # A on [0, 10), B on [10.5, 20), no cooldown, lead 1: the address is kept over the 0.5 s gap
    r = oracle([PodLife(0, 10), PodLife(10.5, 20)], lead=1.0, cooldown=0.0, span=(0.0, 20.0))
    assert r.mean_idle == pytest.approx(0.5 / 20)
    # a gap longer than the lead is not: the address goes back 1 s before it is needed again
    r = oracle([PodLife(0, 10), PodLife(15, 20)], lead=1.0, cooldown=0.0, span=(0.0, 20.0))
    assert r.mean_idle == pytest.approx(1 / 20)


def test_a_burst_is_held_at_its_peak_one_lead_ahead() -> None:
    # pods at 5, 5.2, 5.4 until 10; held: 1 on [4, 4.2), 2 on [4.2, 4.4), 3 on [4.4, 10)
    pods = [PodLife(5, 10), PodLife(5.2, 10), PodLife(5.4, 10)]
    held = held_curve(used_curve(pods, 0.0), 1.0)
    assert [(round(t, 6), v) for t, v in held] == [(4.0, 1), (4.2, 2), (4.4, 3), (10.0, 0)]
    r = oracle(pods, lead=1.0, cooldown=0.0, span=(0.0, 10.0))
    assert r.mean_idle == pytest.approx((17.4 - 14.4) / 10)


def test_prefix_granularity_and_ceiling() -> None:
    r = oracle([PodLife(0, 10)], lead=0.0, cooldown=0.0, unit=16, span=(0.0, 10.0))
    assert r.mean_held == pytest.approx(16)
    assert r.mean_idle == pytest.approx(15)
    pods = [PodLife(0, 10) for _ in range(20)]
    r = oracle(pods, lead=0.0, cooldown=0.0, unit=16, ceiling=24, span=(0.0, 10.0))
    assert r.peak_held == 24  # 32 in prefixes, capped at the node's ceiling


def test_lead_zero_is_the_cooling_floor() -> None:
    r = oracle([PodLife(0, 10), PodLife(5, 10)], lead=0.0, cooldown=30.0, span=(0.0, 40.0))
    assert r.mean_idle == pytest.approx(2 * 30 / 40)  # two addresses cooling for 30 s


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="end must not be before start"):
        PodLife(5, 4)
    with pytest.raises(ValueError, match="no pods"):
        oracle([], lead=1.0, cooldown=0.0)
    with pytest.raises(ValueError, match="lead"):
        oracle([PodLife(0, 1)], lead=-1.0, cooldown=0.0)
    with pytest.raises(ValueError, match="span"):
        oracle([PodLife(0, 1)], lead=1.0, cooldown=0.0, span=(5.0, 5.0))


def _brute_held(pods: list[PodLife], cooldown: float, lead: float, t: float) -> int:
    def used(s: float) -> int:
        return sum(1 for p in pods if p.start <= s < p.end + cooldown)

    # used changes only at the pods' times: its max over [t, t + lead] is at t or at a change inside
    points = [t] + [x for p in pods for x in (p.start, p.end + cooldown) if t <= x <= t + lead]
    return max(used(s) for s in points)


@given(
    lives=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), min_size=1, max_size=12),
    lead=st.integers(0, 6),
    cooldown=st.integers(0, 5),
)
def test_held_matches_a_brute_force_maximum(lives: list[tuple[int, int]], lead: int, cooldown: int) -> None:
    pods = [PodLife(s / 2, (s + d) / 2) for s, d in lives]
    held = held_curve(used_curve(pods, cooldown / 2), lead / 2)
    for k in range(-20, 160):
        t = k / 4 + 0.01  # off the grid of change times, so no tie at a boundary
        value = 0
        for at, v in held:
            if at <= t:
                value = v
        assert value == _brute_held(pods, cooldown / 2, lead / 2, t)
    # the oracle never holds fewer than in use, so its idle is never negative
    r = oracle(pods, lead=lead / 2, cooldown=cooldown / 2, span=(0.0, 40.0))
    assert r.mean_idle >= -1e-9
    assert integral(held, *r.span) >= 0


def _brute_budgeted_area(times: list[float], values: list[int], max_calls: int) -> float:
    """The least area of a step function >= values with at most max_calls changes, by trying every set of
    change points."""
    from itertools import combinations

    n = len(values)
    best = float("inf")
    for k in range(0, min(max_calls, n - 1) + 1):
        for cuts in combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            area = sum(max(values[a:b]) * (times[b] - times[a]) for a, b in itertools.pairwise(bounds))
            best = min(best, area)
    return best


@given(
    lives=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 20)), min_size=1, max_size=7),
    max_calls=st.integers(0, 5),
)
def test_budgeted_bound_is_below_the_best_plan_and_a_plan_meets_the_budget(
    lives: list[tuple[int, int]], max_calls: int
) -> None:
    pods = [PodLife(float(s), float(s + d)) for s, d in lives]
    span = (0.0, 70.0)
    r = budgeted_oracle(pods, lead=1.0, cooldown=2.0, max_calls=max_calls, span=span)
    times, values = pieces_of(held_curve(used_curve(pods, 2.0), 1.0), *span)
    assigned = integral(assigned_curve(pods), *span)
    exact = (_brute_budgeted_area(times, values, max_calls) - assigned) / 70.0
    assert r.mean_idle <= exact + 1e-6  # a lower bound: no plan within the budget does better
    assert r.feasible_calls <= max_calls
    assert r.feasible_mean_idle >= exact - 1e-6  # a real plan: not better than the best one
    free = oracle(pods, lead=1.0, cooldown=2.0, span=span)
    assert r.mean_idle >= free.mean_idle - 1e-6  # a budget never helps


def test_no_budget_left_holds_the_peak_all_along() -> None:
    pods = [PodLife(10, 20), PodLife(30, 40), PodLife(30, 40)]
    r = budgeted_oracle(pods, lead=0.0, cooldown=0.0, max_calls=0, span=(0.0, 50.0))
    assert r.feasible_mean_idle == pytest.approx((2 * 50 - 30) / 50)
    assert r.mean_idle == pytest.approx(r.feasible_mean_idle)
    # two calls: up to 2 at 30, down at 40 -> holding 0 first would need a third; best is 1 on [0,30)
    r = budgeted_oracle(pods, lead=0.0, cooldown=0.0, max_calls=2, span=(0.0, 50.0))
    assert r.feasible_mean_idle == pytest.approx((30 + 20 - 30) / 50)
    with pytest.raises(ValueError, match="max_calls"):
        budgeted_oracle(pods, lead=0.0, cooldown=0.0, max_calls=-1)
