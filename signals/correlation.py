"""Rolling-window and exponentially weighted correlation matrices of bar log returns.

Both estimators take one vector of log returns per bar (NaN = the asset has no return this bar)
and cost O(N²) per bar. Undefined entries (too few joint observations, flat asset) are NaN,
never 0 and never ±1 garbage.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from signals._corrsums import (
    COND_MIN,
    FLAT_REL_TOL,
    FloatArray,
    IntArray,
    _as_panel,
    _block,
    _check_returns,
    _finish,
    _two_pass,
)
from signals.errors import InvalidInputError
from signals.ewcorr import EWCorrelation, ew_correlation

__all__ = [
    "COND_MIN",
    "FLAT_REL_TOL",
    "EWCorrelation",
    "RollingCorrelation",
    "ew_correlation",
    "rolling_correlation",
]


class RollingCorrelation:
    """Pairwise-complete correlation matrix over the last ``window_bars`` bars, O(N²) per bar.

    Parameters
    ----------
    n_assets : int
        Number of assets N (fixed column order).
    window_bars : int
        Window length W in bars (>= 2).
    recompute_every_bars : int or None
        Recompute the sums exactly from the ring buffer every K bars (default K = W), which
        bounds the round-off drift of the add/remove updates.
    min_periods : int or None
        Fewest common bars for a pair to be defined (2 <= min_periods <= W). Default
        ``min(W, max(3, W // 2))``: a pair needs half a window of joint observations, so a
        cold window, or an asset absent for more than half of it, gives NaN.

    Notes
    -----
    Sliding sums over the window (notes/streaming.md D.1), pairwise-complete with the
    presence masks mᵢ, exactly like pandas ``DataFrame.corr(min_periods)`` on the window:
    nᵢⱼ = Σ mᵢmⱼ, Sxᵢⱼ = Σ mᵢmⱼxᵢ, Sxxᵢⱼ = Σ mᵢmⱼxᵢ², Sxyᵢⱼ = Σ xᵢxⱼ (x = 0 where missing), and

        ρᵢⱼ = (Sxyᵢⱼ − SxᵢⱼSxⱼᵢ/nᵢⱼ) / sqrt((Sxxᵢⱼ − Sxᵢⱼ²/nᵢⱼ)(Sxxⱼᵢ − Sxⱼᵢ²/nᵢⱼ)).

    They are kept as dense sums plus corrections for missing bars (uᵢ = 1 − mᵢ:
    nᵢⱼ = n − Uᵢ − Uⱼ + Σuᵢuⱼ, Sxᵢⱼ = Σxᵢ − Σxᵢuⱼ, Sxxᵢⱼ = Σxᵢ² − Σxᵢ²uⱼ): a bar costs one
    rank-2 update of Sxy, a gap touches only the missing assets' rows, and ``get()`` redoes
    only the rows of assets with a gap in the window. Raw sums lose precision when
    |mean| ≫ std (feed log returns, never prices); pairs where Σ(x − x̄)²/Σx² < ``COND_MIN``
    (nearly constant values, tiny windows) are recomputed two-pass from the ring buffer.
    NaN where nᵢⱼ < min_periods or either variance is flat (see ``FLAT_REL_TOL``); the
    diagonal is 1.0 where the asset's own variance is defined; values are clipped to [-1, 1].
    ``covariance()`` uses ddof = 1 (pandas ``DataFrame.cov``) and is exactly 0 against a flat
    asset. Reference: Chan, Golub & LeVeque, "Algorithms for computing the sample variance:
    analysis and recommendations", The American Statistician 37(3), 1983 (round-off of
    updated sums versus two-pass).

    Examples
    --------
    >>> import numpy as np
    >>> rc = RollingCorrelation(n_assets=2, window_bars=4, min_periods=3)
    >>> for r in ([0.01, 0.02], [-0.02, -0.01], [0.03, 0.01], [np.nan, 0.02]):
    ...     rc.update(np.array(r))
    >>> rc.n_obs().tolist()
    [[3, 3], [3, 4]]
    >>> np.round(rc.get(), 4).tolist()
    [[1.0, 0.737], [0.737, 1.0]]
    >>> rc.is_warm
    True
    """

    def __init__(
        self,
        n_assets: int,
        window_bars: int,
        recompute_every_bars: int | None = None,
        min_periods: int | None = None,
    ) -> None:
        if n_assets < 1:
            raise InvalidInputError(f"n_assets is {n_assets}: need at least one asset")
        if window_bars < 2:
            raise InvalidInputError(f"window_bars is {window_bars}: a correlation needs >= 2")
        if min_periods is None:
            min_periods = min(window_bars, max(3, window_bars // 2))
        if not 2 <= min_periods <= window_bars:
            raise InvalidInputError(
                f"min_periods is {min_periods}: choose 2 <= min_periods <= window_bars "
                f"({window_bars})"
            )
        k = window_bars if recompute_every_bars is None else recompute_every_bars
        if k < 1:
            raise InvalidInputError(f"recompute_every_bars is {k}: must be >= 1")
        n, w = n_assets, window_bars
        self._n, self._w, self._k, self._min_periods = n, w, k, min_periods
        self._buf = np.zeros((w, n))  # ring buffer of returns, 0 where missing
        self._miss = np.zeros((w, n), dtype=bool)
        self._no_gap = np.zeros(n, dtype=bool)
        self._none = np.zeros(0, dtype=np.int64)
        self._slot = 0
        self._bars_seen = 0
        self._n_missing = 0  # missing entries in the window
        self._s1 = np.zeros(n)  # Σ xᵢ
        self._sxy = np.zeros((n, n))  # Σ xᵢxⱼ
        self._scale = np.zeros(n)  # max xᵢ² since the last recompute
        self._u = np.zeros(n)  # Uᵢ = Σ uᵢ
        self._uu = np.zeros((n, n))  # Σ uᵢuⱼ
        self._v = np.zeros((n, n))  # v[j, i] = Σ xᵢuⱼ
        self._v2 = np.zeros((n, n))  # v2[j, i] = Σ xᵢ²uⱼ
        self._lhs = np.zeros((2, n))  # scratch for the rank-2 products
        self._rhs = np.zeros((2, n))
        self._tmp = np.zeros((n, n))
        self._g = np.zeros((2, n))  # scratch of _outer; row 1 stays 0
        self._h = np.zeros((2, n))

    @property
    def bars_seen(self) -> int:
        """Number of bars passed to :meth:`update`."""
        return self._bars_seen

    @property
    def is_warm(self) -> bool:
        """True once the window holds ``window_bars`` bars."""
        return self._bars_seen >= self._w

    @property
    def min_periods(self) -> int:
        """Fewest common bars for a pair to be defined."""
        return self._min_periods

    def _add_gaps(self, x: FloatArray, missing: NDArray[np.bool_], sign: float) -> int:
        idx = np.flatnonzero(missing)
        if idx.size:
            self._u[idx] += sign
            self._uu[np.ix_(idx, idx)] += sign
            self._v[idx] += sign * x
            self._v2[idx] += sign * (x * x)
        return int(idx.size)

    def update(self, returns: FloatArray) -> None:
        """Add one bar of log returns, shape (n_assets,); NaN = no return for that asset."""
        r, has_gap = _check_returns(returns, self._n)
        missing = np.isnan(r) if has_gap else self._no_gap
        x = np.where(missing, 0.0, r) if has_gap else r
        slot = self._slot
        old_x = self._buf[slot]
        self._s1 += x - old_x
        lhs, rhs = self._lhs, self._rhs
        lhs[0] = x
        lhs[1] = old_x
        rhs[0] = x
        np.negative(old_x, out=rhs[1])
        self._sxy += np.matmul(lhs.T, rhs, out=self._tmp)  # x xᵀ − old oldᵀ
        if self._n_missing or has_gap:
            old_missing = self._miss[slot]
            self._n_missing += self._add_gaps(x, missing, 1.0)
            self._n_missing -= self._add_gaps(old_x, old_missing, -1.0)
            old_missing[:] = missing
            if self._n_missing == 0:  # drop the round-off left in the corrections
                for arr in (self._u, self._uu, self._v, self._v2):
                    arr.fill(0.0)
        old_x[:] = x
        np.maximum(self._scale, x * x, out=self._scale)
        self._slot = (slot + 1) % self._w
        self._bars_seen += 1
        if self._bars_seen % self._k == 0:
            self._recompute()

    def _recompute(self) -> None:
        x = self._buf
        x2 = x * x
        self._s1 = x.sum(axis=0)
        self._sxy = x.T @ x
        self._scale = x2.max(axis=0)
        for arr in (self._u, self._uu, self._v, self._v2):
            arr.fill(0.0)
        cols = np.flatnonzero(self._miss.any(axis=0))
        if cols.size:
            u = self._miss[:, cols].astype(np.float64)
            self._u[cols] = u.sum(axis=0)
            self._uu[np.ix_(cols, cols)] = u.T @ u
            self._v[cols] = u.T @ x
            self._v2[cols] = u.T @ x2

    def _outer(self, v: FloatArray, out: FloatArray) -> FloatArray:
        # v vᵀ as gᵀh with g = h = [v; 0] (2, N) in two buffers (one buffer makes numpy pick
        # the slower syrk): one BLAS call, exactly symmetric, 3x faster than np.outer.
        self._g[0] = v
        self._h[0] = v
        return np.matmul(self._g.T, self._h, out=out)

    def _gap_rows(self, cov: bool) -> tuple[IntArray | slice, FloatArray, NDArray[np.bool_]]:
        """Rows (and ill mask) of the matrix for the assets with a gap in the window."""
        gaps = np.flatnonzero(self._u > 0.5)
        c, s1, s2, sc = float(self._count()), self._s1, self._sxy.diagonal(), self._scale
        minp = self._min_periods
        u, uu = self._u, self._uu
        if 2 * gaps.size > self._n:  # most assets: the full matrix, with views
            n, sx, sxx = c - u[:, None] - u + uu, s1[:, None] - self._v.T, s2[:, None] - self._v2.T
            return slice(None), *_block(n, sx, sxx, self._sxy, sc[:, None], minp, cov)
        k = gaps
        n = c - u[k, None] - u + uu[k]
        sx, sxx = s1[k, None] - self._v[:, k].T, s2[k, None] - self._v2[:, k].T
        y = (s1[None, :] - self._v[k], s2[None, :] - self._v2[k], sc)
        return k, *_block(n, sx, sxx, self._sxy[k], sc[k, None], minp, cov, y)

    def _count(self) -> int:
        return min(self._bars_seen, self._w)

    def _dense(self, cov: bool) -> tuple[FloatArray, IntArray]:
        """The matrix as if no value were missing, and its ill-conditioned assets."""
        c = self._count()
        out = self._outer(self._s1 / math.sqrt(c), out=np.empty_like(self._sxy))
        np.subtract(self._sxy, out, out=out)  # Σ(x − x̄)(y − ȳ) = Sxy − Sx Syᵀ / c
        var = out.diagonal().copy()
        flat = var <= FLAT_REL_TOL * c * self._scale
        if cov:
            out /= c - 1.0
            out[flat], out[:, flat] = 0.0, 0.0
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                inv_sd = np.where(flat, np.nan, 1.0 / np.sqrt(var))
            np.multiply(out, self._outer(inv_sd, out=self._tmp), out=out)
        ill = var < COND_MIN * self._sxy.diagonal()
        return out, (np.flatnonzero(ill & ~flat) if ill.any() else self._none)

    def _read(self, cov: bool) -> FloatArray:
        c = self._count()
        if c < self._min_periods:
            return np.full((self._n, self._n), np.nan)
        i = j = np.zeros(0, dtype=np.int64)
        if self._n_missing:
            k, rows, ill = self._gap_rows(cov)
            i, j = np.nonzero(ill)
            if isinstance(k, slice):
                out = rows
            else:
                out, bad = self._dense(cov)
                out[k], out[:, k] = rows, rows.T
                i = np.concatenate([k[i], np.repeat(bad, self._n)])
                j = np.concatenate([j, np.tile(np.arange(self._n), bad.size)])
        else:
            out, bad = self._dense(cov)
            if bad.size:
                i, j = np.repeat(bad, self._n), np.tile(np.arange(self._n), bad.size)
        if i.size:  # ill-conditioned pairs: two-pass from the ring buffer
            present = ~self._miss[:c]
            exact = _two_pass(self._buf[:c], present, i, j, self._scale, self._min_periods)
            out[i, j] = out[j, i] = exact[1] if cov else exact[0]
        return out if cov else _finish(out)

    def get(self) -> FloatArray:
        """Correlation matrix (N, N) of the current window; NaN where undefined."""
        return self._read(cov=False)

    def covariance(self) -> FloatArray:
        """Pairwise-complete covariance (ddof = 1) of the window; NaN where nᵢⱼ < min_periods."""
        return self._read(cov=True)

    def n_obs(self) -> IntArray:
        """Number of common (both present) bars of each pair in the window, (N, N)."""
        u = self._u
        n = self._count() - u[:, None] - u[None, :] + self._uu
        return np.rint(n).astype(np.int64)


def rolling_correlation(
    returns: FloatArray, window_bars: int, min_periods: int | None = None
) -> FloatArray:
    """Rolling correlation matrices recomputed exactly for every bar (backfill and oracle).

    Parameters
    ----------
    returns : ndarray, shape (T, N)
        Log returns, NaN where missing.
    window_bars, min_periods
        As in :class:`RollingCorrelation` (same defaults).

    Returns
    -------
    ndarray, shape (T, N, N)
        Element t is the correlation matrix of bars ``max(0, t − W + 1) .. t``.

    Notes
    -----
    Same definitions as :class:`RollingCorrelation`, but every window is summed afresh with
    masked matrix products (O(W·N²) per bar, no drift): nᵢⱼ = MᵀM, Sx = XᵀM, Sxx = (X²)ᵀM,
    Sxy = XᵀX, with X the zero-filled window and M its presence mask.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[0.01, 0.02], [-0.02, -0.01], [0.03, 0.01], [np.nan, 0.02]])
    >>> np.round(rolling_correlation(r, window_bars=4, min_periods=3)[-1, 0, 1], 4)
    np.float64(0.737)
    """
    arr = _as_panel(returns)
    minp = RollingCorrelation(1, window_bars, min_periods=min_periods).min_periods
    present = ~np.isnan(arr)
    mask = present.astype(np.float64)
    x = np.where(present, arr, 0.0)
    out = np.empty((arr.shape[0], arr.shape[1], arr.shape[1]))
    for t in range(arr.shape[0]):
        lo = max(0, t - window_bars + 1)
        xw, mw = x[lo : t + 1], mask[lo : t + 1]
        x2 = xw * xw
        sc = x2.max(axis=0)
        sx, sxx = xw.T @ mw, x2.T @ mw
        corr, ill = _block(mw.T @ mw, sx, sxx, xw.T @ xw, sc[:, None], minp, cov=False)
        i, j = np.nonzero(ill)
        corr[i, j] = _two_pass(xw, present[lo : t + 1], i, j, sc, minp)[0]
        out[t] = _finish(corr)
    return out
