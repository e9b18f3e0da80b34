"""Kernels shared by the correlation estimators (:mod:`signals.correlation`,
:mod:`signals.ewcorr`): input checks, correlation from raw sums, two-pass fallback.

Internal module: the public names are re-exported by :mod:`signals.correlation`.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from signals.errors import InvalidInputError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: A pair is "flat" (undefined) when an asset's sum of squared deviations over the pair's bars is
#: at most ``FLAT_REL_TOL * n_obs * scale``, scale being the largest squared return that went
#: through the sums since they were last recomputed (EW: the EW mean of squared returns).
FLAT_REL_TOL: Final = 1e-10
#: Raw sums give Σ(x − x̄)² with a relative error of about ε·Σx²/Σ(x − x̄)². Pairs where that
#: ratio Σ(x − x̄)²/Σx² is below ``COND_MIN`` (nearly constant values, e.g. a window of 2)
#: are recomputed two-pass from the ring buffer, so every value stays within ~1e-12 of pandas.
COND_MIN: Final = 1e-3


def _check_returns(returns: FloatArray, n_assets: int) -> tuple[FloatArray, bool]:
    """The returns as float64 (n_assets,), and whether any is missing (NaN)."""
    try:
        arr = np.asarray(returns, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"returns are not numeric ({exc}): pass float log returns") from exc
    if arr.shape != (n_assets,):
        raise InvalidInputError(
            f"returns have shape {arr.shape}: expected ({n_assets},), one log return per asset "
            "(NaN where the asset has no return this bar)"
        )
    if np.isfinite(arr).all():
        return arr, False
    if np.isinf(arr).any():
        bad = np.flatnonzero(np.isinf(arr)).tolist()
        raise InvalidInputError(
            f"returns at asset index {bad} are infinite: pass finite log returns, "
            "or NaN where an asset has no return this bar"
        )
    return arr, True


def _block(
    n: FloatArray,
    sx: FloatArray,
    sxx: FloatArray,
    sxy: FloatArray,
    scale_x: FloatArray,
    min_periods: int,
    cov: bool,
    y: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Correlation (or covariance, ddof = 1) and ill-conditioned mask from raw sums.

    For the pairs (i, j): n = common bars, sx = Σ xᵢ, sxx = Σ xᵢ², sxy = Σ xᵢxⱼ over those
    bars, scale_x = flat-test scale of asset i; y = (Σ xⱼ, Σ xⱼ², scale of j), or None for a
    full symmetric matrix (then they are the transposes). Arrays broadcast to sxy's shape.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(n < min_periods, np.nan, n)  # too few bars: NaN flows through
        vx = sxx - (sx * sx) / n  # Σ(xᵢ − x̄ᵢ)²
        flat_x = vx <= FLAT_REL_TOL * n * scale_x
        ill_x = vx < COND_MIN * sxx
        if y is None:
            sy, vy, flat_y, ill_y = sx.T, vx.T, flat_x.T, ill_x.T
        else:
            sy, syy, scale_y = y
            vy = syy - (sy * sy) / n
            flat_y, ill_y = vy <= FLAT_REL_TOL * n * scale_y, vy < COND_MIN * syy
        flat = flat_x | flat_y
        cxy = sxy - (sx * sy) / n  # Σ(xᵢ − x̄ᵢ)(xⱼ − x̄ⱼ)
        if cov:
            out = np.where(flat, 0.0, cxy / (n - 1.0))
        else:
            out = cxy / np.sqrt(vx * vy)
            out[flat] = np.nan
    return out, (ill_x | ill_y) & ~flat


def _two_pass(
    x: FloatArray,
    present: NDArray[np.bool_],
    i: IntArray,
    j: IntArray,
    scale: FloatArray,
    min_periods: int,
) -> tuple[FloatArray, FloatArray]:
    """Correlation and covariance of the pairs (i[p], j[p]) of the bars x (T, N), two-pass."""
    m = present[:, i] & present[:, j]
    n = m.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi, xj = np.where(m, x[:, i], 0.0), np.where(m, x[:, j], 0.0)
        di = np.where(m, xi - xi.sum(axis=0) / n, 0.0)
        dj = np.where(m, xj - xj.sum(axis=0) / n, 0.0)
        cxy, vx, vy = (di * dj).sum(axis=0), (di * di).sum(axis=0), (dj * dj).sum(axis=0)
        flat = (vx <= FLAT_REL_TOL * n * scale[i]) | (vy <= FLAT_REL_TOL * n * scale[j])
        few = n < min_periods
        corr = np.where(flat | few, np.nan, cxy / np.sqrt(vx * vy))
        cov = np.where(few, np.nan, np.where(flat, 0.0, cxy / (n - 1.0)))
    return corr, cov


def _finish(corr: FloatArray) -> FloatArray:
    np.clip(corr, -1.0, 1.0, out=corr)
    np.fill_diagonal(corr, np.where(np.isnan(np.diagonal(corr)), np.nan, 1.0))
    return corr


def _as_panel(returns: FloatArray) -> FloatArray:
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidInputError(f"returns have shape {arr.shape}: expected (T, n_assets)")
    if np.isinf(arr).any():
        raise InvalidInputError("returns contain ±inf: pass finite log returns, NaN if missing")
    return arr
