"""Parameters of the co-selling detector (:mod:`signals.cosell`, whose Notes hold the formula).

Re-exported by :mod:`signals.cosell`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from signals.errors import InvalidInputError

__all__ = ["CoSellParams", "VolEstimator"]

VolEstimator = Literal["ew", "rolling"]


@dataclass(frozen=True, slots=True)
class CoSellParams:
    """Parameters of :class:`CoSellDetector` (bar counts; defaults tuned on 5-minute bars).

    Attributes
    ----------
    horizon_bars
        H, bars summed into the move tested for selling [6 = 30 min of 5m bars;
        :meth:`for_bar_interval` rescales every bar count to another bar length].
    z_sell
        Selling threshold, in units of the asset's own H-bar volatility [4.5].
    vol_estimator, vol_halflife_bars, vol_window_bars
        ``"ew"`` with that half-life [288 = 1 day] or ``"rolling"`` over that window [576].
    baseline_halflife_bars, baseline_sd_floor
        Half-life [864 = 3 days] and standard-deviation floor [0.02] of the EW baselines of
        the average correlation and the absorption ratio (both live in [0, 1]).
    corr_z_full, liq_z_full
        The z-score that makes component c [3] or d [20] full (1.0).
    weight_breadth, weight_classes, weight_corr, weight_liq
        Component weights W, >= 0 [0.4, 0.2, 0.2, 0.2].
    theta_on, theta_off
        Hysteresis thresholds, ``0 < theta_off <= theta_on <= 1`` [0.65, 0.4].
    min_on_bars, min_off_bars
        Consecutive bars needed to start [1] / to end [6] a flag.
    update_every_bars
        While active, a ``cosell.update`` every k bars after the start [6].
    warmup_bars
        Bars with a NaN score at start-up: no flag on a cold window [288].
    min_obs
        Observations an estimator needs (each volatility, each correlation baseline) [144].
    asset_weights
        Optional per-asset weights of the breadth; absent assets weigh 1 [None].

    Examples
    --------
    >>> CoSellParams(z_sell=3.0).theta_on
    0.65
    >>> CoSellParams(theta_on=0.3, theta_off=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    signals.errors.InvalidInputError: theta_off=0.5 > theta_on=0.3: need 0 < theta_off <= ...
    """

    horizon_bars: int = 6
    z_sell: float = 4.5
    vol_estimator: VolEstimator = "ew"
    vol_halflife_bars: float = 288.0
    vol_window_bars: int = 576
    baseline_halflife_bars: float = 864.0
    baseline_sd_floor: float = 0.02
    corr_z_full: float = 3.0
    liq_z_full: float = 20.0
    weight_breadth: float = 0.4
    weight_classes: float = 0.2
    weight_corr: float = 0.2
    weight_liq: float = 0.2
    theta_on: float = 0.65
    theta_off: float = 0.4
    min_on_bars: int = 1
    min_off_bars: int = 6
    update_every_bars: int = 6
    warmup_bars: int = 288
    min_obs: int = 144
    asset_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        ints = ("horizon_bars", "vol_window_bars", "min_on_bars", "min_off_bars",
                "update_every_bars", "min_obs")  # fmt: skip
        for name in (*ints, "warmup_bars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (name in ints):
                raise InvalidInputError(f"{name}={value!r} must be an int >= {int(name in ints)}")
        for name in ("z_sell", "vol_halflife_bars", "baseline_halflife_bars",
                     "baseline_sd_floor", "corr_z_full", "liq_z_full"):  # fmt: skip
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name}={value} must be finite and > 0")
        weights = self.component_weights
        if not all(math.isfinite(w) and w >= 0 for w in weights) or weights[0] + weights[1] <= 0:
            raise InvalidInputError(
                f"component weights {weights} must be finite and >= 0, "
                "with weight_breadth + weight_classes > 0"
            )
        if not 0 < self.theta_off <= self.theta_on <= 1:
            raise InvalidInputError(
                f"theta_off={self.theta_off} > theta_on={self.theta_on}: "
                "need 0 < theta_off <= theta_on <= 1"
                if self.theta_off > self.theta_on
                else f"theta_on={self.theta_on}, theta_off={self.theta_off}: need 0 < both <= 1"
            )
        if self.vol_estimator not in ("ew", "rolling"):
            raise InvalidInputError(f"vol_estimator={self.vol_estimator!r}: use 'ew' or 'rolling'")
        for asset, w in (self.asset_weights or {}).items():
            if not (math.isfinite(w) and w > 0):
                raise InvalidInputError(f"asset weight of {asset!r} is {w}: must be finite and > 0")

    @classmethod
    def for_bar_interval(cls, interval_s: int, **overrides: Any) -> CoSellParams:
        """Defaults rescaled from 5-minute bars to ``interval_s`` bars (same spans of time).

        Examples
        --------
        >>> p = CoSellParams.for_bar_interval(60, z_sell=5.0)
        >>> p.horizon_bars, p.vol_halflife_bars, p.warmup_bars, p.z_sell
        (30, 1440.0, 1440, 5.0)
        """
        if not isinstance(interval_s, int) or interval_s < 1:
            raise InvalidInputError(f"interval_s={interval_s!r} must be an int >= 1 (seconds)")
        f = 300 / interval_s
        spans = {"horizon_bars": 6, "vol_window_bars": 576, "min_off_bars": 6,
                 "update_every_bars": 6, "warmup_bars": 288, "min_obs": 144}  # fmt: skip
        scaled: dict[str, Any] = {k: max(1, round(v * f)) for k, v in spans.items()}
        scaled |= {"vol_halflife_bars": 288.0 * f, "baseline_halflife_bars": 864.0 * f}
        return cls(**(scaled | overrides))

    @property
    def component_weights(self) -> tuple[float, float, float, float]:
        """(breadth, classes, corr, liq) weights W."""
        return (self.weight_breadth, self.weight_classes, self.weight_corr, self.weight_liq)
