"""Parameters and per-bar output of :class:`signals.detector.MarketDetector`.

Re-exported by :mod:`signals.detector`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from signals.cosell import CoSellEvent, CoSellParams, CoSellResult
from signals.errors import InvalidInputError
from signals.funding import FundingEvent, FundingParams
from signals.liquidations import CascadeEvent, LiquidationParams

__all__ = ["BarSignals", "DetectorParams", "LiqAggregate", "SignalEvent"]

LiqAggregate = Literal["max", "sum"]
SignalEvent = CoSellEvent | CascadeEvent | FundingEvent

_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Configuration of :class:`~signals.detector.MarketDetector` (defaults for 5-minute bars).

    Attributes
    ----------
    window_bars
        W, the rolling correlation window [120 = 10 h of 5m bars].
    ew_half_life_bars
        Half-life of the exponentially weighted correlation [30].
    min_periods
        Joint bars a pair needs in the window (None: ``RollingCorrelation``'s W // 2).
    recompute_every_bars
        Exact recomputation period of the rolling sums (None: every W bars).
    absorption_fraction
        Share of the assets whose eigenvectors make the absorption ratio [0.2].
    variance_baseline_half_life_bars
        Half-life of the per-asset EW variance that is the Forbes–Rigobon baseline
        [864 = 3 days of 5m bars].
    max_gap_bars
        An asset absent for at most this many bars gets its return from its last close (the
        move across the gap); longer absences give NaN [0: every gap gives NaN].
    liq_z_aggregate
        How the per-asset long-liquidation z-scores become the co-selling input ``"max"``
        (the most stressed asset) or ``"sum"`` ["max"].
    liq_in_score
        Feed that z to the co-selling score [True]; False keeps liquidations out of the score
        (cascade events and figures only), e.g. for aggregates coarser than the bars, which
        arrive after the bars they describe.
    cosell, liquidations, funding
        Parameters of the three detectors.

    Examples
    --------
    >>> DetectorParams().cosell.horizon_bars
    6
    >>> p = DetectorParams.for_bar_interval(60)
    >>> p.cosell.horizon_bars, p.variance_baseline_half_life_bars
    (30, 4320.0)
    >>> DetectorParams.for_bar_interval(86_400) == DetectorParams.daily()
    True
    """

    window_bars: int = 120
    ew_half_life_bars: float = 30.0
    min_periods: int | None = None
    recompute_every_bars: int | None = None
    absorption_fraction: float = 0.2
    variance_baseline_half_life_bars: float = 864.0
    max_gap_bars: int = 0
    liq_z_aggregate: LiqAggregate = "max"
    liq_in_score: bool = True
    cosell: CoSellParams = field(default_factory=CoSellParams)
    liquidations: LiquidationParams = field(default_factory=LiquidationParams)
    funding: FundingParams = field(default_factory=FundingParams)

    def __post_init__(self) -> None:
        for name in ("window_bars", "max_gap_bars"):
            value = getattr(self, name)
            low = 2 if name == "window_bars" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name}={value!r} must be an int >= {low}")
        for name in ("ew_half_life_bars", "variance_baseline_half_life_bars"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name}={value!r} must be finite and > 0 (bars)")
        if not 0.0 < self.absorption_fraction <= 1.0:
            raise InvalidInputError(
                f"absorption_fraction={self.absorption_fraction!r} must be in (0, 1]"
            )
        if self.liq_z_aggregate not in ("max", "sum"):
            raise InvalidInputError(f"liq_z_aggregate={self.liq_z_aggregate!r}: use 'max' or 'sum'")

    @classmethod
    def for_bar_interval(cls, interval_s: int, **overrides: Any) -> DetectorParams:
        """Defaults for ``interval_s`` bars.

        Intraday bars keep the 5-minute spans of time (:meth:`CoSellParams.for_bar_interval`;
        W and the EW half-life stay in bars), with floors so that long bars still give each
        estimator enough observations: volatility half-life >= 48 bars, ``min_obs`` >= 48,
        ``warmup_bars`` >= 96 (they bind from 30-minute bars up; at 1h they replace 24, 12
        and 24). Bars of a day or longer use :meth:`daily`.

        Examples
        --------
        >>> c = DetectorParams.for_bar_interval(3600).cosell
        >>> c.horizon_bars, c.vol_halflife_bars, c.min_obs, c.warmup_bars
        (1, 48.0, 48, 96)
        """
        if isinstance(interval_s, bool) or not isinstance(interval_s, int) or interval_s < 1:
            raise InvalidInputError(f"interval_s={interval_s!r} must be an int >= 1 (seconds)")
        if interval_s >= _DAY_S:
            return cls.daily(**overrides)
        c = CoSellParams.for_bar_interval(interval_s)
        c = replace(
            c,
            vol_halflife_bars=max(c.vol_halflife_bars, 48.0),
            min_obs=max(c.min_obs, 48),
            warmup_bars=max(c.warmup_bars, 96),
        )
        base = cls(cosell=c, variance_baseline_half_life_bars=864.0 * 300 / interval_s)
        return replace(base, **overrides)

    @classmethod
    def daily(cls, **overrides: Any) -> DetectorParams:
        """Preset for daily bars, tuned on 2019-2026 daily BTC/ETH/SOL/SPY/QQQ/gold
        (``bench/episodes.py``) on the common trading calendar (``firesale backtest`` keeps
        only the days when every class has a close; crypto weekends fold into Monday).

        W = 60 bars, EW half-life 10 bars, gaps of up to 3 bars spanned (Friday → Monday,
        Thursday → Monday over Good Friday). Co-selling: 2-bar moves below −2.5 own
        volatilities (EW, half-life 60 bars), correlation baselines with a 180-bar half-life,
        θ_on 0.45 / θ_off 0.3 (daily moves are fewer and smaller in σ than 5-minute crashes),
        flags that end after 2 calm bars, none in the first 60 bars.

        Examples
        --------
        >>> p = DetectorParams.daily()
        >>> p.window_bars, p.cosell.horizon_bars, p.cosell.z_sell, p.cosell.theta_on
        (60, 2, 2.5, 0.45)
        """
        cosell = CoSellParams(
            horizon_bars=2,
            z_sell=2.5,
            vol_halflife_bars=60.0,
            vol_window_bars=120,
            baseline_halflife_bars=180.0,
            theta_on=0.45,
            theta_off=0.3,
            min_off_bars=2,
            update_every_bars=1,
            warmup_bars=60,
            min_obs=40,
        )
        base = cls(
            window_bars=60,
            ew_half_life_bars=10.0,
            variance_baseline_half_life_bars=180.0,
            max_gap_bars=3,
            cosell=cosell,
        )
        return replace(base, **overrides)


