"""Funding stress: venue-averaged perpetual funding per asset, its dispersion and z-score, events.

Funding collapsing or flipping negative across venues is one of the four fire-sale signatures
(DESIGN.md "Signals"): longs stop paying to hold leverage. :class:`FundingStressDetector` keeps the
latest annualized funding rate per asset and venue, averages the fresh venues, scores the average
against its own trailing history and emits ``funding.flip`` and ``funding.extreme.start`` /
``funding.extreme.end`` events, with hysteresis so that noise around a threshold does not flap.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from signals.errors import InvalidInputError
from signals.robust import median_and_scaled_mad

NS_PER_S = 1_000_000_000
Weighting = Literal["open_interest", "equal"]
FundingEventType = Literal["funding.flip", "funding.extreme.start", "funding.extreme.end"]


def _check_ts(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidInputError(f"{name} is {value!r}: it must be an int >= 0 (ns since epoch)")
    return int(value)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True, slots=True)
class FundingParams:
    """Configuration of :class:`FundingStressDetector` (rates are annualized fractions).

    Attributes
    ----------
    max_age_s
        A venue whose latest update is older than this drops out of the average [900].
    history_step_s
        The average is sampled into its history every ``history_step_s`` of event time, on an
        epoch-aligned grid (previous-tick value at the grid time) [3600].
    history_len
        Samples kept for the z-score [168 = 7 days of hours].
    min_history
        Samples needed before z is defined (NaN before) [24].
    zscore
        ``"robust"``: (avg − median) / max(1.4826·MAD, floor); ``"classical"``:
        (avg − mean) / max(std (ddof 1), floor) ["robust"].
    min_scale_annualized
        Floor of the z denominator [0.01 = 1 %/yr].
    flip_band_annualized
        Sign hysteresis: the sign becomes + at avg ≥ band and − at avg ≤ −band [0.02].
    z_extreme, z_extreme_off
        Extreme starts at ``|z| ≥ z_extreme`` and may end once ``|z| < z_extreme_off`` [3, 2].
    negative_on_annualized, negative_off_annualized
        Extreme also starts at avg ≤ ``negative_on`` and may end once avg > ``negative_off``
        [−0.10, −0.05].

    Examples
    --------
    >>> FundingParams(z_extreme=4.0).z_extreme_off
    2.0
    >>> FundingParams(z_extreme=1.0)
    Traceback (most recent call last):
    ...
    signals.errors.InvalidInputError: z_extreme_off 2.0 must be < z_extreme 1.0
    """

    max_age_s: float = 900.0
    history_step_s: int = 3_600
    history_len: int = 168
    min_history: int = 24
    zscore: Literal["robust", "classical"] = "robust"
    min_scale_annualized: float = 0.01
    flip_band_annualized: float = 0.02
    z_extreme: float = 3.0
    z_extreme_off: float = 2.0
    negative_on_annualized: float = -0.10
    negative_off_annualized: float = -0.05

    def __post_init__(self) -> None:
        for name in ("max_age_s", "min_scale_annualized", "flip_band_annualized", "z_extreme_off"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InvalidInputError(f"{name} is {value!r}: it must be finite and > 0")
        step = self.history_step_s
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise InvalidInputError(f"history_step_s is {step!r}: it must be an int >= 1")
        if not 2 <= self.min_history <= self.history_len:
            raise InvalidInputError(
                f"min_history {self.min_history} must be in 2..history_len ({self.history_len})"
            )
        if self.zscore not in ("robust", "classical"):
            raise InvalidInputError(f"zscore is {self.zscore!r}: use 'robust' or 'classical'")
        if not self.z_extreme_off < self.z_extreme:
            raise InvalidInputError(
                f"z_extreme_off {self.z_extreme_off} must be < z_extreme {self.z_extreme}"
            )
        if not self.negative_on_annualized < self.negative_off_annualized:
            raise InvalidInputError(
                f"negative_on_annualized {self.negative_on_annualized} must be < "
                f"negative_off_annualized {self.negative_off_annualized}"
            )


@dataclass(frozen=True, slots=True)
class FundingState:
    """Aggregate funding of one asset at ``ts_ns`` (see :meth:`FundingStressDetector.get`).

    ``sign`` is the hysteresis sign state (0 before the average first leaves the flip band);
    ``history_samples`` the number of grid samples behind ``z``.

    Examples
    --------
    >>> det = FundingStressDetector()
    >>> _ = det.update(0, "ETH", "okx", 0.05)
    >>> s = det.get("ETH")
    >>> s.average_annualized, s.venues, s.sign, s.z
    (0.05, ('okx',), 1, nan)
    """

    asset: str
    ts_ns: int | None
    average_annualized: float
    dispersion_annualized: float
    z: float
    venues: tuple[str, ...]
    weighting: Weighting | None
    history_samples: int
    sign: Literal[-1, 0, 1]
    in_extreme: bool


@dataclass(frozen=True, slots=True)
class FundingEvent:
    """A funding event.

    Attributes
    ----------
    id
        Deterministic: ``funding.flip:<asset>:<ts_ns>``,
        ``funding.extreme.start:<asset>:<start_ns>``, ``funding.extreme.end:<asset>:<start_ns>``.
    type
        ``funding.flip``, ``funding.extreme.start`` or ``funding.extreme.end``.
    direction
        Flips: ``"to_negative"`` or ``"to_positive"``; None otherwise.
    reason
        Extreme start: what fired it, ``"z"``, ``"negative"`` or ``"z+negative"``; None otherwise.
    start_ns
        Extreme events: when the extreme started; None for flips.

    Examples
    --------
    >>> det = FundingStressDetector()
    >>> [ev] = det.update(0, "SOL", "bybit", -0.2)
    >>> ev.to_dict()["reason"], ev.to_dict()["z"]
    ('negative', None)
    """

    id: str
    type: FundingEventType
    ts_ns: int
    asset: str
    average_annualized: float
    dispersion_annualized: float
    z: float
    venues: tuple[str, ...]
    weighting: Weighting | None
    direction: Literal["to_negative", "to_positive"] | None = None
    reason: Literal["z", "negative", "z+negative"] | None = None
    start_ns: int | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able fields (NaN becomes ``None``, venues a list)."""
        return {
            "id": self.id,
            "type": self.type,
            "ts_ns": self.ts_ns,
            "asset": self.asset,
            "average_annualized": _none_if_nan(self.average_annualized),
            "dispersion_annualized": _none_if_nan(self.dispersion_annualized),
            "z": _none_if_nan(self.z),
            "venues": list(self.venues),
            "weighting": self.weighting,
            "direction": self.direction,
            "reason": self.reason,
            "start_ns": self.start_ns,
        }


