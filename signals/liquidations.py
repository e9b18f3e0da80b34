"""Liquidation cascades: rolling notional per asset and side, robust intensity, cascade events.

Per asset and liquidated side (``long``: long positions force-closed, the fire-sale side),
:class:`LiquidationCascadeDetector` keeps exact event-time sums of ``notional_usd`` over trailing
windows (1 m, 5 m, 1 h, 24 h by default), scores the intensity window (5 m) against a trailing
robust baseline, and emits ``liquidation.cascade.start`` / ``.peak`` / ``.end`` events.

Venue completeness is carried through: Binance pushes at most one liquidation per symbol per
second (``complete=False``, "sampled"), so a figure that includes a sampled event is a lower
bound and is labelled ``"sampled"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from signals.errors import InvalidInputError
from signals.robust import BucketBaseline, ExactSum, TimeWindowSums

Side = Literal["long", "short"]
SIDES: tuple[Side, Side] = ("long", "short")
CascadeKind = Literal["start", "peak", "end"]
Completeness = Literal["complete", "sampled"]

NS_PER_S = 1_000_000_000


def _nan_to_none(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def _check_ts(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidInputError(f"{name} is {value!r}: it must be an int >= 0 (ns since epoch)")
    return int(value)


@dataclass(frozen=True, slots=True)
class LiquidationParams:
    """Configuration of :class:`LiquidationCascadeDetector` (defaults in brackets).

    Attributes
    ----------
    windows_s
        Rolling windows reported by :meth:`~LiquidationCascadeDetector.snapshot`
        [(60, 300, 3600, 86400)]. Events older than the longest are dropped as late.
    intensity_window_s
        The window whose notional is scored; one of ``windows_s`` [300].
    baseline_s
        Trailing span of the baseline, a multiple of ``intensity_window_s`` [86400].
    min_baseline_windows
        Completed baseline windows needed before z is defined (NaN before) [12 = 1 h].
    z_on, z_off
        Start a cascade at ``z ≥ z_on``; it ends after ``z < z_off`` for ``min_off_s`` [5, 2].
    min_notional_usd
        A cascade also needs at least this much notional in the intensity window [500 000].
    min_off_s
        How long z must stay below ``z_off`` before ``end`` [120].
    peak_step_ratio
        ``peak`` is emitted when the window notional exceeds the last emitted start/peak
        figure by this ratio [0.25 = +25 %].
    mad_floor_usd, mad_floor_ratio
        Floors of the z denominator: ``max(1.4826·MAD, mad_floor_ratio·median, mad_floor_usd)``
        [10 000 USD, 0.1].

    Examples
    --------
    >>> LiquidationParams(z_on=6.0).z_off
    2.0
    >>> LiquidationParams(z_on=1.0)
    Traceback (most recent call last):
    ...
    signals.errors.InvalidInputError: z_off 2.0 must be < z_on 1.0
    """

    windows_s: tuple[int, ...] = (60, 300, 3_600, 86_400)
    intensity_window_s: int = 300
    baseline_s: int = 86_400
    min_baseline_windows: int = 12
    z_on: float = 5.0
    z_off: float = 2.0
    min_notional_usd: float = 500_000.0
    min_off_s: float = 120.0
    peak_step_ratio: float = 0.25
    mad_floor_usd: float = 10_000.0
    mad_floor_ratio: float = 0.1

    def __post_init__(self) -> None:
        ws = self.windows_s
        if not ws or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in ws):
            raise InvalidInputError(f"windows_s is {ws!r}: give whole seconds >= 1")
        if len(set(ws)) != len(ws):
            raise InvalidInputError(f"windows_s {ws!r} has duplicates")
        if self.intensity_window_s not in ws:
            raise InvalidInputError(
                f"intensity_window_s {self.intensity_window_s!r} is not in windows_s {ws!r}"
            )
        b, w = self.baseline_s, self.intensity_window_s
        if not isinstance(b, int) or b < w or b % w:
            raise InvalidInputError(f"baseline_s {b!r} must be a multiple of {w} (>= it)")
        if not 1 <= self.min_baseline_windows <= b // w:
            raise InvalidInputError(
                f"min_baseline_windows {self.min_baseline_windows!r} must be in 1..{b // w}"
            )
        finite = ("z_on", "z_off", "min_notional_usd", "min_off_s", "peak_step_ratio")
        for name in (*finite, "mad_floor_usd", "mad_floor_ratio"):
            value = getattr(self, name)
            if not math.isfinite(value) or (value < 0 and name not in ("z_on", "z_off")):
                raise InvalidInputError(f"{name} is {value!r}: it must be finite and >= 0")
        if not self.z_off < self.z_on:
            raise InvalidInputError(f"z_off {self.z_off} must be < z_on {self.z_on}")
        if self.mad_floor_usd <= 0 or self.peak_step_ratio <= 0:
            raise InvalidInputError("mad_floor_usd and peak_step_ratio must be > 0")


@dataclass(frozen=True, slots=True)
class CascadeEvent:
    """A cascade event (``type`` = ``liquidation.cascade.<kind>``).

    Attributes
    ----------
    id
        Deterministic: ``liquidation.cascade.<kind>:<asset>:<side>:<start_ns>`` (peaks add
        ``:<peak_ns>``), so replays produce the same ids.
    ts_ns
        Detector time when the event was decided.
    start_ns, peak_ns, end_ns
        When z first reached ``z_on``; when the window notional peaked; when z fell below
        ``z_off`` for good (None except for ``end``).
    window_notional_usd, z, baseline_median_usd, multiple_of_normal
        Intensity window figures at ``ts_ns``; ``multiple_of_normal`` = window notional /
        baseline median (NaN when the median is 0).
    peak_window_notional_usd, peak_z, peak_multiple_of_normal
        The same at the peak.
    total_notional_usd
        Sum of the events in ``(start_ns − intensity_window, ts_ns]``.
    price_start, price_last, price_move_ratio
        Latest price fed with ``update_price`` at the start and now; ``last/start − 1``
        (NaN without prices).
    completeness
        ``"sampled"`` when any event in the total came from a sampled venue (a lower bound).

    Examples
    --------
    See :class:`LiquidationCascadeDetector`; ``to_dict()`` gives JSON-able values:

    >>> det = LiquidationCascadeDetector(LiquidationParams(min_baseline_windows=1))
    >>> _ = det.advance(0)
    >>> [ev] = det.update(300 * NS_PER_S, "BTC", "long", 1e6, complete=True)
    >>> ev.to_dict()["price_move_ratio"] is None  # no price fed: undefined
    True
    """

    id: str
    type: str
    kind: CascadeKind
    ts_ns: int
    asset: str
    side: Side
    start_ns: int
    peak_ns: int
    end_ns: int | None
    window_s: int
    window_notional_usd: float
    z: float
    baseline_median_usd: float
    multiple_of_normal: float
    peak_window_notional_usd: float
    peak_z: float
    peak_multiple_of_normal: float
    total_notional_usd: float
    price_start: float
    price_last: float
    price_move_ratio: float
    completeness: Completeness

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able fields (NaN becomes ``None``)."""
        return {k: _nan_to_none(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class SideSnapshot:
    """Rolling figures of one side: notional and completeness per window (keyed by seconds),
    z of the intensity window, its baseline and whether a cascade is on.

    Examples
    --------
    >>> det = LiquidationCascadeDetector()
    >>> _ = det.update(0, "BTC", "short", 5e4, complete=False)
    >>> s = det.snapshot("BTC").short
    >>> s.notional_usd[300], s.completeness[300], s.z, s.in_cascade
    (50000.0, 'sampled', nan, False)
    """

    notional_usd: Mapping[int, float]
    completeness: Mapping[int, Completeness]
    z: float
    baseline_median_usd: float
    baseline_windows: int
    in_cascade: bool


@dataclass(frozen=True, slots=True)
class LiquidationSnapshot:
    """Rolling notional per window and side, and intensity, of one asset at ``ts_ns``.

    Examples
    --------
    >>> LiquidationCascadeDetector().snapshot("ETH").long.notional_usd[60]
    0.0
    """

    asset: str
    ts_ns: int | None
    long: SideSnapshot
    short: SideSnapshot


@dataclass(slots=True)
class _Cascade:
    start_ns: int
    total: ExactSum
    sampled: bool
    peak_ns: int
    peak_usd: float
    peak_z: float
    peak_multiple: float
    emitted_usd: float
    below_since_ns: int | None
    price_start: float


class _SideState:
    __slots__ = ("baseline", "cascade", "windows")

    def __init__(self, windows_ns: tuple[int, ...], bucket_ns: int, n_buckets: int) -> None:
        self.windows = TimeWindowSums(windows_ns)
        self.baseline = BucketBaseline(bucket_ns, n_buckets)
        self.cascade: _Cascade | None = None


class LiquidationCascadeDetector:
    """Rolling liquidation notional, robust intensity and cascade events per asset and side.

    Parameters
    ----------
    params
        :class:`LiquidationParams` (defaults when None).

    Notes
    -----
    Windows are ``(now − w, now]`` with ``now`` the highest event time (or :meth:`advance`
    time) seen. The baseline of the intensity window ``B`` (5 m) is the set of notional sums of
    the completed epoch-aligned ``B`` buckets in the trailing ``baseline_s`` before the current
    bucket, observed since the detector's first input (an asset-side without events had zero
    notional in a bucket). With ``n`` the rolling ``B`` notional,

    ``z = (n − median) / max(1.4826·MAD, mad_floor_ratio·median, mad_floor_usd)``

    (Rousseeuw & Croux 1993). The floors keep z finite when most buckets are zero (MAD = 0) and
    make a burst that is small in dollars not count as extreme. z is NaN with fewer than
    ``min_baseline_windows`` baseline buckets.

    Cascade state machine, evaluated for every asset-side on each :meth:`update` and
    :meth:`advance`: idle → ``start`` when ``z ≥ z_on`` and ``n ≥ min_notional_usd``; while
    active, the peak tracks the largest ``n`` and a ``peak`` event is emitted when ``n`` exceeds
    the last emitted figure by ``peak_step_ratio``; ``end`` when every evaluation for at least
    ``min_off_s`` has had ``z < z_off`` (``end_ns`` = the first of them). Time resolution is that
    of the calls: call :meth:`advance` periodically when events are sparse.

    Examples
    --------
    >>> det = LiquidationCascadeDetector(LiquidationParams(min_baseline_windows=2))
    >>> t0 = 1_762_214_400 * NS_PER_S
    >>> for k in range(4):  # quiet: 20 kUSD of longs per 5 minutes
    ...     _ = det.update(t0 + k * 300 * NS_PER_S, "ETH", "long", 20_000.0, complete=True)
    >>> [ev] = det.update(t0 + 1200 * NS_PER_S, "ETH", "long", 3e6, complete=False)
    >>> ev.id, ev.z, ev.multiple_of_normal, ev.completeness
    ('liquidation.cascade.start:ETH:long:1762215600000000000', 298.0, 150.0, 'sampled')
    >>> det.advance(t0 + 1800 * NS_PER_S)  # window empty, z < z_off: the off-timer starts
    []
    >>> [end] = det.advance(t0 + 1920 * NS_PER_S)  # 120 s later: end
    >>> end.type, end.total_notional_usd, (end.end_ns - end.start_ns) // NS_PER_S
    ('liquidation.cascade.end', 3000000.0, 600)
    """

    def __init__(self, params: LiquidationParams | None = None) -> None:
        self.params = LiquidationParams() if params is None else params
        p = self.params
        self._windows_s = tuple(sorted(p.windows_s))
        self._iw = self._windows_s.index(p.intensity_window_s)
        self._bucket_ns = p.intensity_window_s * NS_PER_S
        self._n_buckets = p.baseline_s // p.intensity_window_s
        self._max_window_ns = self._windows_s[-1] * NS_PER_S
        self._states: dict[tuple[str, Side], _SideState] = {}
        self._prices: dict[str, tuple[int, float]] = {}
        self._late: dict[str, int] = {}
        self._first_ns: int | None = None
        self._now: int | None = None

    @property
    def now_ns(self) -> int | None:
        """Detector time: the highest event or :meth:`advance` time seen."""
        return self._now

    @property
    def late_events(self) -> dict[str, int]:
        """Events dropped per asset because they were older than the longest window."""
        return dict(self._late)

    def update(
        self,
        ts_event_ns: int,
        asset: str,
        liquidated_side: Side,
        notional_usd: float,
        complete: bool,
    ) -> list[CascadeEvent]:
        """Add one liquidation and return the cascade events it triggers (any asset-side)."""
        ts = _check_ts("ts_event_ns", ts_event_ns)
        if not isinstance(asset, str) or not asset:
            raise InvalidInputError(f"asset is {asset!r}: give the canonical asset name")
        if liquidated_side not in SIDES:
            raise InvalidInputError(
                f"liquidated_side is {liquidated_side!r}: use 'long' or 'short' (the position)"
            )
        if (
            isinstance(notional_usd, bool)
            or not isinstance(notional_usd, int | float)
            or not (math.isfinite(notional_usd) and notional_usd > 0)
        ):
            raise InvalidInputError(
                f"notional_usd for {asset!r} is {notional_usd!r}: it must be finite and > 0"
            )
        if not isinstance(complete, bool):
            raise InvalidInputError(f"complete is {complete!r}: it must be True or False")
        self._move_time(ts)
        assert self._now is not None
        if ts <= self._now - self._max_window_ns:
            self._late[asset] = self._late.get(asset, 0) + 1
            return []
        for side in SIDES:
            if (asset, side) not in self._states:
                self._states[(asset, side)] = fresh = self._new_state()
                fresh.windows.advance(self._now)
        state = self._states[(asset, liquidated_side)]
        state.windows.update(ts, float(notional_usd), flagged=not complete)
        state.baseline.update(ts, float(notional_usd), self._now)
        c = state.cascade
        if c is not None and ts > c.start_ns - self._bucket_ns:
            c.total.update(float(notional_usd))
            c.sampled = c.sampled or not complete
        return self._evaluate_all()

    def update_price(self, ts_ns: int, asset: str, price: float) -> None:
        """Record a price of ``asset`` for the cascades' price move (latest by event time)."""
        ts = _check_ts("ts_ns", ts_ns)
        if not isinstance(price, int | float) or not (math.isfinite(price) and price > 0):
            raise InvalidInputError(
                f"price for {asset!r} is {price!r}: prices must be finite and > 0"
            )
        old = self._prices.get(asset)
        if old is None or ts >= old[0]:
            self._prices[asset] = (ts, float(price))

    def advance(self, now_ns: int) -> list[CascadeEvent]:
        """Move time to ``now_ns`` (no-op when earlier): expire windows, end cascades."""
        now = _check_ts("now_ns", now_ns)
        if self._now is not None and now < self._now:
            return []
        self._move_time(now)
        return self._evaluate_all()

    def snapshot(self, asset: str) -> LiquidationSnapshot:
        """Current rolling notional per side and window, z and cascade flag (no side effects)."""
        sides = []
        for side in SIDES:
            state = self._states.get((asset, side)) or self._new_state()
            median, scale, n = self._baseline(state)
            notional = state.windows.sum(self._iw)
            sides.append(
                SideSnapshot(
                    notional_usd={w: state.windows.sum(i) for i, w in enumerate(self._windows_s)},
                    completeness={
                        w: "sampled" if state.windows.flagged(i) else "complete"
                        for i, w in enumerate(self._windows_s)
                    },
                    z=(notional - median) / scale,
                    baseline_median_usd=median,
                    baseline_windows=n,
                    in_cascade=state.cascade is not None,
                )
            )
        return LiquidationSnapshot(asset, self._now, sides[0], sides[1])

    # ------------------------------------------------------------------ internals

    def _new_state(self) -> _SideState:
        windows_ns = tuple(w * NS_PER_S for w in self._windows_s)
        return _SideState(windows_ns, self._bucket_ns, self._n_buckets)

    def _move_time(self, ts: int) -> None:
        if self._first_ns is None:
            self._first_ns = ts
        if self._now is None or ts > self._now:
            self._now = ts
            for state in self._states.values():
                state.windows.advance(ts)

    def _baseline(self, state: _SideState) -> tuple[float, float, int]:
        """(median, scale, number of buckets); NaN median/scale when too few buckets."""
        if self._now is None or self._first_ns is None:
            return math.nan, math.nan, 0
        median, mad, n = state.baseline.get(self._now, self._first_ns)
        if n < self.params.min_baseline_windows:
            return math.nan, math.nan, n
        p = self.params
        return median, max(mad, p.mad_floor_ratio * median, p.mad_floor_usd), n

    def _evaluate_all(self) -> list[CascadeEvent]:
        out: list[CascadeEvent] = []
        for (asset, side), state in self._states.items():
            event = self._evaluate(asset, side, state)
            if event is not None:
                out.append(event)
        return out

    def _evaluate(self, asset: str, side: Side, state: _SideState) -> CascadeEvent | None:
        p = self.params
        now = self._now
        assert now is not None
        notional = state.windows.sum(self._iw)
        median, scale, _ = self._baseline(state)
        z = (notional - median) / scale
        multiple = notional / median if median > 0 else math.nan
        price = self._prices.get(asset, (0, math.nan))[1]
        c = state.cascade
        if c is None:
            if not (z >= p.z_on and notional >= p.min_notional_usd):
                return None
            total = ExactSum([notional])
            sampled = state.windows.flagged(self._iw) > 0
            c = _Cascade(now, total, sampled, now, notional, z, multiple, notional, None, price)
            state.cascade = c
            return self._event("start", asset, side, c, notional, z, median, multiple, price)
        kind: CascadeKind | None = None
        if notional > c.peak_usd:
            c.peak_ns, c.peak_usd, c.peak_z, c.peak_multiple = now, notional, z, multiple
            if notional >= c.emitted_usd * (1.0 + p.peak_step_ratio):
                c.emitted_usd = notional
                kind = "peak"
        if z < p.z_off:
            if c.below_since_ns is None:
                c.below_since_ns = now
            if now - c.below_since_ns >= p.min_off_s * NS_PER_S:
                state.cascade = None
                kind = "end"
        else:
            c.below_since_ns = None
        if kind is None:
            return None
        return self._event(kind, asset, side, c, notional, z, median, multiple, price)

    def _event(
        self,
        kind: CascadeKind,
        asset: str,
        side: Side,
        c: _Cascade,
        notional: float,
        z: float,
        median: float,
        multiple: float,
        price: float,
    ) -> CascadeEvent:
        assert self._now is not None
        suffix = f":{c.peak_ns}" if kind == "peak" else ""
        return CascadeEvent(
            id=f"liquidation.cascade.{kind}:{asset}:{side}:{c.start_ns}{suffix}",
            type=f"liquidation.cascade.{kind}",
            kind=kind,
            ts_ns=self._now,
            asset=asset,
            side=side,
            start_ns=c.start_ns,
            peak_ns=c.peak_ns,
            end_ns=c.below_since_ns if kind == "end" else None,
            window_s=self.params.intensity_window_s,
            window_notional_usd=notional,
            z=z,
            baseline_median_usd=median,
            multiple_of_normal=multiple,
            peak_window_notional_usd=c.peak_usd,
            peak_z=c.peak_z,
            peak_multiple_of_normal=c.peak_multiple,
            total_notional_usd=c.total.get(),
            price_start=c.price_start,
            price_last=price,
            price_move_ratio=price / c.price_start - 1.0,
            completeness="sampled" if c.sampled else "complete",
        )
