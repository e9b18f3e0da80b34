"""Derived matrix statistics against explicit-loop / SVD / Cholesky oracles and simulations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from signals.correlation import RollingCorrelation
from signals.errors import InvalidInputError
from signals.matrix import (
    absorption_ratio,
    adjusted_average_correlation,
    average_correlation,
    correlation_surprise,
    forbes_rigobon,
    magnitude_surprise,
    turbulence,
    variance_ratio,
)

Matrix = NDArray[np.float64]
CLASSES = ("crypto", "equity", "metal")


def random_cov(rng: np.random.Generator, n: int, t: int = 0) -> Matrix:
    """Sample covariance of t correlated draws (t = 0: a well-conditioned 4n draws)."""
    loadings = rng.normal(size=(n, 2))
    x = rng.normal(size=(t or 4 * n, 2)) @ loadings.T + rng.normal(size=(t or 4 * n, n))
    return np.atleast_2d(np.cov(x, rowvar=False)) * rng.uniform(0.5, 2.0)


# --- average correlation ------------------------------------------------------------------


def average_oracle(corr: Matrix, classes: list[str]) -> dict[str, float]:
    groups: dict[str, list[float]] = {"all": []}
    names = sorted(set(classes))
    for a in range(len(names)):
        for b in range(a, len(names)):
            groups[f"{names[a]}-{names[b]}"] = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            key = "-".join(sorted((classes[i], classes[j])))
            if not math.isnan(corr[i, j]):
                groups["all"].append(corr[i, j])
                groups[key].append(corr[i, j])
    return {k: (sum(v) / len(v) if v else math.nan) for k, v in groups.items()}


def assert_dicts_close(got: dict[str, float], expected: dict[str, float]) -> None:
    assert list(got) == list(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.sampled_from(CLASSES), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    nan_share=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_average_correlation_matches_loops(labels: list[str], seed: int, nan_share: float) -> None:
    rng = np.random.default_rng(seed)
    n = len(labels)
    corr = rng.uniform(-1, 1, (n, n))
    corr[rng.random((n, n)) < nan_share] = np.nan
    corr = np.triu(corr, 1) + np.triu(corr, 1).T + np.eye(n)
    assert_dicts_close(average_correlation(corr, labels), average_oracle(corr, labels))


def test_average_correlation_keys_and_nan_keys() -> None:
    corr = np.array(
        [
            [1.0, 0.9, np.nan, 0.5],
            [0.9, 1.0, np.nan, 0.7],
            [np.nan, np.nan, 1.0, 0.2],
            [0.5, 0.7, 0.2, 1.0],
        ]
    )
    out = average_correlation(corr, ["crypto", "crypto", "metal", "equity"])
    assert list(out) == [
        "all",
        "crypto-crypto",
        "crypto-equity",
        "crypto-metal",
        "equity-equity",
        "equity-metal",
        "metal-metal",
    ]
    assert out["all"] == pytest.approx((0.9 + 0.5 + 0.7 + 0.2) / 4)
    assert out["crypto-equity"] == pytest.approx(0.6)
    assert out["equity-metal"] == pytest.approx(0.2)
    assert math.isnan(out["crypto-metal"])  # all its pairs are NaN: still present
    assert math.isnan(out["equity-equity"])  # no pair at all


@pytest.mark.parametrize("labels", [["crypto"], ["crypto", "eq-uity", "metal"], ["a", "", "b"]])
def test_average_correlation_rejects_bad_labels(labels: list[str]) -> None:
    with pytest.raises(InvalidInputError):
        average_correlation(np.eye(3), labels)


# --- Forbes–Rigobon -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(rho=st.floats(-1, 1), ratio=st.floats(1e-3, 1e3))
def test_forbes_rigobon_formula_and_inverse(rho: float, ratio: float) -> None:
    adjusted = forbes_rigobon(rho, ratio)
    assert adjusted == pytest.approx(rho / math.sqrt(1 + (ratio - 1) * (1 - rho**2)), abs=1e-15)
    assert -1.0 <= adjusted <= 1.0
    assert math.copysign(1, adjusted) == math.copysign(1, rho) or adjusted == 0
    if ratio >= 1:
        assert abs(adjusted) <= abs(rho)
    # the model it inverts: ρ = ρ* sqrt(1 + δ) / sqrt(1 + δ ρ*²)
    delta = ratio - 1
    assert adjusted * math.sqrt(1 + delta) / math.sqrt(1 + delta * adjusted**2) == pytest.approx(
        rho, abs=1e-9
    )


def test_forbes_rigobon_recovers_the_calm_correlation_in_a_simulation() -> None:
    """y = βx + ε; only var(x) rises ×9 in the window: raw ρ rises, adjusted ρ does not."""
    rng = np.random.default_rng(11)
    beta, n = 0.5, 400_000

    def corr_of(sigma_x: float) -> tuple[float, float]:
        x = rng.normal(0, sigma_x, n)
        y = beta * x + rng.normal(0, 1.0, n)
        return float(np.corrcoef(x, y)[0, 1]), float(np.var(x))

    calm, var_calm = corr_of(1.0)
    storm, var_storm = corr_of(3.0)
    assert storm > calm + 0.3
    assert forbes_rigobon(storm, var_storm / var_calm) == pytest.approx(calm, abs=0.005)


def test_forbes_rigobon_arrays_nan_and_errors() -> None:
    rho = np.array([0.5, np.nan, -0.9])
    out = forbes_rigobon(rho, np.array([2.0, 2.0, np.nan]))
    assert out[0] == pytest.approx(0.5 / math.sqrt(1 + 0.75))
    assert np.isnan(out[1:]).all()
    assert forbes_rigobon(rho, 1.0)[2] == -0.9
    for bad_ratio in (0.0, -1.0, math.inf):
        with pytest.raises(InvalidInputError, match="variance_ratio"):
            forbes_rigobon(0.5, bad_ratio)
    with pytest.raises(InvalidInputError, match="rho"):
        forbes_rigobon(1.5, 2.0)


def test_variance_ratio_and_adjusted_average_use_the_pair_geometric_mean() -> None:
    window = np.diag([4.0, 1.0, 9.0, 0.0])
    baseline = np.diag([1.0, 1.0, 1.0, 1.0])
    ratios = variance_ratio(window, baseline)
    np.testing.assert_array_equal(ratios, [4.0, 1.0, 9.0, np.nan])
    corr = np.full((4, 4), 0.6)
    np.fill_diagonal(corr, 1.0)
    labels = ["crypto", "crypto", "equity", "metal"]
    out = adjusted_average_correlation(corr, labels, ratios)
    expected_pairs = {
        "crypto-crypto": [forbes_rigobon(0.6, 2.0)],  # sqrt(4 · 1)
        "crypto-equity": [forbes_rigobon(0.6, 6.0), forbes_rigobon(0.6, 3.0)],
        "crypto-metal": [],  # unknown ratio: NaN, skipped
    }
    for key, values in expected_pairs.items():
        expected = sum(values) / len(values) if values else math.nan
        assert out[key] == pytest.approx(expected, nan_ok=True), key


# --- absorption ratio ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    fraction=st.sampled_from([0.2, 0.1, 0.5, 1 / 3, 1.0]),
)
def test_absorption_ratio_matches_svd_of_the_data(n: int, seed: int, fraction: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5 * n, 2)) @ rng.normal(size=(2, n)) + rng.normal(size=(5 * n, n))
    centered = x - x.mean(axis=0)
    s = np.linalg.svd(centered, compute_uv=False)  # eigenvalues of the covariance ∝ s²
    k = math.ceil(round(fraction * n, 9))
    expected = float(np.sum(s[:k] ** 2) / np.sum(s**2))
    cov = np.cov(x, rowvar=False)
    ar = absorption_ratio(cov, fraction)
    assert ar == pytest.approx(expected, abs=1e-12)
    assert k / n - 1e-12 <= ar <= 1.0 + 1e-12
    perm = rng.permutation(n)
    assert absorption_ratio(7.0 * cov[np.ix_(perm, perm)], fraction) == pytest.approx(ar)


def test_absorption_ratio_known_values_and_ceiling() -> None:
    assert absorption_ratio(np.eye(10)) == pytest.approx(0.2)
    assert absorption_ratio(np.ones((4, 4))) == pytest.approx(1.0)
    eig = np.arange(15.0, 0.0, -1.0)  # 0.2 · 15 = 3.0000000000000004 must give K = 3
    assert absorption_ratio(np.diag(eig)) == pytest.approx((15 + 14 + 13) / eig.sum())


def test_absorption_ratio_drops_undefined_and_flat_assets() -> None:
    rng = np.random.default_rng(12)
    cov = random_cov(rng, 6)
    padded = np.full((8, 8), np.nan)
    padded[np.ix_([0, 2, 3, 4, 6, 7], [0, 2, 3, 4, 6, 7])] = cov
    padded[5, :] = padded[:, 5] = 0.0  # flat asset: variance 0, covariances 0
    assert absorption_ratio(padded) == pytest.approx(absorption_ratio(cov), abs=1e-14)
    broken = cov.copy()
    broken[0, 1] = broken[1, 0] = np.nan  # a pair undefined between usable assets
    assert math.isnan(absorption_ratio(broken))
    assert math.isnan(absorption_ratio(np.array([[2.0]])))
    assert math.isnan(absorption_ratio(np.zeros((3, 3))))
    with pytest.raises(InvalidInputError):
        absorption_ratio(cov, fraction=0.0)


# --- turbulence and correlation surprise --------------------------------------------------


def turbulence_oracle(d: Matrix, cov: Matrix) -> float:
    """Cholesky whitening: |L⁻¹ d|² / N."""
    z = np.linalg.solve(np.linalg.cholesky(cov), d)
    return float(z @ z) / d.size


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_turbulence_and_surprises_match_explicit_oracles(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cov = random_cov(rng, n)
    mean, r = rng.normal(size=n), rng.normal(size=n) * 3
    d = r - mean
    turb = turbulence(r, mean, cov)
    assert turb == pytest.approx(turbulence_oracle(d, cov), rel=1e-8)
    magnitude = sum(d[i] ** 2 / cov[i, i] for i in range(n)) / n
    assert magnitude_surprise(r, mean, cov) == pytest.approx(magnitude, rel=1e-12)
    assert correlation_surprise(r, mean, cov) == pytest.approx(turb / magnitude, rel=1e-8)
    # affine invariance: rescaling one asset's returns, mean and covariance changes nothing
    c = np.ones(n)
    c[rng.integers(n)] = rng.uniform(0.01, 100)
    assert turbulence(r * c, mean * c, cov * np.outer(c, c)) == pytest.approx(turb, rel=1e-7)


def test_turbulence_has_expectation_one_under_the_model() -> None:
    rng = np.random.default_rng(13)
    cov = random_cov(rng, 5)
    mean = rng.normal(size=5)
    draws = rng.multivariate_normal(mean, cov, size=20_000)
    values = [turbulence(r, mean, cov) for r in draws]
    assert np.mean(values) == pytest.approx(1.0, abs=0.03)
    assert np.mean([magnitude_surprise(r, mean, cov) for r in draws[:5000]]) == pytest.approx(
        1.0, abs=0.05
    )


def test_diagonal_covariance_has_no_correlation_surprise() -> None:
    cov = np.diag([1.0, 4.0, 0.25])
    r = np.array([1.0, -3.0, 0.5])
    assert correlation_surprise(r, np.zeros(3), cov) == pytest.approx(1.0, abs=1e-14)
    assert turbulence(r, np.zeros(3), cov) == pytest.approx(magnitude_surprise(r, np.zeros(3), cov))


def test_singular_covariance_uses_the_pseudo_inverse() -> None:
    """A duplicated asset adds no information: same value as without it."""
    rng = np.random.default_rng(14)
    cov = random_cov(rng, 4)
    mean, r = rng.normal(size=4), rng.normal(size=4)
    dup = [0, 1, 2, 3, 1]
    big = cov[np.ix_(dup, dup)]
    assert turbulence(r[dup], mean[dup], big) == pytest.approx(turbulence(r, mean, cov), rel=1e-8)
    assert correlation_surprise(r[dup], mean[dup], big) == pytest.approx(
        turbulence(r, mean, cov) * 4 / (magnitude_surprise(r[dup], mean[dup], big) * 5), rel=1e-8
    )


def test_undefined_assets_are_dropped_and_nan_when_nothing_usable() -> None:
    rng = np.random.default_rng(15)
    cov = random_cov(rng, 3)
    mean, r = rng.normal(size=3), rng.normal(size=3)
    full_cov = np.full((5, 5), np.nan)
    full_cov[np.ix_([0, 2, 4], [0, 2, 4])] = cov
    full_cov[1, 1] = 1.0  # asset 1 has a variance but no return this bar
    r5 = np.array([r[0], np.nan, r[1], 0.3, r[2]])
    mean5 = np.array([mean[0], 0.0, mean[1], 0.0, mean[2]])
    for fn in (turbulence, magnitude_surprise, correlation_surprise):
        assert fn(r5, mean5, full_cov) == pytest.approx(fn(r, mean, cov), rel=1e-10)
        assert math.isnan(fn(np.full(3, np.nan), mean, cov))
    assert math.isnan(correlation_surprise(mean, mean, cov))  # r = μ: 0 / 0
    with pytest.raises(InvalidInputError, match="inf"):
        turbulence(np.array([np.inf, 0.0, 0.0]), mean, cov)
    with pytest.raises(InvalidInputError, match="shape"):
        turbulence(r[:2], mean, cov)


def test_pipeline_from_rolling_correlation_output() -> None:
    """The covariance of RollingCorrelation (gaps, a flat asset) feeds the derived stats."""
    rng = np.random.default_rng(16)
    data = rng.normal(0, 0.01, (120, 5)) + rng.normal(0, 0.01, (120, 1))
    data[:, 3] = 0.0  # flat
    data[:50, 4] = np.nan  # joins late
    rc = RollingCorrelation(5, 60)
    for row in data:
        rc.update(row)
    cov = rc.covariance()
    expected = pd.DataFrame(data[-60:]).cov(min_periods=rc.min_periods).to_numpy()
    np.testing.assert_allclose(cov, expected, atol=1e-15)
    keep = [0, 1, 2, 4]
    assert absorption_ratio(cov) == pytest.approx(
        absorption_ratio(expected[np.ix_(keep, keep)]), abs=1e-12
    )
    mean = np.nanmean(data[-60:], axis=0)
    assert turbulence(data[-1], mean, cov) == pytest.approx(
        turbulence_oracle((data[-1] - mean)[keep], expected[np.ix_(keep, keep)]), rel=1e-8
    )