@dataclass(slots=True)
class _Venue:
    ts_ns: int
    rate: float
    oi_usd: float | None
    oi_ts_ns: int


@dataclass(slots=True)
class _Asset:
    venues: dict[str, _Venue] = field(default_factory=dict)
    history: deque[float] = field(default_factory=deque)
    sign: Literal[-1, 0, 1] = 0
    extreme_start_ns: int | None = None
    center_scale: tuple[float, float] | None = None  # of the history; None = to recompute


class FundingStressDetector:
    """Venue-averaged funding, dispersion, z-score, flips and extremes per asset.

    Parameters
    ----------
    params
        :class:`FundingParams` (defaults when None).

    Notes
    -----
    At time ``t`` (the highest event or :meth:`advance` time seen) the fresh venues of an asset
    are those whose latest update is at most ``max_age_s`` old. Their average is weighted by open
    interest when every fresh venue has a fresh OI figure (an update without OI keeps the venue's
    previous OI while it is fresh) and the OI total is > 0: ``Σ oiᵥ·rᵥ / Σ oiᵥ``; otherwise it is
    the simple mean. The dispersion is the range ``max rᵥ − min rᵥ`` (NaN with one venue): with
    two to four venues a range reads directly as "venues disagree by X %/yr".

    z compares the average with its history: the average sampled at each ``history_step_s``
    grid time (the last ``history_len`` samples, current one excluded), robust
    (median/MAD, Rousseeuw & Croux 1993) or classical, with a floor on the scale.

    Events, evaluated for every asset on each :meth:`update` and :meth:`advance`:

    * ``funding.flip``: the sign state becomes + when avg ≥ ``flip_band`` and − when avg ≤
      −``flip_band`` and holds in between; a change from one sign to the other is a flip. The
      first sign an asset takes is its initial state, not a flip.
    * ``funding.extreme.start`` when ``|z| ≥ z_extreme`` or avg ≤ ``negative_on``;
      ``funding.extreme.end`` once ``|z| < z_extreme_off`` (or z undefined) and avg >
      ``negative_off``. With no fresh venue the state holds and nothing is emitted.

    Examples
    --------
    >>> det = FundingStressDetector()
    >>> h = 3_600 * NS_PER_S
    >>> det.update(0, "BTC", "binance", 0.10, open_interest_usd=3e9)
    []
    >>> det.update(1, "BTC", "bybit", 0.04, open_interest_usd=1e9)
    []
    >>> s = det.get("BTC")
    >>> round(s.average_annualized, 6), round(s.dispersion_annualized, 6), s.weighting
    (0.085, 0.06, 'open_interest')
    >>> [ev] = det.update(2, "BTC", "binance", -0.05)  # OI kept from the last update
    >>> ev.id, ev.direction, round(ev.average_annualized, 4)
    ('funding.flip:BTC:2', 'to_negative', -0.0275)
    >>> [ev] = det.update(3, "BTC", "bybit", -0.30, open_interest_usd=1e9)
    >>> ev.type, ev.reason, round(ev.average_annualized, 4)
    ('funding.extreme.start', 'negative', -0.1125)
    """

    def __init__(self, params: FundingParams | None = None) -> None:
        self.params = FundingParams() if params is None else params
        self._max_age_ns = round(self.params.max_age_s * NS_PER_S)
        self._step_ns = self.params.history_step_s * NS_PER_S
        self._assets: dict[str, _Asset] = {}
        self._now: int | None = None
        self._out_of_order = 0

    @property
    def now_ns(self) -> int | None:
        """Detector time: the highest event or :meth:`advance` time seen."""
        return self._now

    @property
    def out_of_order_updates(self) -> int:
        """Updates ignored because the venue already had a later one."""
        return self._out_of_order

    def update(
        self,
        ts_event_ns: int,
        asset: str,
        venue: str,
        rate_annualized: float,
        open_interest_usd: float | None = None,
    ) -> list[FundingEvent]:
        """Record a venue's funding for ``asset`` and return the events (any asset)."""
        ts = _check_ts("ts_event_ns", ts_event_ns)
        for name, value in (("asset", asset), ("venue", venue)):
            if not isinstance(value, str) or not value:
                raise InvalidInputError(f"{name} is {value!r}: give a non-empty name")
        if isinstance(rate_annualized, bool) or not (
            isinstance(rate_annualized, int | float) and math.isfinite(rate_annualized)
        ):
            raise InvalidInputError(
                f"rate_annualized for {asset!r} on {venue!r} is {rate_annualized!r}: "
                "it must be a finite number (0.1 = 10 %/yr)"
            )
        oi = open_interest_usd
        if oi is not None and (
            isinstance(oi, bool)
            or not isinstance(oi, int | float)
            or not math.isfinite(oi)
            or oi < 0
        ):
            raise InvalidInputError(
                f"open_interest_usd for {asset!r} on {venue!r} is {oi!r}: "
                "it must be finite and >= 0, or None when unknown"
            )
        self._move_time(ts)
        state = self._assets.setdefault(
            asset, _Asset(history=deque(maxlen=self.params.history_len))
        )
        old = state.venues.get(venue)
        if old is not None and ts < old.ts_ns:
            self._out_of_order += 1
            return []
        if oi is None and old is not None:
            state.venues[venue] = _Venue(ts, float(rate_annualized), old.oi_usd, old.oi_ts_ns)
        else:
            state.venues[venue] = _Venue(ts, float(rate_annualized), oi, ts)
        return self._evaluate_all()

    def advance(self, now_ns: int) -> list[FundingEvent]:
        """Move time to ``now_ns`` (no-op when earlier): stale venues drop out, events follow."""
        now = _check_ts("now_ns", now_ns)
        if self._now is not None and now < self._now:
            return []
        self._move_time(now)
        return self._evaluate_all()

    def get(self, asset: str) -> FundingState:
        """Current aggregate of ``asset`` (no side effects; NaN figures when unknown)."""
        state = self._assets.get(asset)
        if state is None or self._now is None:
            return FundingState(
                asset, self._now, math.nan, math.nan, math.nan, (), None, 0, 0, False
            )
        avg, disp, venues, weighting = self._aggregate(state, self._now)
        return FundingState(
            asset,
            self._now,
            avg,
            disp,
            self._zscore(state, avg),
            venues,
            weighting,
            len(state.history),
            state.sign,
            state.extreme_start_ns is not None,
        )

    # ------------------------------------------------------------------ internals

    def _aggregate(
        self, state: _Asset, t: int
    ) -> tuple[float, float, tuple[str, ...], Weighting | None]:
        fresh = sorted(
            (name, v) for name, v in state.venues.items() if t - v.ts_ns <= self._max_age_ns
        )
        if not fresh:
            return math.nan, math.nan, (), None
        rates = [v.rate for _, v in fresh]
        ois = [v.oi_usd if t - v.oi_ts_ns <= self._max_age_ns else None for _, v in fresh]
        weights = [w for w in ois if w is not None]
        if len(weights) == len(fresh) and math.fsum(weights) > 0:
            avg = math.fsum(w * r for w, r in zip(weights, rates, strict=True)) / math.fsum(weights)
            weighting: Weighting = "open_interest"
        else:
            avg, weighting = math.fsum(rates) / len(rates), "equal"
        disp = max(rates) - min(rates) if len(rates) > 1 else math.nan
        return avg, disp, tuple(name for name, _ in fresh), weighting

    def _zscore(self, state: _Asset, avg: float) -> float:
        p = self.params
        if len(state.history) < p.min_history or math.isnan(avg):
            return math.nan
        if state.center_scale is None:
            hist = np.fromiter(state.history, dtype=np.float64)
            if p.zscore == "robust":
                state.center_scale = median_and_scaled_mad(hist)
            else:
                state.center_scale = float(hist.mean()), float(hist.std(ddof=1))
        center, scale = state.center_scale
        return (avg - center) / max(scale, p.min_scale_annualized)

    def _move_time(self, t: int) -> None:
        if self._now is not None and t <= self._now:
            return
        if self._now is not None:
            step = self._step_ns
            first = (self._now // step + 1) * step
            for state in self._assets.values():
                if not state.venues:
                    continue
                # nothing updates inside the jump: the average is defined up to the time the
                # freshest venue goes stale, and only the last history_len samples are kept
                horizon = max(v.ts_ns for v in state.venues.values()) + self._max_age_ns
                last = min(t, horizon) // step * step
                lo = max(first, last - (self.params.history_len - 1) * step)
                for g in range(lo, last + 1, step):
                    state.history.append(self._aggregate(state, g)[0])
                    state.center_scale = None
        self._now = t

    def _evaluate_all(self) -> list[FundingEvent]:
        out: list[FundingEvent] = []
        for asset, state in self._assets.items():
            out.extend(self._evaluate(asset, state))
        return out

    def _evaluate(self, asset: str, state: _Asset) -> list[FundingEvent]:
        p = self.params
        now = self._now
        assert now is not None
        avg, disp, venues, weighting = self._aggregate(state, now)
        if math.isnan(avg):
            return []
        z = self._zscore(state, avg)
        out: list[FundingEvent] = []

        def event(
            kind: FundingEventType,
            key: int,
            direction: Literal["to_negative", "to_positive"] | None = None,
            reason: Literal["z", "negative", "z+negative"] | None = None,
        ) -> FundingEvent:
            start = None if kind == "funding.flip" else key
            return FundingEvent(
                f"{kind}:{asset}:{key}",
                kind,
                now,
                asset,
                avg,
                disp,
                z,
                venues,
                weighting,
                direction,
                reason,
                start,
            )

        sign = state.sign
        if avg >= p.flip_band_annualized:
            sign = 1
        elif avg <= -p.flip_band_annualized:
            sign = -1
        if state.sign != 0 and sign != state.sign:
            out.append(
                event("funding.flip", now, direction="to_negative" if sign < 0 else "to_positive")
            )
        state.sign = sign
        z_hit = abs(z) >= p.z_extreme
        neg_hit = avg <= p.negative_on_annualized
        if state.extreme_start_ns is None and (z_hit or neg_hit):
            state.extreme_start_ns = now
            reason: Literal["z", "negative", "z+negative"] = (
                "z+negative" if z_hit and neg_hit else ("z" if z_hit else "negative")
            )
            out.append(event("funding.extreme.start", now, reason=reason))
        elif (
            state.extreme_start_ns is not None
            and not abs(z) >= p.z_extreme_off
            and avg > p.negative_off_annualized
        ):
            start = state.extreme_start_ns
            state.extreme_start_ns = None
            out.append(event("funding.extreme.end", start))
        return out
