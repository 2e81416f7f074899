from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vpcnet.ipam.warm import ArrivalForecast, Capacity, WarmTargets, adaptive_band, desired_total

M5 = Capacity("m5.large", max_enis=3, slots_per_eni=9, unit=1, pod_enis=3, max_pods=29)
M5_PD = Capacity("m5.large", max_enis=3, slots_per_eni=9, unit=16, pod_enis=3, max_pods=110)


def test_vpc_cni_semantics() -> None:
    assert desired_total(0, WarmTargets(), M5) == 9
    assert desired_total(1, WarmTargets(), M5) == 18
    assert desired_total(10, WarmTargets(), M5) == 27
    assert desired_total(20, WarmTargets(), M5) == 27  # the ceiling: 3 ENIs x 9
    assert desired_total(0, WarmTargets(warm_ip=3), M5) == 3
    assert desired_total(4, WarmTargets(warm_ip=3), M5) == 7
    assert desired_total(0, WarmTargets(warm_ip=2, minimum_ip=10), M5) == 10
    assert desired_total(0, WarmTargets(warm_prefix=1), M5_PD) == 16
    assert desired_total(16, WarmTargets(warm_prefix=1), M5_PD) == 32
    assert desired_total(17, WarmTargets(warm_prefix=1), M5_PD) == 48
    assert desired_total(0, WarmTargets(minimum_ip=20), M5_PD) == 32  # rounds up to whole prefixes
    assert desired_total(107, WarmTargets(warm_prefix=1), M5_PD) == 112  # max pods 110 - 2, in prefixes


def test_zero_targets_never_stall() -> None:
    for used in range(27):
        assert desired_total(used, WarmTargets(warm_eni=0), M5) > used
        assert desired_total(used, WarmTargets(warm_ip=0, minimum_ip=5), M5) > used


@given(
    used=st.integers(0, 200),
    warm_eni=st.integers(0, 3),
    warm_ip=st.integers(0, 40),
    minimum_ip=st.integers(0, 60),
    warm_prefix=st.integers(0, 3),
    pd=st.booleans(),
    adaptive=st.booleans(),
    forecast=st.integers(0, 50),
)
def test_desired_total_bounds(
    used: int, warm_eni: int, warm_ip: int, minimum_ip: int, warm_prefix: int, pd: bool, adaptive: bool,
    forecast: int,
) -> None:  # fmt: skip
    cap = M5_PD if pd else M5
    t = WarmTargets(warm_eni, warm_ip, minimum_ip, warm_prefix, adaptive)
    want = desired_total(used, t, cap, forecast)
    assert want % cap.unit == 0
    assert want <= cap.address_ceiling
    ceiling = min(cap.address_ceiling, -(-cap.pod_limit // cap.unit) * cap.unit)
    assert want == ceiling or want > used  # below the ceiling there is always something to give
    if adaptive and want < ceiling:
        assert want >= used + forecast


def test_forecast_is_the_worst_burst_of_the_window_plus_one() -> None:
    f = ArrivalForecast(history=3600, cold_floor=9, started=0.0)
    assert f.forecast(10.0, lead=2.0) == 9  # cold start: knows nothing yet
    for t in (1000.0, 1000.5, 1001.0, 1500.0, 1500.1):
        f.record(t)
    assert f.forecast(1600.0, lead=2.0) == 4  # 3 within 2 s, plus one
    assert f.forecast(1600.0, lead=0.2) == 3
    assert f.forecast(5000.0, lead=2.0) == 3  # the 1000 s burst has left the window
    assert f.forecast(9000.0, lead=2.0) == 0


def test_adaptive_band_grows_a_batch_past_the_burst_need() -> None:
    t = WarmTargets(adaptive=True)
    assert adaptive_band(5, t, M5, forecast=3, batch=4) == (8, 12)
    assert adaptive_band(5, t, M5, forecast=3, batch=0) == (8, 8)
    assert adaptive_band(20, t, M5, forecast=3, batch=10) == (23, 27)  # the ceiling caps the batch
    assert adaptive_band(5, t, M5_PD, forecast=3, batch=14) == (16, 32)  # whole prefixes


def test_batch_is_the_mean_arrivals_of_the_horizon() -> None:
    f = ArrivalForecast(history=3600, cold_floor=9, started=0.0)
    for i in range(60):
        f.record(1000.0 + 10 * i)  # one every 10 s
    assert f.batch(500.0, horizon=120, limit=9) == 4  # cold start: half an ENI's worth
    assert f.batch(1600.0, horizon=120, limit=9) == 5  # 60 arrivals in 1,600 s: 4.5 in 120 s, rounded up
    assert f.batch(1600.0, horizon=600, limit=9) == 9  # never more than the limit (one ENI's worth)
    assert f.batch(3590.0, horizon=120, limit=9) == 3
    assert f.batch(9000.0, horizon=120, limit=9) == 1  # nothing seen for an hour: still one
