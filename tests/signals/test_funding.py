"""Tests of signals.funding: brute-force oracle after every update, OI weighting, hysteresis."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signals.errors import InvalidInputError
from signals.funding import FundingEvent, FundingParams, FundingStressDetector

S = 1_000_000_000
H = 3_600 * S
T0 = 1_762_214_400 * S  # 2025-11-04 00:00 UTC

SMALL = FundingParams(
    max_age_s=1_800.0,
    history_step_s=600,
    history_len=20,
    min_history=5,
    zscore="robust",
    min_scale_annualized=0.005,
    flip_band_annualized=0.02,
    z_extreme=3.0,
    z_extreme_off=2.0,
    negative_on_annualized=-0.10,
    negative_off_annualized=-0.05,
)

Update = tuple[int, str, str, float, float | None]  # ts, asset, venue, rate, oi


# ----------------------------------------------------------------------------- oracle


@dataclass
class Oracle:
    """Recomputes every figure from the full log of operations."""

    p: FundingParams
    ops: list[tuple[int, Update | None]] = field(default_factory=list)  # (time after op, upd)
    now: int | None = None
    assets: list[str] = field(default_factory=list)
    sign: dict[str, int] = field(default_factory=dict)
    extreme: dict[str, int | None] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # every grid sample, in order

    def _venues(self, asset: str, upto: int) -> dict[str, tuple[int, float, float | None, int]]:
        """Latest accepted (ts, rate, oi, oi_ts) per venue from the first ``upto`` ops."""
        out: dict[str, tuple[int, float, float | None, int]] = {}
        for _, u in self.ops[:upto]:
            if u is None or u[1] != asset:
                continue
            ts, _, venue, rate, oi = u
            if venue in out and ts < out[venue][0]:
                continue
            if oi is None and venue in out:
                out[venue] = (ts, rate, out[venue][2], out[venue][3])
            else:
                out[venue] = (ts, rate, oi, ts)
        return out

    def aggregate(self, asset: str, t: int, upto: int) -> tuple[float, float, tuple, str | None]:
        age = self.p.max_age_s * S
        fresh = {v: x for v, x in self._venues(asset, upto).items() if t - x[0] <= age}
        if not fresh:
            return math.nan, math.nan, (), None
        names = tuple(sorted(fresh))
        rates = np.array([fresh[v][1] for v in names])
        ois = [fresh[v][2] if t - fresh[v][3] <= age else None for v in names]
        if all(o is not None for o in ois) and sum(ois) > 0:  # type: ignore[arg-type]
            avg, weighting = float(np.average(rates, weights=np.array(ois, dtype=float))), "oi"
        else:
            avg, weighting = float(rates.mean()), "eq"
        disp = float(rates.max() - rates.min()) if len(rates) > 1 else math.nan
        return avg, disp, names, {"oi": "open_interest", "eq": "equal"}[weighting]

    def history(self, asset: str) -> list[float]:
        return self.samples.get(asset, [])[-self.p.history_len :]

    def zscore(self, asset: str, avg: float) -> float:
        hist = pd.Series(self.history(asset), dtype=float)
        if len(hist) < self.p.min_history or math.isnan(avg):
            return math.nan
        if self.p.zscore == "robust":
            center = hist.median()
            scale = (hist - center).abs().median() * 1.4826
        else:
            center, scale = hist.mean(), hist.std(ddof=1)
        return (avg - center) / max(scale, self.p.min_scale_annualized)

    def step(self, t: int, update: Update | None) -> list[dict]:
        if self.now is not None and t > self.now:
            # each grid time crossed: the average at that time from the ops logged before
            step = self.p.history_step_s * S
            for g in range((self.now // step + 1) * step, t // step * step + 1, step):
                for asset in self.assets:
                    avg = self.aggregate(asset, g, len(self.ops))[0]
                    if not math.isnan(avg):
                        self.samples.setdefault(asset, []).append(avg)
        self.now = t if self.now is None else max(self.now, t)
        self.ops.append((self.now, update))
        if update is not None and update[1] not in self.assets:
            self.assets.append(update[1])
        out = []
        p = self.p
        for asset in self.assets:
            avg, disp, venues, weighting = self.aggregate(asset, self.now, len(self.ops))
            if math.isnan(avg):
                continue
            z = self.zscore(asset, avg)
            base = {"ts_ns": self.now, "asset": asset, "avg": avg, "disp": disp, "z": z}
            base |= {"venues": venues, "weighting": weighting}
            old = self.sign.get(asset, 0)
            new = (
                1
                if avg >= p.flip_band_annualized
                else -1
                if avg <= -p.flip_band_annualized
                else old
            )
            if old and new != old:
                direction = "to_negative" if new < 0 else "to_positive"
                out.append(
                    base | {"id": f"funding.flip:{asset}:{self.now}", "direction": direction}
                )
            self.sign[asset] = new
            start = self.extreme.get(asset)
            z_hit = abs(z) >= p.z_extreme
            neg = avg <= p.negative_on_annualized
            if start is None and (z_hit or neg):
                self.extreme[asset] = self.now
                reason = "z+negative" if z_hit and neg else "z" if z_hit else "negative"
                out.append(
                    base
                    | {"id": f"funding.extreme.start:{asset}:{self.now}", "reason": reason}
                    | {"start_ns": self.now}
                )
            elif (
                start is not None
                and not abs(z) >= p.z_extreme_off
                and avg > p.negative_off_annualized
            ):
                self.extreme[asset] = None
                out.append(base | {"id": f"funding.extreme.end:{asset}:{start}", "start_ns": start})
        return out


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-10


def assert_matches(det: FundingStressDetector, oracle: Oracle, got: list[FundingEvent],
                   want: list[dict]) -> None:  # fmt: skip
    assert [e.id for e in got] == [w["id"] for w in want]
    for e, w in zip(got, want, strict=True):
        assert e.type == w["id"].split(":")[0]
        assert (e.ts_ns, e.asset, e.venues, e.weighting) == (
            w["ts_ns"], w["asset"], w["venues"], w["weighting"],
        )  # fmt: skip
        assert close(e.average_annualized, w["avg"])
        assert close(e.dispersion_annualized, w["disp"])
        assert close(e.z, w["z"])
        assert e.direction == w.get("direction")
        assert e.reason == w.get("reason")
        assert e.start_ns == w.get("start_ns")
    assert oracle.now is not None
    for asset in oracle.assets:
        s = det.get(asset)
        avg, disp, venues, weighting = oracle.aggregate(asset, oracle.now, len(oracle.ops))
        assert close(s.average_annualized, avg)
        assert close(s.dispersion_annualized, disp)
        assert (s.venues, s.weighting) == (venues, weighting)
        assert close(s.z, oracle.zscore(asset, avg))
        assert s.history_samples == len(oracle.history(asset))
        assert s.sign == oracle.sign.get(asset, 0)
        assert s.in_extreme == (oracle.extreme.get(asset) is not None)


def random_ops(seed: int, n: int) -> list[tuple[int, Update | None]]:
    rng = np.random.default_rng(seed)
    t = T0 + int(rng.integers(0, 600)) * S
    level = {"BTC": 0.08, "ETH": 0.05}
    ops: list[tuple[int, Update | None]] = []
    for _ in range(n):
        t += int(rng.integers(1, 400)) * S
        if rng.random() < 0.07:
            t += int(rng.integers(600, 4 * 3_600)) * S  # a silence: venues go stale
            ops.append((t, None))
            continue
        asset = str(rng.choice(["BTC", "ETH"]))
        if rng.random() < 0.03:
            level[asset] = float(rng.choice([-0.3, -0.06, 0.0, 0.05, 0.4]))  # regime shift
        level[asset] += float(rng.normal(0, 0.01))
        venue = str(rng.choice(["binance", "bybit", "okx"]))
        rate = round(level[asset] + float(rng.normal(0, 0.01)), 4)
        oi = None if rng.random() < 0.3 else float(rng.choice([0.0, 1e8, 5e8, 2e9]))
        ts = t - (int(rng.integers(0, 900)) * S if rng.random() < 0.1 else 0)
        ops.append((ts, (ts, asset, venue, rate, oi)))
    return ops


def replay(ops: list[tuple[int, Update | None]], params: FundingParams,
           check: bool) -> list[FundingEvent]:  # fmt: skip
    det = FundingStressDetector(params)
    oracle = Oracle(params)
    events: list[FundingEvent] = []
    for t, u in ops:
        got = det.update(*u) if u is not None else det.advance(t)
        events.extend(got)
        if check:
            assert_matches(det, oracle, got, oracle.step(t, u))
    return events


# ----------------------------------------------------------------------------- oracle tests


# the third set keeps venues fresh for 6 h with a 6-sample history, so the silences sample more
# grid times than the history holds
PARAM_SETS = [
    SMALL,
    replace(SMALL, zscore="classical"),
    replace(SMALL, max_age_s=21_600.0, history_len=6, min_history=3),
]


@pytest.mark.parametrize("params", PARAM_SETS)
def test_random_stream_matches_brute_force_after_every_update(params: FundingParams) -> None:
    events = replay(random_ops(7, 400), params, check=True)
    types = {e.type for e in events}
    assert types == {"funding.flip", "funding.extreme.start", "funding.extreme.end"}
    reasons = {e.reason for e in events}
    assert reasons >= ({"z"} if params.max_age_s > 3_600 else {"z", "negative"})
    assert {e.weighting for e in events} == {"open_interest", "equal"}


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(PARAM_SETS))
def test_property_random_streams_match_the_oracle(seed: int, params: FundingParams) -> None:
    replay(random_ops(seed, 80), params, check=True)


def test_ids_are_deterministic_across_identical_runs() -> None:
    ops = random_ops(11, 800)
    first, second = replay(ops, SMALL, check=False), replay(ops, SMALL, check=False)
    assert first == second
    assert len({e.id for e in first}) == len(first)
    assert [e.to_dict() for e in first] == [e.to_dict() for e in second]


# ----------------------------------------------------------------------------- scenarios


def test_weighting_dispersion_and_staleness() -> None:
    det = FundingStressDetector(SMALL)
    det.update(T0, "BTC", "binance", 0.10, 3e9)
    s = det.get("BTC")
    assert (s.average_annualized, s.weighting, s.venues) == (0.10, "open_interest", ("binance",))
    assert math.isnan(s.dispersion_annualized)  # one venue: undefined, not 0
    det.update(T0 + 10 * S, "BTC", "okx", 0.02, None)
    s = det.get("BTC")
    assert s.weighting == "equal"  # okx has no OI: simple mean
    assert s.average_annualized == pytest.approx(0.06, abs=1e-15)
    assert s.dispersion_annualized == pytest.approx(0.08, abs=1e-15)
    det.update(T0 + 20 * S, "BTC", "okx", 0.04, 1e9)
    s = det.get("BTC")
    assert s.weighting == "open_interest"
    assert s.average_annualized == pytest.approx((0.3 + 0.04) / 4, abs=1e-15)
    det.update(T0 + 1_000 * S, "BTC", "binance", 0.12)  # OI carried (fresh: from T0)
    assert det.get("BTC").weighting == "open_interest"
    det.advance(T0 + 1_800 * S)  # binance OI from T0 is exactly max_age old: still fresh
    assert det.get("BTC").weighting == "open_interest"
    det.advance(T0 + 1_801 * S)  # OI of binance stale although its rate is fresh
    s = det.get("BTC")
    assert s.weighting == "equal"
    assert s.venues == ("binance", "okx")
    det.advance(T0 + 1_821 * S)  # okx (T0+20s) drops out
    assert det.get("BTC").venues == ("binance",)
    det.advance(T0 + 2_801 * S)  # every venue stale: undefined
    s = det.get("BTC")
    assert math.isnan(s.average_annualized)
    assert s.venues == ()
    assert s.weighting is None
    assert math.isnan(det.get("SOL").average_annualized)


def test_out_of_order_update_is_ignored_and_equal_times_take_the_last_arrival() -> None:
    det = FundingStressDetector(SMALL)
    det.update(T0 + 10 * S, "BTC", "okx", 0.05)
    det.update(T0 + 5 * S, "BTC", "okx", 0.50)  # older than okx's latest: ignored
    assert det.get("BTC").average_annualized == 0.05
    assert det.out_of_order_updates == 1
    det.update(T0 + 10 * S, "BTC", "okx", 0.07)  # same time: the later arrival wins
    assert det.get("BTC").average_annualized == 0.07
    assert det.out_of_order_updates == 1


def test_zero_total_open_interest_falls_back_to_equal_weights() -> None:
    det = FundingStressDetector(SMALL)
    det.update(T0, "ETH", "binance", 0.1, 0.0)
    det.update(T0, "ETH", "bybit", 0.3, 0.0)
    s = det.get("ETH")
    assert s.weighting == "equal"
    assert s.average_annualized == pytest.approx(0.2, abs=1e-15)


def test_flip_hysteresis_no_flapping_around_zero() -> None:
    det = FundingStressDetector(SMALL)
    events: list[FundingEvent] = []
    events += det.update(T0, "SOL", "binance", 0.01)  # inside the band: no sign yet
    assert det.get("SOL").sign == 0
    events += det.update(T0 + S, "SOL", "binance", 0.03)  # first sign: initial state, no event
    assert det.get("SOL").sign == 1
    for k, rate in enumerate([0.015, -0.015, 0.019, -0.019, 0.0, -0.0199]):
        events += det.update(T0 + (2 + k) * S, "SOL", "binance", rate)
    assert events == []  # noise inside ±2 %/yr never flips
    [flip] = det.update(T0 + 10 * S, "SOL", "binance", -0.02)
    assert (flip.type, flip.direction, flip.id) == (
        "funding.flip", "to_negative", f"funding.flip:SOL:{T0 + 10 * S}",
    )  # fmt: skip
    assert det.update(T0 + 11 * S, "SOL", "binance", 0.0199) == []
    [flip] = det.update(T0 + 12 * S, "SOL", "binance", 0.05)
    assert flip.direction == "to_positive"


def test_extreme_by_negative_threshold_with_hysteresis() -> None:
    det = FundingStressDetector(SMALL)
    det.update(T0, "BTC", "binance", 0.05)
    events = det.update(T0 + S, "BTC", "binance", -0.10)
    assert [e.type for e in events] == ["funding.flip", "funding.extreme.start"]
    start = events[1]
    assert start.reason == "negative"
    assert start.start_ns == T0 + S
    assert start.id == f"funding.extreme.start:BTC:{T0 + S}"
    assert math.isnan(start.z)  # no history yet
    for k, rate in enumerate([-0.09, -0.06, -0.05, -0.11, -0.051]):
        assert det.update(T0 + (2 + k) * S, "BTC", "binance", rate) == []
    [end] = det.update(T0 + 10 * S, "BTC", "binance", -0.049)
    assert end.type == "funding.extreme.end"
    assert end.id == f"funding.extreme.end:BTC:{T0 + S}"
    assert end.start_ns == T0 + S
    assert end.to_dict()["z"] is None


def test_extreme_by_z_score_and_history_sampling() -> None:
    params = replace(SMALL, max_age_s=7_200.0)
    det = FundingStressDetector(params)
    step = 600 * S
    rates = [0.10, 0.11, 0.09, 0.10, 0.12, 0.08]
    for k, rate in enumerate(rates):
        det.update(T0 + k * step + 5 * S, "ETH", "bybit", rate)
    # grid times T0+600s .. T0+3000s sampled the previous tick: rates[0..4]
    assert det.get("ETH").history_samples == 5
    median = float(np.median(rates[:5]))
    scale = 1.4826 * float(np.median(np.abs(np.array(rates[:5]) - median)))
    assert det.get("ETH").z == pytest.approx((0.08 - median) / scale, abs=1e-12)
    # a jump of the average far above its history: z extreme, though funding is positive
    [ev] = det.update(T0 + 6 * step, "ETH", "bybit", 0.40)
    assert det.get("ETH").history_samples == 6  # grid time T0+3600s sampled 0.08
    median = float(np.median(rates))
    scale = 1.4826 * float(np.median(np.abs(np.array(rates) - median)))
    assert ev.type == "funding.extreme.start"
    assert ev.reason == "z"
    assert ev.z == pytest.approx((0.40 - median) / scale, abs=1e-12)
    # |z| between z_extreme_off and z_extreme holds the state; below ends it
    mid = median + 2.5 * scale
    assert det.update(T0 + 6 * step + S, "ETH", "bybit", mid) == []
    [end] = det.update(T0 + 6 * step + 2 * S, "ETH", "bybit", median + scale)
    assert end.type == "funding.extreme.end"
    # an advance over a silence samples the grid until the venue goes stale, no further
    det.advance(T0 + 100 * step)
    assert det.get("ETH").history_samples == 6 + 12  # 6 up to 3600 s, then 12 (2 h) more


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((T0, "BTC", "binance", math.nan, None), "rate_annualized for 'BTC' on 'binance' is nan"),
        ((T0, "BTC", "binance", math.inf, None), "finite number"),
        ((T0, "BTC", "binance", True, None), "finite number"),
        ((T0, "BTC", "binance", 0.1, -1.0), "open_interest_usd for 'BTC' on 'binance' is -1.0"),
        ((T0, "BTC", "binance", 0.1, math.nan), ">= 0, or None"),
        ((-1, "BTC", "binance", 0.1, None), "ts_event_ns is -1"),
        ((T0, "", "binance", 0.1, None), "asset"),
        ((T0, "BTC", None, 0.1, None), "venue"),
    ],
)
def test_update_errors(args: tuple[object, ...], match: str) -> None:
    det = FundingStressDetector()
    with pytest.raises(InvalidInputError, match=match):
        det.update(*args)  # type: ignore[arg-type]
    assert det.now_ns is None
    with pytest.raises(InvalidInputError, match="now_ns"):
        det.advance(-1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"max_age_s": 0.0}, "max_age_s"),
        ({"history_step_s": 0}, "history_step_s"),
        ({"min_history": 1}, "min_history"),
        ({"min_history": 200}, "min_history"),
        ({"zscore": "mean"}, "'robust' or 'classical'"),
        ({"z_extreme": 1.5}, "z_extreme_off 2.0 must be < z_extreme 1.5"),
        ({"negative_on_annualized": 0.0}, "negative_on_annualized"),
        ({"flip_band_annualized": math.nan}, "flip_band_annualized"),
    ],
)
def test_params_errors(change: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        FundingParams(**change)  # type: ignore[arg-type]
