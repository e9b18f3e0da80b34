"""Tests of signals.liquidations: brute-force oracle after every event, cascades, completeness."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signals.errors import InvalidInputError
from signals.liquidations import (
    SIDES,
    CascadeEvent,
    LiquidationCascadeDetector,
    LiquidationParams,
    Side,
)

S = 1_000_000_000
T0 = 1_762_214_400 * S  # 2025-11-04 00:00 UTC, aligned to every window used here

SMALL = LiquidationParams(
    windows_s=(10, 30, 120, 600),
    intensity_window_s=30,
    baseline_s=600,
    min_baseline_windows=4,
    z_on=4.0,
    z_off=1.5,
    min_notional_usd=1_000.0,
    min_off_s=20.0,
    peak_step_ratio=0.25,
    mad_floor_usd=50.0,
    mad_floor_ratio=0.1,
)


# ----------------------------------------------------------------------------- oracle


@dataclass
class _OracleCascade:
    start: int
    peak_ns: int
    peak_usd: float
    peak_z: float
    peak_multiple: float
    emitted: float
    below_since: int | None
    price_start: float


@dataclass
class Oracle:
    """Brute force: every figure recomputed from the full list of accepted events."""

    p: LiquidationParams
    events: list[tuple[str, Side, int, float, bool]] = field(default_factory=list)
    first: int | None = None
    now: int | None = None
    order: list[tuple[str, Side]] = field(default_factory=list)
    cascades: dict[tuple[str, Side], _OracleCascade] = field(default_factory=dict)
    prices: dict[str, tuple[int, float]] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)

    def _observe(self, ts: int) -> None:
        self.first = ts if self.first is None else self.first
        self.now = ts if self.now is None else max(self.now, ts)

    def update(self, ts: int, asset: str, side: Side, usd: float, complete: bool) -> list[dict]:
        self._observe(ts)
        assert self.now is not None
        if ts <= self.now - max(self.p.windows_s) * S:
            self.late[asset] = self.late.get(asset, 0) + 1
            return []
        self.events.append((asset, side, ts, usd, complete))
        for s in SIDES:
            if (asset, s) not in self.order:
                self.order.append((asset, s))
        return self.evaluate()

    def advance(self, now: int) -> list[dict]:
        if self.now is not None and now < self.now:
            return []
        self._observe(now)
        return self.evaluate()

    def price(self, ts: int, asset: str, price: float) -> None:
        if asset not in self.prices or ts >= self.prices[asset][0]:
            self.prices[asset] = (ts, price)

    def _select(self, asset: str, side: Side) -> list[tuple[int, float, bool]]:
        return [(t, u, c) for a, s, t, u, c in self.events if a == asset and s == side]

    def window(self, asset: str, side: Side, w_s: int) -> tuple[float, bool]:
        assert self.now is not None
        cut = self.now - w_s * S
        rows = [(u, c) for t, u, c in self._select(asset, side) if cut < t <= self.now]
        return math.fsum(u for u, _ in rows), any(not c for _, c in rows)

    def baseline(self, asset: str, side: Side) -> tuple[float, float, int]:
        assert self.now is not None
        assert self.first is not None
        b = self.p.intensity_window_s * S
        k = self.now // b
        lo = max(k - self.p.baseline_s // self.p.intensity_window_s, math.ceil(self.first / b))
        n = max(0, k - lo)
        if n < self.p.min_baseline_windows:
            return math.nan, math.nan, n
        by_bucket: dict[int, list[float]] = {}
        for t, u, _ in self._select(asset, side):
            by_bucket.setdefault(t // b, []).append(u)
        sums = pd.Series([math.fsum(by_bucket.get(j, [])) for j in range(lo, k)])
        median = sums.median()
        mad = (sums - median).abs().median() * 1.4826
        return median, max(mad, self.p.mad_floor_ratio * median, self.p.mad_floor_usd), n

    def intensity(self, asset: str, side: Side) -> tuple[float, float, float]:
        notional, _ = self.window(asset, side, self.p.intensity_window_s)
        median, scale, _ = self.baseline(asset, side)
        return notional, (notional - median) / scale, median

    def evaluate(self) -> list[dict]:
        out = []
        p = self.p
        assert self.now is not None
        for asset, side in self.order:
            n, z, median = self.intensity(asset, side)
            multiple = n / median if median > 0 else math.nan
            price = self.prices.get(asset, (0, math.nan))[1]
            c = self.cascades.get((asset, side))
            kind = None
            if c is None:
                if z >= p.z_on and n >= p.min_notional_usd:
                    c = _OracleCascade(self.now, self.now, n, z, multiple, n, None, price)
                    self.cascades[(asset, side)] = c
                    kind = "start"
            else:
                if n > c.peak_usd:
                    c.peak_ns, c.peak_usd, c.peak_z, c.peak_multiple = self.now, n, z, multiple
                    if n >= c.emitted * (1 + p.peak_step_ratio):
                        c.emitted, kind = n, "peak"
                if z < p.z_off:
                    c.below_since = self.now if c.below_since is None else c.below_since
                    if self.now - c.below_since >= p.min_off_s * S:
                        del self.cascades[(asset, side)]
                        kind = "end"
                else:
                    c.below_since = None
            if kind is None:
                continue
            assert c is not None
            b = p.intensity_window_s * S
            rows = [
                (u, comp)
                for a, s, t, u, comp in self.events
                if a == asset and s == side and t > c.start - b
            ]
            out.append(
                {
                    "kind": kind,
                    "id": f"liquidation.cascade.{kind}:{asset}:{side}:{c.start}"
                    + (f":{c.peak_ns}" if kind == "peak" else ""),
                    "ts_ns": self.now,
                    "start_ns": c.start,
                    "peak_ns": c.peak_ns,
                    "end_ns": c.below_since if kind == "end" else None,
                    "window_notional_usd": n,
                    "z": z,
                    "baseline_median_usd": median,
                    "multiple_of_normal": multiple,
                    "peak_window_notional_usd": c.peak_usd,
                    "peak_z": c.peak_z,
                    "total_notional_usd": math.fsum(u for u, _ in rows),
                    "completeness": "sampled" if any(not x for _, x in rows) else "complete",
                    "price_start": c.price_start,
                    "price_last": price,
                }
            )
        return out


def assert_close(a: float, b: float, tol: float = 1e-10) -> None:
    if math.isnan(b):
        assert math.isnan(a), (a, b)
    else:
        assert abs(a - b) <= tol, (a, b)


def assert_events_match(got: list[CascadeEvent], want: list[dict]) -> None:
    assert [e.id for e in got] == [w["id"] for w in want]
    for e, w in zip(got, want, strict=True):
        assert e.type == f"liquidation.cascade.{w['kind']}"
        for key in ("ts_ns", "start_ns", "peak_ns", "end_ns", "completeness"):
            assert getattr(e, key) == w[key], key
        for key in ("window_notional_usd", "baseline_median_usd", "peak_window_notional_usd"):
            assert getattr(e, key) == w[key], key
        for key in ("z", "multiple_of_normal", "peak_z", "price_start", "price_last"):
            assert_close(getattr(e, key), w[key])
        assert e.total_notional_usd == pytest.approx(w["total_notional_usd"], rel=1e-14)
        assert_close(e.price_move_ratio, w["price_last"] / w["price_start"] - 1.0)


def assert_snapshots_match(det: LiquidationCascadeDetector, oracle: Oracle) -> None:
    for asset in {a for a, _ in oracle.order}:
        snap = det.snapshot(asset)
        assert snap.ts_ns == oracle.now
        for side in SIDES:
            got = getattr(snap, side)
            for w in oracle.p.windows_s:
                notional, sampled = oracle.window(asset, side, w)
                assert got.notional_usd[w] == notional  # exact sums: bit-identical to fsum
                assert got.completeness[w] == ("sampled" if sampled else "complete")
            _n, z, median = oracle.intensity(asset, side)
            assert_close(got.z, z)
            assert_close(got.baseline_median_usd, median)
            assert got.baseline_windows == oracle.baseline(asset, side)[2]
            assert got.in_cascade == ((asset, side) in oracle.cascades)


def random_stream(seed: int, steps: int) -> list[tuple]:
    """Ops: ('liq', ts, asset, side, usd, complete) | ('adv', ts) | ('px', ts, asset, price)."""
    rng = np.random.default_rng(seed)
    ops: list[tuple] = []
    # whole seconds, so that events fall exactly on window and bucket boundaries; ns jitter on
    # one step in two keeps the general case
    t = T0 + int(rng.integers(0, 30)) * S
    burst_until = {("BTC", "long"): 0, ("ETH", "short"): 0, ("BTC", "short"): 0}
    price = {"BTC": 100_000.0, "ETH": 3_500.0}
    for _ in range(steps):
        t += int(rng.integers(1, 5)) * S + (int(rng.integers(0, S)) if rng.random() < 0.5 else 0)
        u = rng.random()
        if u < 0.05:
            t += int(rng.integers(10, 80)) * S
            ops.append(("adv", t))
            continue
        asset = str(rng.choice(["BTC", "ETH"]))
        if u < 0.2:
            price[asset] *= float(np.exp(rng.normal(0, 0.002)))
            ops.append(("px", t - int(rng.integers(0, 3 * S)), asset, round(price[asset], 2)))
            continue
        side: Side = "long" if rng.random() < 0.6 else "short"
        if rng.random() < 0.01:
            burst_until[(asset, side)] = t + int(rng.integers(20 * S, 90 * S))
        bursting = t < burst_until.get((asset, side), 0)
        usd = float(np.round(rng.lognormal(9.0 if bursting else 4.5, 0.8), 2))
        lateness = 0 if rng.random() < 0.8 else int(rng.integers(0, 60)) * S
        if rng.random() < 0.01:
            lateness = int(rng.integers(599, 900)) * S  # beyond the longest window, or at its edge
        ops.append(("liq", t - lateness, asset, side, usd, bool(rng.random() < 0.7)))
    return ops


def replay(ops: list[tuple], params: LiquidationParams, check: bool) -> list[CascadeEvent]:
    det = LiquidationCascadeDetector(params)
    oracle = Oracle(params)
    all_events: list[CascadeEvent] = []
    for op in ops:
        if op[0] == "liq":
            _, ts, asset, side, usd, complete = op
            got = det.update(ts, asset, side, usd, complete)
            want = oracle.update(ts, asset, side, usd, complete) if check else []
        elif op[0] == "adv":
            got = det.advance(op[1])
            want = oracle.advance(op[1]) if check else []
        else:
            det.update_price(op[1], op[2], op[3])
            oracle.price(op[1], op[2], op[3])
            got = want = []
        all_events.extend(got)
        if check:
            assert_events_match(got, want)
            assert_snapshots_match(det, oracle)
    if check:
        assert det.late_events == oracle.late
    return all_events


# ----------------------------------------------------------------------------- oracle tests


@pytest.mark.parametrize("seed", [3, 11])
def test_random_stream_matches_brute_force_after_every_event(seed: int) -> None:
    events = replay(random_stream(seed, 900), SMALL, check=True)
    kinds = {e.kind for e in events}
    assert kinds == {"start", "peak", "end"}  # the stream exercises the whole state machine
    assert {e.side for e in events} == {"long", "short"}
    assert {e.completeness for e in events} == {"complete", "sampled"}


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_property_random_streams_match_the_oracle(seed: int) -> None:
    replay(random_stream(seed, 120), SMALL, check=True)


def test_ids_are_deterministic_across_identical_runs() -> None:
    ops = random_stream(5, 1500)
    first = replay(ops, SMALL, check=False)
    second = replay(ops, SMALL, check=False)
    assert first == second
    assert len({e.id for e in first}) == len(first)  # ids are unique
    assert first[0].to_dict() == second[0].to_dict()


# ----------------------------------------------------------------------------- scenarios


def quiet_history(det: LiquidationCascadeDetector, asset: str, side: Side, until_s: int) -> None:
    """One 100 USD liquidation every 10 s: baseline median 300 USD per 30 s bucket, MAD 0."""
    for k in range(0, until_s, 10):
        det.update(T0 + k * S, asset, side, 100.0, complete=True)


@pytest.mark.parametrize("side", ["long", "short"])
def test_cascade_lifecycle_for_both_polarities(side: Side) -> None:
    other: Side = "short" if side == "long" else "long"
    det = LiquidationCascadeDetector(SMALL)
    quiet_history(det, "BTC", side, 300)
    quiet_history(det, "BTC", other, 300)
    det.update_price(T0 + 299 * S, "BTC", 100_000.0)
    [start] = det.update(T0 + 301 * S, "BTC", side, 2_000.0, complete=True)
    # window (271, 301]: 100 at 280 and 290 + 2000; ten 300 USD buckets: median 300, MAD 0,
    # scale max(0, 0.1·300, 50) = 50
    assert start.kind == "start"
    assert start.side == side
    assert start.window_notional_usd == 2_200.0
    assert start.z == (2_200.0 - 300.0) / 50.0
    assert start.multiple_of_normal == 2_200.0 / 300.0
    assert start.completeness == "complete"
    assert start.id == f"liquidation.cascade.start:BTC:{side}:{T0 + 301 * S}"
    det.update_price(T0 + 303 * S, "BTC", 98_000.0)
    assert det.update(T0 + 302 * S, "BTC", side, 500.0, complete=True) == []  # +23 %: no peak
    [peak] = det.update(T0 + 303 * S, "BTC", side, 400.0, complete=True)  # 3100 ≥ 1.25·2200
    assert peak.kind == "peak"
    assert peak.peak_window_notional_usd == 3_100.0
    assert peak.id == f"liquidation.cascade.peak:BTC:{side}:{T0 + 301 * S}:{T0 + 303 * S}"
    assert peak.price_move_ratio == pytest.approx(-0.02, abs=1e-12)
    assert getattr(det.snapshot("BTC"), other).in_cascade is False
    assert getattr(det.snapshot("BTC"), side).in_cascade is True
    # silence: the window empties at 333 s; z < z_off from the first evaluation after that
    assert det.advance(T0 + 340 * S) == []
    assert det.advance(T0 + 359 * S) == []
    [end] = det.advance(T0 + 360 * S)
    assert end.kind == "end"
    assert end.end_ns == T0 + 340 * S
    assert end.total_notional_usd == 200.0 + 2_000.0 + 500.0 + 400.0
    assert end.peak_ns == T0 + 303 * S
    assert end.price_start == 100_000.0
    assert end.price_last == 98_000.0


def test_peak_needs_exactly_the_step_ratio_and_tracks_the_maximum() -> None:
    det = LiquidationCascadeDetector(SMALL)
    quiet_history(det, "BTC", "long", 300)
    [start] = det.update(T0 + 301 * S, "BTC", "long", 2_000.0, complete=True)
    assert start.window_notional_usd == 2_200.0
    assert det.update(T0 + 302 * S, "BTC", "long", 549.0, complete=True) == []  # 2749
    [peak] = det.update(T0 + 302 * S, "BTC", "long", 1.0, complete=True)  # 2750 = 1.25 · 2200
    assert peak.peak_window_notional_usd == 2_750.0
    assert peak.peak_z == (2_750.0 - 300.0) / 50.0
    assert det.update(T0 + 303 * S, "BTC", "long", 687.0, complete=True) == []  # 3437 < 3437.5
    det.advance(T0 + 340 * S)
    [end] = det.advance(T0 + 360 * S)
    assert end.peak_window_notional_usd == 3_437.0  # the maximum, even though not emitted
    assert end.peak_ns == T0 + 303 * S
    assert end.peak_multiple_of_normal == 3_437.0 / 300.0


def test_sampled_propagates_only_from_contributing_events() -> None:
    det = LiquidationCascadeDetector(SMALL)
    quiet_history(det, "ETH", "long", 300)
    det.update(T0 + 200 * S, "ETH", "long", 100.0, complete=False)  # before start − 30 s
    [start] = det.update(T0 + 301 * S, "ETH", "long", 5_000.0, complete=True)
    assert start.completeness == "complete"
    det.update(T0 + 302 * S, "ETH", "long", 50.0, complete=False)  # contributes
    det.advance(T0 + 340 * S)
    [end] = det.advance(T0 + 400 * S)
    assert end.completeness == "sampled"
    assert end.total_notional_usd == 200.0 + 5_000.0 + 50.0


def test_start_is_sampled_when_the_triggering_window_is() -> None:
    det = LiquidationCascadeDetector(SMALL)
    quiet_history(det, "ETH", "short", 300)
    [start] = det.update(T0 + 301 * S, "ETH", "short", 5_000.0, complete=False)
    assert start.completeness == "sampled"
    assert det.snapshot("ETH").short.completeness[30] == "sampled"
    assert det.snapshot("ETH").short.completeness[600] == "sampled"
    assert det.snapshot("ETH").long.completeness[30] == "complete"


def test_hysteresis_no_flapping_between_z_off_and_z_on() -> None:
    det = LiquidationCascadeDetector(SMALL)
    quiet_history(det, "BTC", "long", 300)
    events = det.update(T0 + 301 * S, "BTC", "long", 2_000.0, complete=True)
    assert [e.kind for e in events] == ["start"]
    # keep the 30 s window between z_off and z_on: 10 × 45 = 450 USD, z = (450 − 300) / 50 = 3
    # (until 540 s the baseline median stays 300 with MAD 0: at most 8 of its 18 buckets differ)
    for k in range(302, 540, 3):
        events += det.update(T0 + k * S, "BTC", "long", 45.0, complete=True)
    assert [e.kind for e in events] == ["start"]
    # a dip below z_off shorter than min_off_s (20 s) does not end it
    events += det.advance(T0 + 640 * S)  # window empty: z = −6
    events += det.update(T0 + 655 * S, "BTC", "long", 1_000.0, complete=True)  # z back up
    events += det.advance(T0 + 661 * S)
    assert [e.kind for e in events] == ["start"]
    events += det.advance(T0 + 700 * S)
    events += det.advance(T0 + 720 * S)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[-1].end_ns == T0 + 700 * S


def test_z_is_nan_until_enough_baseline_and_floor_when_mad_is_zero() -> None:
    det = LiquidationCascadeDetector(SMALL)
    det.advance(T0)
    det.update(T0 + 5 * S, "SOL", "long", 1e6, complete=True)
    snap = det.snapshot("SOL").long
    assert math.isnan(snap.z)
    assert snap.baseline_windows == 0
    det.advance(T0 + 119 * S)
    assert math.isnan(det.snapshot("SOL").long.z)  # 3 buckets < 4
    det.advance(T0 + 120 * S)
    snap = det.snapshot("SOL").long
    assert snap.baseline_windows == 4
    assert snap.baseline_median_usd == 0.0  # [1e6, 0, 0, 0]
    assert snap.z == 0.0  # empty window vs median 0 with the 50 USD floor
    assert det.snapshot("SOL").short.z == 0.0
    assert det.snapshot("XRP").long.z == 0.0  # never liquidated: zero notional, defined z
    assert det.snapshot("XRP").long.notional_usd == {10: 0.0, 30: 0.0, 120: 0.0, 600: 0.0}


def test_min_notional_floor_blocks_small_bursts() -> None:
    params = LiquidationParams(**{**_asdict(SMALL), "min_notional_usd": 10_000.0})
    det = LiquidationCascadeDetector(params)
    quiet_history(det, "BTC", "long", 300)
    assert det.update(T0 + 301 * S, "BTC", "long", 5_000.0, complete=True) == []
    assert det.snapshot("BTC").long.z > params.z_on
    [start] = det.update(T0 + 302 * S, "BTC", "long", 5_000.0, complete=True)
    assert start.window_notional_usd == 10_200.0


def test_late_and_out_of_order_events() -> None:
    det = LiquidationCascadeDetector(SMALL)
    det.update(T0 + 1_000 * S, "BTC", "long", 10.0, complete=True)
    det.update(T0 + 995 * S, "BTC", "long", 20.0, complete=True)  # in the 10 s window
    det.update(T0 + 980 * S, "BTC", "long", 40.0, complete=True)  # 30 s window only
    det.update(T0 + 400 * S, "BTC", "long", 80.0, complete=True)  # exactly 600 s old: late
    det.update(T0 + 401 * S, "BTC", "long", 160.0, complete=True)
    snap = det.snapshot("BTC").long
    assert snap.notional_usd == {10: 30.0, 30: 70.0, 120: 70.0, 600: 230.0}
    assert det.late_events == {"BTC": 1}


def test_performance_one_day_of_sampled_liquidations() -> None:
    det = LiquidationCascadeDetector()
    rng = np.random.default_rng(0)
    n = 50_000
    ts = T0 + np.cumsum(rng.integers(S // 4, 2 * S, n))
    usd = np.round(rng.lognormal(8, 1.5, n), 2)
    assets = rng.choice(["BTC", "ETH", "SOL", "XRP", "GOLD"], n)
    sides = rng.choice(["long", "short"], n)
    start = time.perf_counter()
    for t, a, s, u in zip(ts.tolist(), assets.tolist(), sides.tolist(), usd.tolist(), strict=True):
        det.update(t, a, s, u, complete=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0, f"{n} updates took {elapsed:.1f} s"
    mask = (assets == "BTC") & (sides == "long") & (ts > ts[-1] - 3_600 * S)
    assert det.snapshot("BTC").long.notional_usd[3_600] == math.fsum(usd[mask].tolist())


# ----------------------------------------------------------------------------- errors


def _asdict(p: LiquidationParams) -> dict[str, object]:
    return {k: getattr(p, k) for k in p.__dataclass_fields__}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, "BTC", "long", 1.0, True), "ts_event_ns is -1"),
        ((1.5, "BTC", "long", 1.0, True), "ts_event_ns"),
        ((T0, "", "long", 1.0, True), "asset"),
        ((T0, "BTC", "buy", 1.0, True), "'long' or 'short'"),
        ((T0, "BTC", "long", math.nan, True), "notional_usd for 'BTC' is nan"),
        ((T0, "BTC", "long", math.inf, True), "finite and > 0"),
        ((T0, "BTC", "long", 0.0, True), "finite and > 0"),
        ((T0, "BTC", "long", -5.0, True), "finite and > 0"),
        ((T0, "BTC", "long", 1.0, "yes"), "True or False"),
    ],
)
def test_update_errors(args: tuple[object, ...], match: str) -> None:
    det = LiquidationCascadeDetector()
    with pytest.raises(InvalidInputError, match=match):
        det.update(*args)  # type: ignore[arg-type]
    assert det.now_ns is None  # a rejected event leaves no trace
    with pytest.raises(InvalidInputError, match="price for 'BTC' is nan"):
        det.update_price(T0, "BTC", math.nan)
    with pytest.raises(InvalidInputError, match="now_ns"):
        det.advance(-3)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"windows_s": ()}, "whole seconds"),
        ({"windows_s": (60, 60, 300)}, "duplicates"),
        ({"intensity_window_s": 120}, "not in windows_s"),
        ({"baseline_s": 1000}, "multiple of 300"),
        ({"min_baseline_windows": 0}, "min_baseline_windows"),
        ({"z_on": 1.0}, "z_off 2.0 must be < z_on 1.0"),
        ({"min_notional_usd": -1.0}, "min_notional_usd"),
        ({"mad_floor_usd": 0.0}, "mad_floor_usd"),
        ({"z_on": math.nan}, "z_on"),
    ],
)
def test_params_errors(change: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        LiquidationParams(**change)  # type: ignore[arg-type]
