"""Numerical helpers shared by the detectors: robust z-scores, exact running and window sums.

* :func:`median_and_scaled_mad` and :func:`robust_zscore`: the median/MAD z-score used for
  liquidation intensity and funding stress, with a floor on the scale so that a flat baseline
  (MAD = 0) gives a finite, documented answer instead of a division by zero.
* :func:`rolling_robust_zscore`: the same z-score over a trailing window of an array, for
  backfill and batch use.
* :class:`ExactSum`: a running sum with ``update`` (add) and ``revert`` (remove) that never drifts:
  ``get()`` is the correctly rounded value of the exact sum of the values currently held, i.e.
  bit-identical to :func:`math.fsum` of them, however many values came and went.
* :class:`TimeWindowSums`: exact sums over trailing event-time windows (1 m, 5 m, ...), with
  out-of-order inserts and a count of flagged values per window.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from signals.errors import InvalidInputError

#: Consistency constant of the MAD for the normal distribution, 1 / Φ⁻¹(3/4).
SCALED_MAD_FACTOR = 1.4826


def median_and_scaled_mad(values: ArrayLike) -> tuple[float, float]:
    """Median and scaled median absolute deviation of ``values``.

    Parameters
    ----------
    values
        One-dimensional finite values; NaN entries are ignored.

    Returns
    -------
    tuple of float
        ``(median, 1.4826 * median(|x - median|))``; ``(nan, nan)`` when no value is left.

    Notes
    -----
    ``MAD_s = 1.4826 · median_i |x_i − median(x)|`` estimates the standard deviation for normal
    data (Rousseeuw & Croux, "Alternatives to the median absolute deviation", JASA 1993).

    Examples
    --------
    >>> median_and_scaled_mad([1.0, 2.0, 3.0, 4.0, 100.0])
    (3.0, 1.4826)
    >>> median_and_scaled_mad([])
    (nan, nan)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median)))
    return median, SCALED_MAD_FACTOR * mad


def robust_zscore(value: float, baseline: ArrayLike, min_scale: float = 0.0) -> float:
    """Robust z-score of ``value`` against ``baseline``.

    Parameters
    ----------
    value
        The observation to score.
    baseline
        Trailing values (NaN ignored).
    min_scale
        Floor of the scale (same unit as the values), >= 0. With the default 0 a flat baseline
        (MAD = 0) gives NaN; a positive floor keeps the score finite.

    Returns
    -------
    float
        ``(value − median) / max(MAD_s, min_scale)``; NaN when the baseline is empty or the
        scale is 0.

    Notes
    -----
    ``z = (x − median(b)) / max(1.4826 · MAD(b), min_scale)``; see
    :func:`median_and_scaled_mad`.

    Examples
    --------
    >>> round(robust_zscore(10.0, [1.0, 2.0, 3.0, 4.0, 100.0]), 6)
    4.721435
    >>> robust_zscore(5.0, [0.0, 0.0, 0.0], min_scale=2.0)
    2.5
    >>> robust_zscore(5.0, [0.0, 0.0, 0.0])
    nan
    """
    if not math.isfinite(min_scale) or min_scale < 0:
        raise InvalidInputError(f"min_scale is {min_scale!r}: it must be finite and >= 0")
    median, scale = median_and_scaled_mad(baseline)
    scale = max(scale, min_scale)
    if math.isnan(median) or scale == 0.0:
        return math.nan
    return (value - median) / scale


