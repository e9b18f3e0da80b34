"""Statistics derived from a correlation or covariance matrix.

Average correlation overall and per asset-class pair (raw and Forbes–Rigobon adjusted),
absorption ratio, turbulence and correlation surprise. Pure functions of numpy arrays, e.g. the
output of :class:`signals.correlation.RollingCorrelation`. Undefined results are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations_with_replacement
from typing import Final, overload

import numpy as np
from numpy.typing import NDArray

from signals.errors import InvalidInputError

FloatArray = NDArray[np.float64]

#: Eigenvalues of Σ at or below ``PINV_RCOND`` × the largest are treated as 0 (pseudo-inverse).
PINV_RCOND: Final = 1e-10


def _square(matrix: FloatArray, name: str) -> FloatArray:
    arr = np.asarray(matrix, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise InvalidInputError(f"{name} has shape {arr.shape}: expected a square (N, N) matrix")
    if np.isinf(arr).any():
        raise InvalidInputError(f"{name} contains ±inf: pass finite values, NaN where undefined")
    return arr


def _vector(values: FloatArray, n: int, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise InvalidInputError(f"{name} has shape {arr.shape}: expected ({n},), one per asset")
    if np.isinf(arr).any():
        raise InvalidInputError(f"{name} contains ±inf: pass finite values, NaN where undefined")
    return arr


def _nanmean(values: FloatArray) -> float:
    ok = values[~np.isnan(values)]
    return float(ok.mean()) if ok.size else math.nan


def average_correlation(corr: FloatArray, asset_classes: Sequence[str]) -> dict[str, float]:
    """Mean pairwise correlation, overall and per asset-class pair.

    Parameters
    ----------
    corr : ndarray, shape (N, N)
        Symmetric correlation matrix; NaN where a pair is undefined. Its upper triangle is used.
    asset_classes : sequence of str
        Class of each asset (e.g. ``"crypto"``, ``"equity"``, ``"metal"``); no ``"-"`` in names.

    Returns
    -------
    dict of str to float
        ``"all"``: mean over the distinct pairs i < j; then one key per unordered class pair,
        the two names sorted alphabetically and joined by ``"-"`` (``"crypto-equity"``,
        ``"crypto-crypto"``...), for every class pair that can be formed from the classes
        present. NaN pairs are skipped; a key whose pairs are all NaN (or that has no pair,
        like ``"metal-metal"`` with one metal) maps to NaN.

    Examples
    --------
    >>> import numpy as np
    >>> corr = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, np.nan], [0.3, np.nan, 1.0]])
    >>> average_correlation(corr, ["crypto", "crypto", "metal"])
    {'all': 0.55, 'crypto-crypto': 0.8, 'crypto-metal': 0.3, 'metal-metal': nan}
    """
    c = _square(corr, "corr")
    classes = np.asarray(list(asset_classes), dtype=object)
    if classes.shape != (c.shape[0],):
        raise InvalidInputError(
            f"{len(classes)} asset classes for a {c.shape[0]}x{c.shape[0]} matrix: give one "
            "class per asset"
        )
    if any(not name or "-" in name for name in classes):
        raise InvalidInputError("asset class names must be non-empty and contain no '-'")
    i, j = np.triu_indices(c.shape[0], k=1)
    values, ci, cj = c[i, j], classes[i], classes[j]
    out = {"all": _nanmean(values)}
    for a, b in combinations_with_replacement(sorted(set(classes)), 2):
        pick = ((ci == a) & (cj == b)) | ((ci == b) & (cj == a))
        out[f"{a}-{b}"] = _nanmean(values[pick])
    return out


@overload
def forbes_rigobon(rho: float, variance_ratio: float) -> float: ...
@overload
def forbes_rigobon(rho: FloatArray, variance_ratio: float | FloatArray) -> FloatArray: ...
@overload
def forbes_rigobon(rho: float | FloatArray, variance_ratio: FloatArray) -> FloatArray: ...


def forbes_rigobon(
    rho: float | FloatArray, variance_ratio: float | FloatArray
) -> float | FloatArray:
    """Correlation adjusted for the rise in volatility (Forbes & Rigobon 2002).

    Parameters
    ----------
    rho : float or ndarray
        Correlation measured in the (turbulent) window, in [-1, 1]; NaN passes through.
    variance_ratio : float or ndarray
        σ²_window / σ²_baseline of the source asset, > 0 (broadcast against ``rho``).

    Returns
    -------
    float or ndarray
        ρ* (a float when both inputs are scalars).

    Notes
    -----
    ρ* = ρ / sqrt(1 + δ(1 − ρ²)) with δ = σ²_window / σ²_baseline − 1. If y = βx + ε and
    only var(x) rises by the factor 1 + δ, the measured correlation rises from ρ* to
    ρ = ρ* sqrt(1 + δ) / sqrt(1 + δρ*²); this undoes it, so a rise in ρ* is "contagion"
    beyond what higher volatility explains. K. Forbes and R. Rigobon, "No Contagion, Only
    Interdependence", Journal of Finance 57(5), 2002, eq. (7).

    Examples
    --------
    >>> round(forbes_rigobon(0.8, 4.0), 4)
    0.5547
    >>> forbes_rigobon(0.8, 1.0)
    0.8
    """
    r = np.asarray(rho, dtype=np.float64)
    v = np.asarray(variance_ratio, dtype=np.float64)
    if (np.abs(r) > 1.0 + 1e-12).any():  # tolerate round-off, then clip
        raise InvalidInputError("rho outside [-1, 1]: pass correlations (NaN if undefined)")
    r = np.clip(r, -1.0, 1.0)
    if ((v <= 0) | np.isinf(v)).any():
        raise InvalidInputError(
            "variance_ratio must be finite and > 0 (σ²_window / σ²_baseline); NaN if unknown"
        )
    out = r / np.sqrt(1.0 + (v - 1.0) * (1.0 - r * r))
    return float(out) if out.ndim == 0 else out


def variance_ratio(window_cov: FloatArray, baseline_cov: FloatArray) -> FloatArray:
    """σ²_window / σ²_baseline per asset from the diagonals; NaN where either is not > 0.

    Examples
    --------
    >>> import numpy as np
    >>> variance_ratio(np.diag([4.0, 1.0, 0.0]), np.diag([1.0, 2.0, 1.0])).tolist()
    [4.0, 0.5, nan]
    """
    w = np.diagonal(_square(window_cov, "window_cov"))
    b = np.diagonal(_square(baseline_cov, "baseline_cov"))
    if w.shape != b.shape:
        raise InvalidInputError(f"window_cov is {w.size}x{w.size}, baseline_cov {b.size}x{b.size}")
    ok = (w > 0) & (b > 0)
    return np.where(ok, w / np.where(ok, b, 1.0), np.nan)


def adjusted_average_correlation(
    corr: FloatArray, asset_classes: Sequence[str], variance_ratios: FloatArray
) -> dict[str, float]:
    """:func:`average_correlation` of the Forbes–Rigobon adjusted pairs.

    Parameters
    ----------
    corr, asset_classes
        As in :func:`average_correlation`.
    variance_ratios : ndarray, shape (N,)
        σ²_window / σ²_baseline of each asset (see :func:`variance_ratio`); NaN = unknown,
        which makes that asset's pairs NaN (skipped).

    Notes
    -----
    The pair (i, j) is adjusted with the geometric mean sqrt(vᵢvⱼ) of the two ratios. The
    adjustment needs the variance ratio of the shock's *source*, which a pairwise average
    cannot know; the geometric mean is symmetric in the pair, is the ratio of the pair's
    σᵢσⱼ (the scale of its covariance), and leaves a pair alone when one asset got calmer by
    as much as the other got wilder. It equals both ratios when they agree.

    Examples
    --------
    >>> import numpy as np
    >>> corr = np.array([[1.0, 0.8], [0.8, 1.0]])
    >>> out = adjusted_average_correlation(corr, ["crypto", "equity"], np.array([4.0, 4.0]))
    >>> round(out["crypto-equity"], 4)
    0.5547
    """
    c = _square(corr, "corr")
    v = _vector(variance_ratios, c.shape[0], "variance_ratios")
    if (v <= 0).any():
        raise InvalidInputError("variance_ratios must be > 0 (NaN where unknown)")
    pair_ratio = np.sqrt(np.outer(v, v))
    return average_correlation(forbes_rigobon(c, pair_ratio), asset_classes)


def absorption_ratio(cov: FloatArray, fraction: float = 0.2) -> float:
    """Share of total variance explained by the top ⌈fraction·N⌉ eigenvectors.

    Parameters
    ----------
    cov : ndarray, shape (N, N)
        Covariance matrix (symmetrized before use).
    fraction : float
        Share of the assets' count used as the number of eigenvectors, in (0, 1].

    Returns
    -------
    float
        In [0, 1]; NaN when fewer than 2 assets are usable, when a covariance between usable
        assets is NaN, or when the total variance is 0.

    Notes
    -----
    AR = Σ_{k ≤ K} λ_k / Σ_k λ_k with λ the eigenvalues of Σ in decreasing order and
    K = ⌈fraction·N⌉ (Kritzman, Li, Page & Rigobon, "Principal Components as a Measure of
    Systemic Risk", Journal of Portfolio Management 37(4), 2011). Assets whose variance is NaN
    or 0 (no data, closed or flat) are dropped first, and N counts the remaining ones. A
    pairwise-complete covariance need not be positive semi-definite: negative eigenvalues are
    clipped to 0.

    Examples
    --------
    >>> import numpy as np
    >>> absorption_ratio(np.eye(5))
    0.2
    >>> absorption_ratio(np.ones((5, 5)))
    1.0
    """
    c = _square(cov, "cov")
    if not 0.0 < fraction <= 1.0:
        raise InvalidInputError(f"fraction is {fraction}: must be in (0, 1]")
    var = np.diagonal(c)
    keep = ~np.isnan(var) & (var > 0)
    sub = c[np.ix_(keep, keep)]
    m = sub.shape[0]
    if m < 2 or np.isnan(sub).any():
        return math.nan
    eig = np.clip(np.linalg.eigvalsh((sub + sub.T) / 2.0), 0.0, None)
    total = float(eig.sum())
    if total <= 0.0:
        return math.nan
    k = math.ceil(round(fraction * m, 9))  # round: 0.2 * 15 is 3.0000000000000004
    return float(eig[-k:].sum()) / total


def _deviation_and_cov(
    r: FloatArray, mean: FloatArray, cov: FloatArray
) -> tuple[FloatArray, FloatArray] | None:
    """r − μ and Σ over the usable assets, or None when nothing is usable."""
    c = _square(cov, "cov")
    d = _vector(r, c.shape[0], "r") - _vector(mean, c.shape[0], "mean")
    var = np.diagonal(c)
    keep = ~np.isnan(d) & ~np.isnan(var) & (var > 0)
    sub = c[np.ix_(keep, keep)]
    if not keep.any() or np.isnan(sub).any():
        return None
    return d[keep], (sub + sub.T) / 2.0


def _turbulence_raw(d: FloatArray, cov: FloatArray) -> tuple[float, int]:
    """(r − μ)ᵀ Σ⁺ (r − μ) and the rank of Σ."""
    lam, vec = np.linalg.eigh(cov)
    use = lam > PINV_RCOND * lam.max()
    z = vec[:, use].T @ d
    return float(np.sum(z * z / lam[use])), int(use.sum())


def turbulence(r: FloatArray, mean: FloatArray, cov: FloatArray) -> float:
    """Mahalanobis distance of a return vector from its history, per degree of freedom.

    Parameters
    ----------
    r : ndarray, shape (N,)
        Latest returns (NaN = no return).
    mean, cov : ndarray, shapes (N,) and (N, N)
        Mean and covariance of the returns over the reference window.

    Returns
    -------
    float
        (r − μ)ᵀ Σ⁺ (r − μ) / rank(Σ), NaN when no asset is usable or a covariance between
        usable assets is NaN.

    Notes
    -----
    Kritzman & Li, "Skulls, Financial Turbulence, and Risk Management", Financial Analysts
    Journal 66(5), 2010: d = (r − μ)ᵀ Σ⁻¹ (r − μ). Divided by rank(Σ) (= N when Σ is
    invertible): if r ~ N(μ, Σ) the quadratic form is χ² with rank(Σ) degrees of freedom, so
    the result has expectation 1. Usable assets: return, mean and variance defined and
    variance > 0; the others are dropped. Singular Σ (collinear assets, W < N): Σ⁺ is the
    Moore–Penrose pseudo-inverse, eigenvalues ≤ ``PINV_RCOND`` × the largest count as 0, so
    directions in which the window never moved are ignored rather than made infinite.

    Examples
    --------
    >>> import numpy as np
    >>> cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    >>> round(turbulence(np.array([1.0, 1.0]), np.zeros(2), cov), 4)  # moves together: usual
    0.5263
    >>> round(turbulence(np.array([1.0, -1.0]), np.zeros(2), cov), 4)  # against: unusual
    10.0
    """
    usable = _deviation_and_cov(r, mean, cov)
    if usable is None:
        return math.nan
    raw, rank = _turbulence_raw(*usable)
    return raw / rank


def magnitude_surprise(r: FloatArray, mean: FloatArray, cov: FloatArray) -> float:
    """Turbulence with the correlations set to 0: Σᵢ (rᵢ − μᵢ)² / σᵢ², divided by N.

    Same inputs and usable assets as :func:`turbulence`; expectation 1 under r ~ N(μ, Σ).

    Examples
    --------
    >>> import numpy as np
    >>> cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    >>> magnitude_surprise(np.array([1.0, -1.0]), np.zeros(2), cov)
    1.0
    """
    usable = _deviation_and_cov(r, mean, cov)
    if usable is None:
        return math.nan
    d, c = usable
    return float(np.sum(d * d / np.diagonal(c))) / d.size


def correlation_surprise(r: FloatArray, mean: FloatArray, cov: FloatArray) -> float:
    """Kinlaw–Turkington correlation surprise: turbulence / magnitude surprise.

    Notes
    -----
    W. Kinlaw and D. Turkington, "Correlation Surprise", Journal of Asset Management 14, 2014:
    the ratio of the quadratic forms (r − μ)ᵀ Σ⁺ (r − μ) / (r − μ)ᵀ D⁻¹ (r − μ), D = diag(Σ),
    over the usable assets of :func:`turbulence`. About 1 when the assets co-move as their
    correlations say, > 1 when the move is unusual given the correlations (e.g. correlated
    assets moving apart, or every asset falling together when they usually do not). Equals
    ``turbulence / magnitude_surprise`` when Σ is invertible. NaN when r = μ exactly.

    Examples
    --------
    >>> import numpy as np
    >>> cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    >>> round(correlation_surprise(np.array([1.0, -1.0]), np.zeros(2), cov), 4)
    10.0
    """
    usable = _deviation_and_cov(r, mean, cov)
    if usable is None:
        return math.nan
    d, c = usable
    magnitude = float(np.sum(d * d / np.diagonal(c)))
    return _turbulence_raw(d, c)[0] / magnitude if magnitude > 0 else math.nan
