"""Exponentially weighted correlation matrix of bar log returns (NaN-aware, O(N²) per bar).

Re-exported by :mod:`signals.correlation`.
"""

from __future__ import annotations

import math

import numpy as np

from signals._corrsums import FLAT_REL_TOL, FloatArray, _as_panel, _check_returns, _finish
from signals.errors import InvalidInputError

__all__ = ["EWCorrelation", "ew_correlation"]


class EWCorrelation:
    """Exponentially weighted correlation matrix, O(N²) per bar, NaN-aware.

    Parameters
    ----------
    n_assets : int
        Number of assets N.
    half_life_bars : float
        Half-life h in bars (> 0); α = 1 − 2^(−1/h).
    min_bars : int or None
        Fewest common observations for a pair to be defined. Default ``max(3, ceil(2h))``:
        after 2h bars the zero start of the covariance weighs (1 − α)^2h = 1/4.

    Notes
    -----
    Finch (2009), "Incremental calculation of weighted mean and variance", in vector form:
    d = r − μ; μ ← μ + αd; C ← (1 − α)(C + α d dᵀ) (pandas ``ewm(alpha, adjust=False)``
    with ``bias=True``). An asset's mean starts at its first return, its covariances at 0.
    Missing values: an asset without a return this bar keeps its mean, variance and all its
    covariances untouched (its clock stops; no decay), and the update runs on the sub-matrix of
    the present assets. So C may be slightly non-PSD after gaps; correlations are clipped to
    [-1, 1]. This differs from pandas' pairwise ``ewm().corr()`` (pair-specific means, decay
    during gaps) only when values are missing. NaN where the pair has fewer than ``min_bars``
    common bars or either variance Cᵢᵢ <= ``FLAT_REL_TOL`` × the EW mean of rᵢ².

    Examples
    --------
    >>> import numpy as np
    >>> ew = EWCorrelation(n_assets=2, half_life_bars=2.0, min_bars=3)
    >>> for r in ([0.01, 0.02], [-0.02, -0.01], [0.03, 0.01], [np.nan, 0.02]):
    ...     ew.update(np.array(r))
    >>> np.round(ew.get(), 4).tolist()
    [[1.0, 0.6796], [0.6796, 1.0]]
    """

    def __init__(self, n_assets: int, half_life_bars: float, min_bars: int | None = None) -> None:
        if n_assets < 1:
            raise InvalidInputError(f"n_assets is {n_assets}: need at least one asset")
        if not (math.isfinite(half_life_bars) and half_life_bars > 0):
            raise InvalidInputError(f"half_life_bars is {half_life_bars}: must be finite and > 0")
        if min_bars is None:
            min_bars = max(3, math.ceil(2.0 * half_life_bars))
        if min_bars < 2:
            raise InvalidInputError(f"min_bars is {min_bars}: a correlation needs >= 2 bars")
        self._n, self._min_bars = n_assets, min_bars
        self._alpha = 1.0 - math.pow(2.0, -1.0 / half_life_bars)
        self._mean = np.zeros(n_assets)
        self._msq = np.zeros(n_assets)  # EW mean of r², the scale of the flat test
        self._cov = np.zeros((n_assets, n_assets))
        self._n_pair = np.zeros((n_assets, n_assets), dtype=np.int64)
        self._started = np.zeros(n_assets, dtype=bool)
        self._all_started = False
        self._bars_seen = 0

    @property
    def alpha(self) -> float:
        """Smoothing factor α = 1 − 2^(−1/h)."""
        return self._alpha

    @property
    def bars_seen(self) -> int:
        """Number of bars passed to :meth:`update`."""
        return self._bars_seen

    def update(self, returns: FloatArray) -> None:
        """Add one bar of log returns, shape (n_assets,); NaN = no return for that asset."""
        r = _check_returns(returns, self._n)[0]
        a = self._alpha
        self._bars_seen += 1
        present = ~np.isnan(r)
        if self._all_started and present.all():
            d = r - self._mean
            self._mean += a * d
            self._msq += a * (r * r - self._msq)
            self._cov += a * np.outer(d, d)
            self._cov *= 1.0 - a
            self._n_pair += 1
            return
        new = present & ~self._started
        self._mean[new] = r[new]
        self._msq[new] = r[new] ** 2
        self._started |= new
        self._all_started = bool(self._started.all())
        idx = np.flatnonzero(present)
        ix = np.ix_(idx, idx)
        d = r[idx] - self._mean[idx]
        self._mean[idx] += a * d
        self._msq[idx] += a * (r[idx] ** 2 - self._msq[idx])
        self._cov[ix] = (1.0 - a) * (self._cov[ix] + a * np.outer(d, d))
        self._n_pair[ix] += 1

    def get(self) -> FloatArray:
        """EW correlation matrix (N, N); NaN where undefined."""
        var = np.diagonal(self._cov)
        flat = var <= FLAT_REL_TOL * self._msq
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_sd = np.where(flat, np.nan, 1.0 / np.sqrt(var))
        corr: FloatArray = self._cov * np.outer(inv_sd, inv_sd)
        np.copyto(corr, np.nan, where=self._n_pair < self._min_bars)
        return _finish(corr)

    def covariance(self) -> FloatArray:
        """EW covariance (Finch, bias=True) (N, N); NaN where fewer than ``min_bars`` bars."""
        return np.where(self._n_pair < self._min_bars, np.nan, self._cov)


def ew_correlation(
    returns: FloatArray, half_life_bars: float, min_bars: int | None = None
) -> FloatArray:
    """EW correlation matrix after every bar, shape (T, N, N) (runs :class:`EWCorrelation`).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[0.01, 0.02], [-0.02, -0.01], [0.03, 0.01], [np.nan, 0.02]])
    >>> np.round(ew_correlation(r, half_life_bars=2.0, min_bars=3)[-1, 0, 1], 4)
    np.float64(0.6796)
    """
    arr = _as_panel(returns)
    ew = EWCorrelation(arr.shape[1], half_life_bars, min_bars)
    out = np.empty((arr.shape[0], arr.shape[1], arr.shape[1]))
    for t, row in enumerate(arr):
        ew.update(row)
        out[t] = ew.get()
    return out
