"""The market detector: every signal of one universe of assets, one bar at a time.

:class:`MarketDetector` is the composite that both ``firesale backtest`` and the live pipeline
run: bar closes in, per-bar figures (a ``signals.correlation.v1`` record) and events out.
Pure (numpy and the standard library; time is passed in).

Notes
-----
Per bar *t* (:meth:`MarketDetector.on_bar`, bar ``[start, end)``, ``end = start + interval``):

1. **Returns** :math:`r_{i,t} = \\ln(p_{i,t} / p_{i,s})` with *s* the asset's last bar with a
   close, when at most ``max_gap_bars`` bars lie between (gaps measured on the bar grid);
   NaN otherwise (first close, closed session, excluded or stale asset). A close is NaN when
   the asset has no price this bar; it is never forward-filled into a zero return.
2. **Turbulence** and **correlation surprise** of :math:`r_t` against the previous window: the
   mean of each asset's defined returns and the pairwise-complete covariance (ddof 1) of the W
   bars ending at *t − 1* (out of sample, Kritzman & Li 2010; Kinlaw & Turkington 2014).
3. :class:`~signals.correlation.RollingCorrelation` (W bars), the EW correlation (half-life
   h) and a per-asset EW variance (Finch 2009, half-life ``variance_baseline_half_life_bars``)
   take :math:`r_t`.
4. From the window ending at *t*: average pairwise correlation overall and per class pair
   (:func:`~signals.matrix.average_correlation`); beside it the Forbes–Rigobon adjusted one
   with variance ratios :math:`\\sigma^2_{window} / \\sigma^2_{EW\\,baseline}` (the baseline
   includes the window: a damped ratio, documented); the EW average; the **absorption ratio of
   the correlation matrix** (standardised returns, so that volatile crypto does not
   outweigh gold), over :func:`complete_block` (assets whose pairs are all defined).
5. **Liquidations**: the cascade detector is advanced to ``end`` (liquidations with event time
   in ``(start, end]`` belong to this bar); the co-selling input is the **maximum** over the
   universe's assets that have had a liquidation of their long-side robust z (the most
   stressed asset; ``"sum"`` adds them, which grows with the number of assets), and the
   evidence the **sum** of their long notional in the intensity window. Assets without any
   liquidation (an equity index, gold) and all assets before the first
   :meth:`~MarketDetector.on_liquidation` do not count: then both are None and the
   co-selling score renormalises its weights (no liquidation feed is not "zero
   liquidations"). ``liq_in_score=False`` keeps the z out of the score. Funding is advanced
   to ``end`` too.
6. :class:`~signals.cosell.CoSellDetector` takes :math:`r_t`, the overall average correlation,
   the absorption ratio, the liquidation z and notional, and the class-pair averages.

Examples
--------
>>> import numpy as np
>>> det = MarketDetector(["BTC", "ETH", "GOLD"], ["crypto", "crypto", "metal"], 300)
>>> rng = np.random.default_rng(1)
>>> prices = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (400, 3)), axis=0))
>>> for t, p in enumerate(prices):
...     out = det.on_bar(t * 300_000_000_000, p)
>>> round(out.absorption_ratio, 3), out.cosell.active, len(out.returns)
(0.423, False, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from signals.correlation import EWCorrelation, RollingCorrelation
from signals.cosell import CoSellDetector
from signals.detector_params import BarSignals, DetectorParams, LiqAggregate, SignalEvent
from signals.errors import InvalidInputError
from signals.funding import FundingEvent, FundingStressDetector
from signals.liquidations import CascadeEvent, LiquidationCascadeDetector, Side
from signals.matrix import (
    absorption_ratio,
    adjusted_average_correlation,
    average_correlation,
    correlation_surprise,
    turbulence,
    variance_ratio,
)
from signals.validate import as_vector, check_bar_time

__all__ = [
    "BarSignals",
    "DetectorParams",
    "LiqAggregate",
    "MarketDetector",
    "SignalEvent",
    "complete_block",
]

FloatArray = NDArray[np.float64]
NS_PER_S = 1_000_000_000


def complete_block(matrix: FloatArray) -> NDArray[np.intp]:
    """Indices of the assets kept so that the sub-matrix has no NaN.

    Assets with a NaN (or non-positive) diagonal go first; then, while a NaN pair remains,
    the asset with the most NaN entries in the kept block is dropped (the last such index on
    ties).

    Examples
    --------
    >>> import numpy as np
    >>> nan = np.nan
    >>> m = np.array([[1.0, 0.5, nan], [0.5, 1.0, 0.2], [nan, 0.2, 1.0]])
    >>> complete_block(m).tolist()
    [0, 1]
    >>> complete_block(np.array([[nan, nan], [nan, 1.0]])).tolist()
    [1]
    """
    diag = np.diagonal(matrix)
    keep = np.flatnonzero(np.isfinite(diag) & (diag > 0))
    while keep.size:
        bad = np.isnan(matrix[np.ix_(keep, keep)]).sum(axis=0)
        if not bad.any():
            break
        worst = keep.size - 1 - int(np.argmax(bad[::-1]))
        keep = np.delete(keep, worst)
    return keep


class MarketDetector:
    """Correlation figures, co-selling, liquidation cascades and funding stress of a universe.

    Parameters
    ----------
    assets
        Canonical asset names, the order of ``closes``.
    asset_classes
        The class of each asset (crypto, equity, metal...; no ``-`` in the names).
    interval_s
        Bar length in seconds (the grid on which gaps are measured).
    params
        :class:`DetectorParams` (defaults: 5-minute bars); the steps are in the module Notes.

    Examples
    --------
    >>> det = MarketDetector(["BTC"], ["crypto"], 60)
    >>> det.on_bar(0, np.array([100.0])).returns, det.on_bar(60 * NS_PER_S, [101.0]).returns[0]
    ((nan,), 0.009950330853168092)
    >>> det.on_liquidation(70 * NS_PER_S, "BTC", "long", 2e5)  # events of the cascade detector
    []
    >>> det.on_funding(80 * NS_PER_S, "BTC", "binance", 0.1)
    []
    >>> out = det.on_bar(120 * NS_PER_S, [100.5])  # liquidations in (120 s, 180 s] belong here
    >>> out.long_liq_notional_usd, out.long_liq_z  # z: no baseline bucket yet
    (200000.0, None)
    """

    def __init__(
        self,
        assets: Sequence[str],
        asset_classes: Sequence[str],
        interval_s: int,
        params: DetectorParams | None = None,
    ) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int) or interval_s < 1:
            raise InvalidInputError(f"interval_s={interval_s!r} must be an int >= 1 (seconds)")
        p = DetectorParams() if params is None else params
        self.params = p
        self.interval_s = interval_s
        self._interval_ns = interval_s * NS_PER_S
        self._cosell = CoSellDetector(assets, asset_classes, p.cosell)  # validates the names
        self.assets = tuple(assets)
        self.asset_classes = tuple(asset_classes)
        self._index = {a: i for i, a in enumerate(self.assets)}
        average_correlation(np.eye(len(assets)), self.asset_classes)  # validates class names
        n, w = len(assets), p.window_bars
        self._rolling = RollingCorrelation(n, w, p.recompute_every_bars, p.min_periods)
        self._ew = EWCorrelation(n, p.ew_half_life_bars)
        self._liq = LiquidationCascadeDetector(p.liquidations)
        self._funding = FundingStressDetector(p.funding)
        self._liq_assets: set[str] = set()  # universe assets with a liquidation so far
        self._last_close = np.full(n, np.nan)
        self._last_ns = np.zeros(n, dtype=np.int64)
        self._prev_ns: int | None = None
        # window mean (turbulence): ring of the last W returns, 0 where missing
        self._ring = np.zeros((w, n))
        self._ring_n = np.zeros((w, n))
        self._sum = np.zeros(n)
        self._cnt = np.zeros(n)
        self._slot = 0
        self._bars = 0
        self._cov_prev = np.full((n, n), np.nan)
        # Forbes-Rigobon baseline: EW mean and variance per asset (NaN returns skipped)
        self._alpha = 1.0 - 2.0 ** (-1.0 / p.variance_baseline_half_life_bars)
        self._base_mean = np.zeros(n)
        self._base_var = np.zeros(n)
        self._base_n = np.zeros(n, dtype=np.int64)

    @property
    def bars_seen(self) -> int:
        """Number of bars passed to :meth:`on_bar`."""
        return self._bars

    def correlation(self) -> FloatArray:
        """The rolling correlation matrix of the last W bars (NaN where undefined)."""
        return self._rolling.get()

    def on_liquidation(
        self,
        ts_event_ns: int,
        asset: str,
        liquidated_side: Side,
        notional_usd: float,
        complete: bool = True,
    ) -> list[CascadeEvent]:
        """Feed one liquidation to the cascade detector; return its events."""
        events = self._liq.update(ts_event_ns, asset, liquidated_side, notional_usd, complete)
        if asset in self._index:
            self._liq_assets.add(asset)
        return events

    def on_funding(
        self,
        ts_event_ns: int,
        asset: str,
        venue: str,
        rate_annualized: float,
        open_interest_usd: float | None = None,
    ) -> list[FundingEvent]:
        """Feed one funding update to the funding-stress detector; return its events."""
        return self._funding.update(ts_event_ns, asset, venue, rate_annualized, open_interest_usd)

    def on_bar(self, bar_start_ns: int, closes: FloatArray | Sequence[float]) -> BarSignals:
        """Take the closes of one bar (NaN = no price) and return its figures and events.

        Raises
        ------
        InvalidInputError
            Wrong shape, a close that is ±inf or <= 0, or a bar not after the previous one.
        """
        p = self._check(bar_start_ns, closes)
        end_ns = bar_start_ns + self._interval_ns
        r = self._returns(bar_start_ns, p)
        mean_prev = np.where(self._cnt > 0, self._sum / np.maximum(self._cnt, 1.0), np.nan)
        turb, surprise = self._turbulence(r, mean_prev)
        self._push(r)
        corr = self._rolling.get()
        cov = self._rolling.covariance()
        self._cov_prev = cov
        avg = average_correlation(corr, self.asset_classes)
        base = np.where(self._base_n >= self.params.window_bars, self._base_var, np.nan)
        ratios = variance_ratio(np.diag(np.diagonal(cov)), np.diag(base))
        adjusted = adjusted_average_correlation(corr, self.asset_classes, ratios)
        block = complete_block(corr)
        ar = absorption_ratio(corr[np.ix_(block, block)], self.params.absorption_fraction)
        ew_avg = average_correlation(self._ew.get(), self.asset_classes)["all"]
        events: list[SignalEvent] = []
        for i in np.flatnonzero(np.isfinite(p)):
            self._liq.update_price(end_ns, self.assets[i], float(p[i]))
        liq_z = long_usd = short_usd = None
        if self._liq.now_ns is not None:
            events += self._liq.advance(end_ns)
        if self._liq_assets:
            liq_z, long_usd, short_usd = self._liquidation_figures()
        events += self._funding.advance(end_ns)
        pairs = {k: v for k, v in avg.items() if k != "all"}
        score_z = liq_z if self.params.liq_in_score else None
        res = self._cosell.update(bar_start_ns, r, avg["all"], ar, score_z, long_usd, pairs)
        events += res.events
        return BarSignals(
            bar_start_ns, self.assets, tuple(r.tolist()), avg["all"], pairs,
            adjusted.pop("all"), adjusted, ew_avg, ar, turb, surprise, liq_z, long_usd,
            short_usd, res, tuple(events),
        )  # fmt: skip

    # ------------------------------------------------------------------ internals

    def _check(self, bar_start_ns: int, closes: FloatArray | Sequence[float]) -> FloatArray:
        check_bar_time(bar_start_ns, self._prev_ns)
        p = as_vector(closes, self.assets, "closes")
        bad = np.flatnonzero(np.isinf(p) | (p <= 0))
        if bad.size:
            i = int(bad[0])
            raise InvalidInputError(
                f"close of {self.assets[i]!r} is {p[i]}: closes must be finite and > 0 "
                "(NaN = no price this bar)"
            )
        self._prev_ns = int(bar_start_ns)
        return p

    def _returns(self, t_ns: int, p: FloatArray) -> FloatArray:
        have = np.isfinite(p)
        gap_bars = (t_ns - self._last_ns) // self._interval_ns - 1
        ok = have & np.isfinite(self._last_close) & (gap_bars <= self.params.max_gap_bars)
        r = np.full(len(p), np.nan)
        r[ok] = np.log(p[ok] / self._last_close[ok])
        self._last_close[have] = p[have]
        self._last_ns[have] = t_ns
        return r

    def _push(self, r: FloatArray) -> None:
        present = np.isfinite(r)
        x = np.where(present, r, 0.0)
        slot = self._slot
        self._sum += x - self._ring[slot]
        self._cnt += present - self._ring_n[slot]
        self._ring[slot], self._ring_n[slot] = x, present
        self._slot = (slot + 1) % self.params.window_bars
        self._bars += 1
        if self._slot == 0:  # exact re-sum once per window: no drift
            self._sum, self._cnt = self._ring.sum(axis=0), self._ring_n.sum(axis=0)
        self._rolling.update(r)
        self._ew.update(r)
        new = present & (self._base_n == 0)
        self._base_mean[new] = r[new]
        d = np.where(present, r - self._base_mean, 0.0)
        a = self._alpha
        self._base_mean += a * d
        self._base_var[present] = (1.0 - a) * (self._base_var[present] + a * d[present] ** 2)
        self._base_n += present

    def _turbulence(self, r: FloatArray, mean: FloatArray) -> tuple[float, float]:
        cov = self._cov_prev
        use = np.isfinite(r) & np.isfinite(mean)
        sub = np.where(use[:, None] & use[None, :], cov, np.nan)
        block = complete_block(sub)
        if block.size == 0:
            return math.nan, math.nan
        args = (r[block], mean[block], cov[np.ix_(block, block)])
        return turbulence(*args), correlation_surprise(*args)

    def _liquidation_figures(self) -> tuple[float | None, float, float]:
        window = self.params.liquidations.intensity_window_s
        zs: list[float] = []
        long_usd = short_usd = 0.0
        for asset in sorted(self._liq_assets, key=self._index.__getitem__):
            snap = self._liq.snapshot(asset)
            if math.isfinite(snap.long.z):
                zs.append(snap.long.z)
            long_usd += snap.long.notional_usd[window]
            short_usd += snap.short.notional_usd[window]
        if not zs:
            return None, long_usd, short_usd
        z = max(zs) if self.params.liq_z_aggregate == "max" else math.fsum(zs)
        return z, long_usd, short_usd