def rolling_robust_zscore(
    values: ArrayLike, window: int, min_periods: int | None = None, min_scale: float = 0.0
) -> NDArray[np.float64]:
    """Robust z-score of each value against the ``window`` values *before* it.

    Parameters
    ----------
    values
        One-dimensional series.
    window
        Number of trailing values in the baseline (the current value is excluded), >= 1.
    min_periods
        Minimum number of non-NaN baseline values for a defined score (default ``window``).
    min_scale
        Floor of the scale, see :func:`robust_zscore`.

    Returns
    -------
    numpy.ndarray
        ``z[t] = robust_zscore(x[t], x[t-window:t])``; NaN while the baseline is too short.

    Examples
    --------
    >>> rolling_robust_zscore([1.0, 2.0, 3.0, 4.0, 10.0], window=3, min_periods=2).round(4)
    array([   nan,    nan, 2.0235, 1.349 , 4.7214])
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidInputError(f"window is {window!r}: it must be an int >= 1")
    need = window if min_periods is None else min_periods
    if isinstance(need, bool) or not isinstance(need, int) or not 1 <= need <= window:
        raise InvalidInputError(f"min_periods is {min_periods!r}: it must be an int in 1..window")
    out = np.full(x.size, np.nan)
    for t in range(x.size):
        base = x[max(0, t - window) : t]
        if np.count_nonzero(~np.isnan(base)) >= need:
            out[t] = robust_zscore(float(x[t]), base, min_scale)
    return out


class ExactSum:
    """Running sum of floats with add (``update``) and remove (``revert``), free of drift.

    The exact sum is held as a list of non-overlapping partial sums (Shewchuk's algorithm, the
    one behind :func:`math.fsum`), so removing a value cancels it exactly.

    Parameters
    ----------
    values
        Initial values (default none).

    Notes
    -----
    J. R. Shewchuk, "Adaptive precision floating-point arithmetic and fast robust geometric
    predicates", Discrete & Computational Geometry 18 (1997); the Python recipe
    "msum" (ActiveState 393090). ``get()`` returns ``math.fsum(partials)``: the correctly rounded
    exact sum. Values must be finite.

    Examples
    --------
    >>> s = ExactSum([1e16, 1.0])
    >>> s.update(-1e16)
    >>> s.get()
    1.0
    >>> s.revert(1.0)
    >>> s.get()
    0.0
    """

    __slots__ = ("_partials",)

    def __init__(self, values: Sequence[float] = ()) -> None:
        self._partials: list[float] = []
        for v in values:
            self.update(v)

    def update(self, value: float) -> None:
        """Add ``value`` (finite) to the sum."""
        if not math.isfinite(value):
            raise InvalidInputError(f"value is {value!r}: ExactSum only holds finite values")
        x = float(value)
        partials = self._partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def revert(self, value: float) -> None:
        """Remove ``value`` (one that was added before) from the sum."""
        self.update(-value)

    def get(self) -> float:
        """Correctly rounded value of the exact sum (0.0 when empty)."""
        return math.fsum(self._partials)

    def clear(self) -> None:
        """Forget every value."""
        self._partials.clear()


class TimeWindowSums:
    """Exact sums of timestamped values over several trailing event-time windows.

    Window ``w`` holds the values with ``now − w < ts ≤ now``, where ``now`` is the highest time
    passed to :meth:`advance` or :meth:`update`. Values may arrive out of order; one older than
    the longest window is refused. Each window also counts its *flagged* values (e.g. sampled
    liquidations). Sums are :class:`ExactSum`: bit-identical to ``math.fsum`` of the window.

    Parameters
    ----------
    windows_ns
        Window lengths in nanoseconds (> 0, unique).

    Notes
    -----
    One time-sorted log; window ``i`` is the suffix starting at ``starts[i]``. Advancing time moves
    each start forward (amortised O(1) per value and window); a late value is inserted by
    bisection and shifts the starts of the windows it falls outside of.

    Examples
    --------
    >>> s = TimeWindowSums([10, 100])
    >>> s.update(5, 1.0)
    True
    >>> s.update(50, 2.0, flagged=True)
    True
    >>> s.sum(0), s.sum(1), s.flagged(1)
    (2.0, 3.0, 1)
    >>> s.advance(105)
    >>> s.sum(0), s.sum(1), s.flagged(1)
    (0.0, 2.0, 1)
    >>> s.update(3, 9.0)  # older than now − 100: refused
    False
    """

    __slots__ = ("_flags", "_n_flagged", "_now", "_starts", "_sums", "_ts", "_values", "windows_ns")

    def __init__(self, windows_ns: Sequence[int]) -> None:
        ws = tuple(int(w) for w in windows_ns)
        if not ws or any(w <= 0 for w in ws) or len(set(ws)) != len(ws):
            raise InvalidInputError(f"windows_ns is {windows_ns!r}: give unique lengths > 0")
        self.windows_ns = ws
        self._ts: list[int] = []
        self._values: list[float] = []
        self._flags: list[bool] = []
        self._starts = [0] * len(ws)
        self._sums = [ExactSum() for _ in ws]
        self._n_flagged = [0] * len(ws)
        self._now: int | None = None

    @property
    def now_ns(self) -> int | None:
        """Current time (None before the first call)."""
        return self._now

    def sum(self, i: int) -> float:
        """Sum of window ``i`` (0.0 when empty)."""
        return self._sums[i].get()

    def flagged(self, i: int) -> int:
        """Number of flagged values in window ``i``."""
        return self._n_flagged[i]

    def count(self, i: int) -> int:
        """Number of values in window ``i``."""
        return len(self._ts) - self._starts[i]

    def advance(self, now_ns: int) -> None:
        """Move time to ``now_ns`` (ignored when not later) and expire old values."""
        if self._now is not None and now_ns <= self._now:
            return
        self._now = now_ns
        ts, values, flags = self._ts, self._values, self._flags
        for i, w in enumerate(self.windows_ns):
            cutoff = now_ns - w
            s = self._starts[i]
            while s < len(ts) and ts[s] <= cutoff:
                self._sums[i].revert(values[s])
                self._n_flagged[i] -= flags[s]
                s += 1
            self._starts[i] = s
            if s == len(ts):
                self._sums[i].clear()
        head = min(self._starts)
        if head > 1024 and 2 * head > len(ts):
            del ts[:head], values[:head], flags[:head]
            self._starts = [s - head for s in self._starts]

    def update(self, ts_ns: int, value: float, flagged: bool = False) -> bool:
        """Add ``value`` at ``ts_ns`` (time advances if later); False if older than all windows."""
        if self._now is None or ts_ns > self._now:
            self.advance(ts_ns)
        now = self._now
        assert now is not None
        if ts_ns <= now - max(self.windows_ns):
            return False
        p = bisect_right(self._ts, ts_ns, lo=min(self._starts))
        for i, w in enumerate(self.windows_ns):
            if ts_ns > now - w:
                self._sums[i].update(value)
                self._n_flagged[i] += flagged
            else:
                self._starts[i] += 1
        self._ts.insert(p, ts_ns)
        self._values.insert(p, float(value))
        self._flags.insert(p, bool(flagged))
        return True


class BucketBaseline:
    """Sums of values on an epoch-aligned bucket grid; median and scaled MAD of the trailing ones.

    The baseline at time ``now`` is made of the *completed* buckets before the current one: the
    last ``n_buckets`` of them, and only those wholly after ``first_ns`` (when observation began),
    with empty buckets counting as 0.

    Parameters
    ----------
    bucket_ns
        Bucket length B (> 0); bucket ``j`` is ``[j·B, (j+1)·B)``.
    n_buckets
        How many trailing buckets make the baseline (>= 1).

    Notes
    -----
    Bucket sums are :class:`ExactSum`; ``get`` caches its answer until the current bucket
    changes or a value lands in a completed bucket. Median and MAD as in
    :func:`median_and_scaled_mad`.

    Examples
    --------
    >>> b = BucketBaseline(bucket_ns=10, n_buckets=3)
    >>> for ts, v in [(0, 1.0), (12, 2.0), (15, 2.0), (25, 9.0)]:
    ...     b.update(ts, v, now_ns=ts)
    >>> b.get(now_ns=31, first_ns=0)  # buckets 0, 1, 2: sums 1, 4, 9
    (4.0, 4.4478, 3)
    >>> b.get(now_ns=31, first_ns=5)[::2]  # bucket 0 was only partly observed: 4, 9
    (6.5, 2)
    """

    __slots__ = ("_bucket_ns", "_buckets", "_cache", "_n", "_version")

    def __init__(self, bucket_ns: int, n_buckets: int) -> None:
        if bucket_ns <= 0 or n_buckets < 1:
            raise InvalidInputError(
                f"bucket_ns {bucket_ns!r} and n_buckets {n_buckets!r} must be > 0"
            )
        self._bucket_ns = bucket_ns
        self._n = n_buckets
        self._buckets: dict[int, ExactSum] = {}
        self._version = 0  # bumped when a completed bucket changes
        self._cache: tuple[int, int, int, float, float, int] | None = None

    def update(self, ts_ns: int, value: float, now_ns: int) -> None:
        """Add ``value`` to the bucket of ``ts_ns``; ``now_ns`` is the current time."""
        j = ts_ns // self._bucket_ns
        self._buckets.setdefault(j, ExactSum()).update(value)
        if j < now_ns // self._bucket_ns:
            self._version += 1

    def get(self, now_ns: int, first_ns: int) -> tuple[float, float, int]:
        """``(median, scaled MAD, number of buckets)``; NaNs when there is no bucket."""
        k = now_ns // self._bucket_ns
        lo = max(k - self._n, -(-first_ns // self._bucket_ns))
        n = max(0, k - lo)
        key = (k, self._version, lo)
        if self._cache is not None and self._cache[:3] == key:
            return self._cache[3], self._cache[4], self._cache[5]
        for old in [j for j in self._buckets if j < k - self._n]:
            del self._buckets[old]
        buckets = self._buckets
        median, mad = median_and_scaled_mad(
            [buckets[j].get() if j in buckets else 0.0 for j in range(lo, k)]
        )
        self._cache = (*key, median, mad, n)
        return median, mad, n
