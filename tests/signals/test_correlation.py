"""RollingCorrelation / EWCorrelation against pandas and explicit-loop oracles, bar by bar."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from signals.correlation import (
    EWCorrelation,
    RollingCorrelation,
    ew_correlation,
    rolling_correlation,
)
from signals.errors import InvalidInputError

ATOL = 1e-10
Matrix = NDArray[np.float64]


def assert_same(got: Matrix, expected: Matrix, atol: float = ATOL) -> None:
    """Same NaN pattern and max |difference| <= atol elsewhere."""
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    if finite.any():
        assert np.max(np.abs(got[finite] - expected[finite])) <= atol


def window(data: Matrix, t: int, w: int) -> pd.DataFrame:
    return pd.DataFrame(data[max(0, t - w + 1) : t + 1])


def gappy_panel(seed: int, n_bars: int, pattern: str) -> Matrix:
    """Correlated log returns with the gaps and flat stretches seen in production."""
    rng = np.random.default_rng(seed)
    n = 7
    factor = rng.normal(0, 0.01, (n_bars, 1))
    data = 0.6 * factor + rng.normal(0.0002, 0.008, (n_bars, n))
    data[:, 6] *= 50.0  # one asset on a very different scale
    if pattern == "random":  # gaps everywhere: the full pairwise path
        data[rng.random(data.shape) < 0.1] = np.nan
    data[60:130, 2] = np.nan  # closed session longer than half a window
    data[150:200, 3] = 0.0  # forward-filled price: flat asset
    data[210:260:2, 4] = np.nan  # asset 4 present every other bar...
    data[211:260:2, 5] = 0.0  # ...and asset 5 is flat exactly on those bars only
    data[270:290, :] = np.nan  # whole bars missing
    return data


@pytest.mark.parametrize(
    ("pattern", "w", "min_periods", "recompute"),
    [
        ("random", 20, None, None),
        ("random", 30, 5, 7),
        ("blocks", 20, 2, None),  # gaps in few assets: the row-patch path
        ("blocks", 40, 12, 13),
        ("random", 2, 2, None),
    ],
)
def test_rolling_matches_pandas_after_every_update(
    pattern: str, w: int, min_periods: int | None, recompute: int | None
) -> None:
    data = gappy_panel(1, 320, pattern)
    rc = RollingCorrelation(7, w, recompute_every_bars=recompute, min_periods=min_periods)
    mp = rc.min_periods
    batch = rolling_correlation(data, w, min_periods=min_periods)
    for t in range(len(data)):
        rc.update(data[t])
        win = window(data, t, w)
        present = win.notna().to_numpy().astype(np.int64)
        expected = win.corr(min_periods=mp).to_numpy()
        got = rc.get()
        assert_same(got, expected)
        assert_same(batch[t], expected)
        assert_same(rc.covariance(), win.cov(min_periods=mp).to_numpy(), atol=1e-13)
        np.testing.assert_array_equal(rc.n_obs(), present.T @ present)
        np.testing.assert_array_equal(got, got.T)  # exactly symmetric
        assert rc.bars_seen == t + 1
        assert rc.is_warm == (t + 1 >= w)


def test_default_min_periods_is_half_a_window() -> None:
    assert RollingCorrelation(3, 120).min_periods == 60
    assert RollingCorrelation(3, 4).min_periods == 3
    assert RollingCorrelation(3, 2).min_periods == 2


def test_cold_window_is_nan_then_defined() -> None:
    rng = np.random.default_rng(2)
    rc = RollingCorrelation(3, 10, min_periods=4)
    assert np.isnan(rc.get()).all()
    assert np.isnan(rc.covariance()).all()
    for _ in range(4):
        assert np.isnan(rc.get()).all()
        rc.update(rng.normal(0, 0.01, 3))
        assert not rc.is_warm
    assert not np.isnan(rc.get()).any()


@pytest.mark.parametrize("level", [0.0, 0.0013])
def test_flat_asset_is_nan_never_zero_or_one(level: float) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(0, 0.01, (60, 3))
    data[:, 1] = level  # constant returns: zero variance
    rc = RollingCorrelation(3, 20)
    for row in data:
        rc.update(row)
    corr, cov = rc.get(), rc.covariance()
    assert np.isnan(corr[1]).all()
    assert np.isnan(corr[:, 1]).all()
    assert not np.isnan(corr[np.ix_([0, 2], [0, 2])]).any()
    np.testing.assert_array_equal(cov[1], 0.0)  # covariance with a constant is exactly 0
    np.testing.assert_array_equal(cov[:, 1], 0.0)


def test_asset_that_goes_flat_after_a_volatile_stretch() -> None:
    """Old large returns leave round-off in the sums; the flat test must still say NaN."""
    rng = np.random.default_rng(4)
    data = rng.normal(0, 0.05, (200, 3))
    data[100:, 0] = 0.0
    rc = RollingCorrelation(3, 30, recompute_every_bars=1000)  # no recompute in between
    for t, row in enumerate(data):
        rc.update(row)
        assert_same(rc.get(), window(data, t, 30).corr(min_periods=15).to_numpy())


def test_all_flat_is_all_nan() -> None:
    rc = RollingCorrelation(4, 5)
    for _ in range(8):
        rc.update(np.full(4, 0.001))
    assert np.isnan(rc.get()).all()


def test_one_asset() -> None:
    rc = RollingCorrelation(1, 3, min_periods=2)
    rc.update(np.array([0.01]))
    assert np.isnan(rc.get()).all()
    rc.update(np.array([0.02]))
    np.testing.assert_array_equal(rc.get(), [[1.0]])
    rc.update(np.array([np.nan]))
    rc.update(np.array([np.nan]))
    assert np.isnan(rc.get()).all()  # one observation left in the window


def test_window_of_two_is_plus_or_minus_one() -> None:
    rc = RollingCorrelation(3, 2)
    rc.update(np.array([0.01, 0.02, 0.01]))
    rc.update(np.array([0.02, -0.01, 0.01]))
    np.testing.assert_allclose(
        rc.get(), [[1, -1, np.nan], [-1, 1, np.nan], [np.nan, np.nan, np.nan]], atol=ATOL
    )


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_return_is_rejected(bad: float) -> None:
    for est in (RollingCorrelation(3, 5), EWCorrelation(3, 5.0)):
        with pytest.raises(InvalidInputError, match=r"index \[1\] are infinite"):
            est.update(np.array([0.01, bad, 0.0]))
        assert est.bars_seen == 0  # nothing was half-applied


@pytest.mark.parametrize("shape", [(2,), (4,), (3, 1), ()])
def test_wrong_shape_is_rejected(shape: tuple[int, ...]) -> None:
    for est in (RollingCorrelation(3, 5), EWCorrelation(3, 5.0)):
        with pytest.raises(InvalidInputError, match=r"expected \(3,\)"):
            est.update(np.zeros(shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_assets": 0, "window_bars": 5},
        {"n_assets": 2, "window_bars": 1},
        {"n_assets": 2, "window_bars": 5, "min_periods": 1},
        {"n_assets": 2, "window_bars": 5, "min_periods": 6},
        {"n_assets": 2, "window_bars": 5, "recompute_every_bars": 0},
    ],
)
def test_bad_rolling_parameters_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidInputError):
        RollingCorrelation(**kwargs)


def test_get_has_no_side_effects() -> None:
    data = gappy_panel(5, 150, "random")
    quiet, busy = RollingCorrelation(7, 25), RollingCorrelation(7, 25)
    for row in data:
        quiet.update(row)
        busy.update(row)
        busy.get()
        busy.covariance()
        busy.n_obs()
    np.testing.assert_array_equal(quiet.get(), busy.get())
    np.testing.assert_array_equal(busy.get(), busy.get())


def test_recompute_bounds_the_drift() -> None:
    """A volatile regime leaves add/remove round-off that the periodic recompute removes."""
    rng = np.random.default_rng(0)
    calm = rng.normal(0, 3e-5, (50, 3))
    data = np.vstack([rng.normal(0, 0.1, (20_000, 3)), calm])
    expected = pd.DataFrame(calm).corr().to_numpy()
    errors = {}
    for k in (None, 10**9):
        rc = RollingCorrelation(3, 50, recompute_every_bars=k)
        for row in data:
            rc.update(row)
        errors[k] = np.max(np.abs(rc.get() - expected))
    assert errors[None] <= 1e-14
    assert errors[10**9] > 1e-9  # without it the sums really do drift


@pytest.mark.slow
def test_million_updates_stay_within_1e10_of_exact() -> None:
    """10⁶ bars (heavy tails, volatility regimes, 2% gaps), checked where drift is largest:
    on the bar just before each periodic recompute, and on the final window."""
    w, n, chunk = 50, 4, 100_000
    rng = np.random.default_rng(6)
    rc = RollingCorrelation(n, w)
    deviations = []
    for c in range(10):
        sigma = 0.05 if c % 2 else 0.0005
        data = sigma * rng.standard_t(3, (chunk + (w - 1 if c == 9 else 0), n))
        data[:, 1] += 0.7 * data[:, 0]
        data[rng.random(data.shape) < 0.02] = np.nan
        for row in data:
            rc.update(row)
        assert rc.bars_seen % w == (w - 1 if c == 9 else 0)
        exact = pd.DataFrame(data[-w:]).corr(min_periods=rc.min_periods).to_numpy()
        got = rc.get()
        assert_same(got, exact)
        deviations.append(float(np.nanmax(np.abs(got - exact))))
        # the bar before a recompute: w − 1 updates of drift since the last one
        more = rng.normal(0, sigma, (w - 1, n))
        for row in more:
            rc.update(row)
        exact = pd.DataFrame(np.vstack([data, more])[-w:]).corr(min_periods=rc.min_periods)
        assert_same(rc.get(), exact.to_numpy())
        deviations.append(float(np.nanmax(np.abs(rc.get() - exact.to_numpy()))))
        for row in rng.normal(0, sigma, (1, n)):  # back on the recompute grid
            rc.update(row)
    assert rc.bars_seen >= 1_000_000
    assert max(deviations) <= ATOL


# --- hypothesis properties ---------------------------------------------------------------

panels = st.integers(2, 5).flatmap(
    lambda n: st.lists(
        st.lists(
            # a grid of returns keeps "nearly flat" cases away from the flat threshold
            st.one_of(st.integers(-300, 300).map(lambda k: k * 1e-4), st.just(math.nan)),
            min_size=n,
            max_size=n,
        ),
        min_size=1,
        max_size=30,
    ).map(lambda rows: np.array(rows, dtype=np.float64))
)


def run_rolling(data: Matrix, w: int) -> RollingCorrelation:
    rc = RollingCorrelation(data.shape[1], w, recompute_every_bars=7, min_periods=2)
    for row in data:
        rc.update(row)
    return rc


@settings(max_examples=150, deadline=None)
@given(data=panels, w=st.integers(2, 12))
def test_property_matches_pandas_bounded_symmetric(data: Matrix, w: int) -> None:
    corr = run_rolling(data, w).get()
    assert_same(corr, window(data, len(data) - 1, w).corr(min_periods=2).to_numpy())
    finite = corr[~np.isnan(corr)]
    assert ((finite >= -1.0) & (finite <= 1.0)).all()
    np.testing.assert_array_equal(corr, corr.T)
    assert set(np.diagonal(corr)[~np.isnan(np.diagonal(corr))]) <= {1.0}


@settings(max_examples=100, deadline=None)
@given(data=panels, w=st.integers(2, 12), c=st.floats(1e-3, 1e3), pick=st.integers(0, 4))
def test_property_invariant_to_scaling_one_asset(data: Matrix, w: int, c: float, pick: int) -> None:
    scaled = data.copy()
    scaled[:, pick % data.shape[1]] *= c
    assert_same(run_rolling(scaled, w).get(), run_rolling(data, w).get(), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(data=panels, w=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_property_permutation_equivariant(data: Matrix, w: int, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(data.shape[1])
    base = run_rolling(data, w).get()
    assert_same(run_rolling(data[:, perm], w).get(), base[np.ix_(perm, perm)], atol=1e-12)


# --- exponentially weighted ---------------------------------------------------------------


def ew_loop_oracle(data: Matrix, alpha: float, min_bars: int) -> list[Matrix]:
    """Direct per-element implementation of the documented NaN rule (no numpy vector ops)."""
    n = data.shape[1]
    mean: list[float | None] = [None] * n
    cov = [[0.0] * n for _ in range(n)]
    pairs = [[0] * n for _ in range(n)]
    out = []
    for row in data:
        here = [i for i in range(n) if not math.isnan(row[i])]
        for i in here:
            if mean[i] is None:
                mean[i] = float(row[i])
        dev = {i: float(row[i]) - float(mean[i] or 0.0) for i in here}
        for i in here:
            for j in here:
                cov[i][j] = (1 - alpha) * (cov[i][j] + alpha * dev[i] * dev[j])
                pairs[i][j] += 1
        for i in here:
            mean[i] = float(mean[i] or 0.0) + alpha * dev[i]
        corr = np.full((n, n), np.nan)
        for i in range(n):
            for j in range(n):
                ok = pairs[i][j] >= min_bars and cov[i][i] > 0 and cov[j][j] > 0
                if ok:
                    corr[i, j] = max(-1.0, min(1.0, cov[i][j] / math.sqrt(cov[i][i] * cov[j][j])))
        out.append(corr)
    return out


def test_ew_alpha_is_the_half_life() -> None:
    ew = EWCorrelation(2, 12.0)
    assert (1 - ew.alpha) ** 12 == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize(("half_life", "min_bars"), [(5.0, None), (0.7, 2), (30.0, 4)])
def test_ew_matches_pandas_after_every_update(half_life: float, min_bars: int | None) -> None:
    rng = np.random.default_rng(7)
    data = rng.normal(0.0003, 0.01, (250, 4)) + rng.normal(0, 0.01, (250, 1))
    ew = EWCorrelation(4, half_life, min_bars=min_bars)
    mb = max(3, math.ceil(2 * half_life)) if min_bars is None else min_bars
    ewm = pd.DataFrame(data).ewm(alpha=ew.alpha, adjust=False, min_periods=mb)
    corr, cov = ewm.corr(), ewm.cov(bias=True)
    batch = ew_correlation(data, half_life, min_bars)
    for t, row in enumerate(data):
        ew.update(row)
        assert_same(ew.get(), corr.loc[t].to_numpy())
        assert_same(batch[t], corr.loc[t].to_numpy())
        assert_same(ew.covariance(), cov.loc[t].to_numpy(), atol=1e-15)


def test_ew_with_gaps_and_flat_matches_loop_oracle() -> None:
    rng = np.random.default_rng(8)
    data = rng.normal(0, 0.01, (300, 5))
    data[rng.random(data.shape) < 0.15] = np.nan
    data[:40, 3] = np.nan  # starts late
    data[:, 4] = np.where(np.isnan(data[:, 4]), np.nan, 0.002)  # flat with gaps
    ew = EWCorrelation(5, 6.0, min_bars=5)
    for row, expected in zip(data, ew_loop_oracle(data, ew.alpha, 5), strict=True):
        ew.update(row)
        assert_same(ew.get(), expected)


@pytest.mark.parametrize(("half_life", "min_bars"), [(0.0, None), (math.inf, None), (5.0, 1)])
def test_ew_bad_parameters_are_rejected(half_life: float, min_bars: int | None) -> None:
    with pytest.raises(InvalidInputError):
        EWCorrelation(2, half_life, min_bars)