@dataclass(frozen=True, slots=True)
class BarSignals:
    """What :meth:`~signals.detector.MarketDetector.on_bar` computed for one bar.

    Floats are NaN when undefined; liquidation figures are None before the first liquidation.
    ``corr_*`` come from the rolling window of W bars ending with this bar (``corr_avg_ew``
    from the EW matrix); ``turbulence`` and ``correlation_surprise`` score this bar's returns
    against the window that ends with the previous bar. ``events`` holds the liquidation and
    funding events decided at the bar's end, then the co-selling events.
    """

    bar_start_ns: int
    assets: tuple[str, ...]
    returns: tuple[float, ...]
    corr_avg: float
    corr_by_class_pair: Mapping[str, float]
    corr_avg_adjusted: float
    corr_adjusted_by_class_pair: Mapping[str, float]
    corr_avg_ew: float
    absorption_ratio: float
    turbulence: float
    correlation_surprise: float
    long_liq_z: float | None
    long_liq_notional_usd: float | None
    short_liq_notional_usd: float | None
    cosell: CoSellResult
    events: tuple[SignalEvent, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """The per-bar record (``signals.correlation.v1`` payload): JSON-able, NaN → None.

        Examples
        --------
        >>> import math
        >>> from signals.cosell import CoSellResult
        >>> res = CoSellResult(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
        ...                    math.nan, 0, (), (), False)
        >>> b = BarSignals(0, ("BTC",), (math.nan,), math.nan, {}, math.nan, {}, math.nan,
        ...                math.nan, math.nan, math.nan, None, None, None, res)
        >>> d = b.to_dict()
        >>> d["returns"], d["score"], d["active"], d["selling"]
        ({'BTC': None}, None, False, [])
        """
        c = self.cosell
        out: dict[str, object] = {
            "bar_start_ns": self.bar_start_ns,
            "n_defined": c.n_defined,
            "returns": dict(zip(self.assets, map(_num, self.returns), strict=True)),
            "corr_avg": _num(self.corr_avg),
            "corr_by_class_pair": {k: _num(v) for k, v in self.corr_by_class_pair.items()},
            "corr_avg_adjusted": _num(self.corr_avg_adjusted),
            "corr_adjusted_by_class_pair": {
                k: _num(v) for k, v in self.corr_adjusted_by_class_pair.items()
            },
            "corr_avg_ew": _num(self.corr_avg_ew),
            "absorption_ratio": _num(self.absorption_ratio),
            "turbulence": _num(self.turbulence),
            "correlation_surprise": _num(self.correlation_surprise),
            "long_liq_z": _num(self.long_liq_z),
            "long_liq_notional_usd": _num(self.long_liq_notional_usd),
            "short_liq_notional_usd": _num(self.short_liq_notional_usd),
        }
        for name in ("score", "breadth", "classes", "corr", "liq", "corr_avg_z"):
            out[name] = _num(getattr(c, name))
        out["absorption_ratio_z"] = _num(c.absorption_ratio_z)
        out["active"] = c.active
        out["selling"] = [s.asset for s in c.selling]
        out["classes_hit"] = list(c.classes_hit)
        return out


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
