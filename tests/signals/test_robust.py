"""Tests of signals.robust: median/MAD vs pandas, exact sums vs math.fsum, event-time windows."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signals.errors import InvalidInputError
from signals.robust import (
    SCALED_MAD_FACTOR,
    ExactSum,
    TimeWindowSums,
    median_and_scaled_mad,
    robust_zscore,
    rolling_robust_zscore,
)

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


def pandas_median_mad(values: list[float]) -> tuple[float, float]:
    s = pd.Series(values, dtype=float).dropna()
    median = s.median()
    return median, (s - median).abs().median() * 1.4826


# ----------------------------------------------------------------------------- median / MAD


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(finite, st.just(math.nan)), max_size=50))
def test_median_and_scaled_mad_match_pandas(values: list[float]) -> None:
    median, mad = median_and_scaled_mad(values)
    want_median, want_mad = pandas_median_mad(values)
    if all(math.isnan(v) for v in values):
        assert math.isnan(median)
        assert math.isnan(mad)
        return
    assert median == pytest.approx(want_median, abs=1e-10, rel=1e-15)
    assert mad == pytest.approx(want_mad, abs=1e-10, rel=1e-14)


def test_scaled_mad_factor_is_the_normal_consistency_constant() -> None:
    from statistics import NormalDist

    assert abs(SCALED_MAD_FACTOR - 1 / NormalDist().inv_cdf(0.75)) < 1e-5


def test_robust_zscore_floor_and_undefined() -> None:
    base = [10.0, 12.0, 11.0, 13.0, 9.0]  # median 11, MAD 1
    assert robust_zscore(14.0, base) == pytest.approx(3.0 / 1.4826, abs=1e-12)
    assert robust_zscore(14.0, base, min_scale=2.0) == pytest.approx(1.5, abs=1e-12)
    assert math.isnan(robust_zscore(1.0, [5.0, 5.0, 5.0]))  # MAD 0, no floor
    assert robust_zscore(7.0, [5.0, 5.0, 5.0], min_scale=0.5) == 4.0
    assert math.isnan(robust_zscore(1.0, []))
    with pytest.raises(InvalidInputError, match="min_scale"):
        robust_zscore(1.0, base, min_scale=-1.0)


@pytest.mark.parametrize("window", [1, 3, 10])
def test_rolling_robust_zscore_matches_pandas_rolling(window: int) -> None:
    rng = np.random.default_rng(window)
    x = rng.standard_t(3, 300)
    x[[5, 50, 51]] = np.nan
    min_periods = max(1, window - 1)
    got = rolling_robust_zscore(x, window, min_periods=min_periods, min_scale=0.01)
    base = pd.Series(x).shift(1).rolling(window, min_periods=min_periods)
    median = base.median()
    mad = base.apply(lambda w: np.nanmedian(np.abs(w - np.nanmedian(w))), raw=True) * 1.4826
    want = (pd.Series(x) - median) / np.maximum(mad, 0.01)
    np.testing.assert_allclose(got, want.to_numpy(), atol=1e-10, equal_nan=True)
    with pytest.raises(InvalidInputError, match="window"):
        rolling_robust_zscore(x, 0)
    with pytest.raises(InvalidInputError, match="min_periods"):
        rolling_robust_zscore(x, 3, min_periods=4)


# ----------------------------------------------------------------------------- ExactSum


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), finite), max_size=80))
def test_exact_sum_equals_fsum_of_the_values_held(ops: list[tuple[bool, float]]) -> None:
    s = ExactSum()
    held: list[float] = []
    for remove, value in ops:
        if remove and held:
            v = held.pop(len(held) // 2)
            s.revert(v)
        else:
            held.append(value)
            s.update(value)
        assert s.get() == math.fsum(held)


def test_exact_sum_cancels_catastrophic_terms_and_rejects_non_finite() -> None:
    s = ExactSum([1e300, 1.0, -1e300, 1e-300])
    assert s.get() == 1.0 + 1e-300
    s.clear()
    assert s.get() == 0.0
    with pytest.raises(InvalidInputError, match="finite"):
        s.update(math.inf)


@pytest.mark.slow
def test_exact_sum_sliding_window_does_not_drift_over_a_million_updates() -> None:
    rng = np.random.default_rng(42)
    n = 1_000_000
    values = (rng.lognormal(0, 6, n) * rng.choice([-1.0, 1.0], n)).tolist()
    window: deque[float] = deque()
    s = ExactSum()
    naive = 0.0
    for i, v in enumerate(values):
        window.append(v)
        s.update(v)
        naive += v
        if len(window) > 100:
            old = window.popleft()
            s.revert(old)
            naive -= old
        if i % 100_000 == 99_999:
            exact = math.fsum(window)
            assert s.get() == exact
    assert abs(naive - math.fsum(window)) > 0.0  # the plain running sum did drift


# ----------------------------------------------------------------------------- TimeWindowSums


def brute(events: list[tuple[int, float, bool]], now: int, w: int) -> tuple[float, int, int]:
    inside = [(v, f) for t, v, f in events if now - w < t <= now]
    return math.fsum(v for v, _ in inside), sum(f for _, f in inside), len(inside)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 60),  # time step
            st.integers(0, 40),  # lateness
            st.floats(0.01, 1e9, allow_nan=False),
            st.booleans(),
            st.booleans(),  # advance only
        ),
        max_size=60,
    )
)
def test_time_window_sums_match_brute_force(
    ops: list[tuple[int, int, float, bool, bool]],
) -> None:
    windows = (5, 20, 30)
    sums = TimeWindowSums(windows)
    events: list[tuple[int, float, bool]] = []
    now = 100
    for step, late, value, flag, advance_only in ops:
        now += step
        if advance_only:
            sums.advance(now)
        else:
            ts = now - late
            accepted = sums.update(ts, value, flagged=flag)
            current = sums.now_ns
            assert current is not None
            assert accepted == (ts > current - max(windows))
            if accepted:
                events.append((ts, value, flag))
        current = sums.now_ns
        assert current is not None
        for i, w in enumerate(windows):
            total, flagged, count = brute(events, current, w)
            assert sums.sum(i) == total  # bit-identical to fsum
            assert sums.flagged(i) == flagged
            assert sums.count(i) == count


def test_time_window_boundaries_and_compaction() -> None:
    sums = TimeWindowSums([10])
    for t in range(5_000):
        sums.update(t, 1.0)
    assert sums.sum(0) == 10.0  # (4989, 4999]
    assert sums.count(0) == 10
    assert len(sums._ts) < 2_100  # expired values were compacted away
    sums.advance(5_008)  # window (4998, 5008]: only t = 4999
    assert (sums.sum(0), sums.count(0)) == (1.0, 1)
    assert sums.update(4_998, 5.0) is False  # exactly on the window's edge: outside
    assert sums.update(4_999, 5.0) is True
    assert sums.sum(0) == 6.0
    sums.advance(5_000)  # time never goes back
    assert sums.now_ns == 5_008
    with pytest.raises(InvalidInputError, match="unique lengths"):
        TimeWindowSums([10, 10])
    with pytest.raises(InvalidInputError, match="unique lengths"):
        TimeWindowSums([0])
