"""MarketDetector: every per-bar figure against pandas after every bar, events identical to
running the underlying detectors by hand, the gap rule, liquidation wiring, presets, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from signals.correlation import EWCorrelation
from signals.cosell import CoSellDetector, CoSellParams
from signals.detector import BarSignals, DetectorParams, MarketDetector, complete_block
from signals.errors import InvalidInputError
from signals.funding import FundingParams, FundingStressDetector
from signals.liquidations import LiquidationCascadeDetector, LiquidationParams
from signals.matrix import (
    absorption_ratio,
    adjusted_average_correlation,
    average_correlation,
    correlation_surprise,
    turbulence,
)

ATOL = 1e-10
NS = 1_000_000_000
STEP_S = 60
ASSETS = ["BTC", "ETH", "SPX", "GOLD"]
CLASSES = ["crypto", "crypto", "equity", "metal"]
W = 30
MINP = 15  # RollingCorrelation's default for W = 30


def params(**overrides: object) -> DetectorParams:
    cosell = CoSellParams(
        horizon_bars=2, z_sell=2.0, vol_halflife_bars=30.0, baseline_halflife_bars=60.0,
        theta_on=0.5, theta_off=0.3, min_off_bars=2, update_every_bars=3, warmup_bars=40,
        min_obs=20,
    )  # fmt: skip
    base = DetectorParams(
        window_bars=W,
        ew_half_life_bars=8.0,
        variance_baseline_half_life_bars=50.0,
        cosell=cosell,
        liquidations=LiquidationParams(min_baseline_windows=2, min_notional_usd=1e5),
        funding=FundingParams(max_age_s=600.0, history_step_s=300, min_history=3),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def market(seed: int = 3, t_len: int = 260) -> NDArray[np.float64]:
    """Closes (T, 4): one common factor, SPX closed in stretches, GOLD missing single bars,
    and a sell-off of everything near the end."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.002, (t_len, 1))
    r = 0.8 * common + rng.normal(0, 0.0015, (t_len, 4))
    r[t_len - 30 : t_len - 24] -= 0.012  # everything falls for 6 bars
    closes = 100.0 * np.exp(np.cumsum(r, axis=0))
    t = np.arange(t_len)
    closes[(t // 40) % 3 == 2, 2] = np.nan  # SPX closed 13 bars of every 40
    closes[t % 17 == 5, 3] = np.nan  # GOLD missing single bars
    return closes


def pandas_returns(closes: NDArray[np.float64], max_gap: int) -> pd.DataFrame:
    """ln(p_t / last close), defined when the last close is at most max_gap bars back."""
    lp = pd.DataFrame(np.log(closes), columns=ASSETS)
    last = lp.ffill().shift()
    idx = pd.DataFrame(np.arange(len(lp))[:, None].repeat(len(ASSETS), 1), columns=ASSETS)
    last_idx = idx.where(lp.notna()).ffill().shift()
    gap = idx - last_idx - 1
    return (lp - last).where(lp.notna() & (gap <= max_gap))


def liquidations(t_len: int) -> list[tuple[int, str, str, float]]:
    """Quiet liquidations, then a burst of long liquidations during the sell-off."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(t_len):
        if k % 3 == 0:
            out.append((k * STEP_S * NS + 17 * NS, "BTC", "long", float(rng.uniform(1e4, 3e4))))
        if k % 5 == 1:
            out.append((k * STEP_S * NS + 41 * NS, "ETH", "short", float(rng.uniform(1e4, 2e4))))
        if t_len - 30 <= k < t_len - 24:
            out.append((k * STEP_S * NS + 30 * NS, "ETH", "long", 2e6))
    return out


def funding(t_len: int) -> list[tuple[int, str, float]]:
    return [(k * STEP_S * NS, "BTC", 0.1 if k < t_len - 40 else -0.3) for k in range(0, t_len, 4)]


def test_figures_match_pandas_and_events_match_the_detectors_run_by_hand() -> None:
    closes = market()
    t_len = len(closes)
    p = params()
    det = MarketDetector(ASSETS, CLASSES, STEP_S, p)
    ret = pandas_returns(closes, 0)
    hand_ew = EWCorrelation(4, p.ew_half_life_bars)
    hand_cos = CoSellDetector(ASSETS, CLASSES, p.cosell)
    hand_liq = LiquidationCascadeDetector(p.liquidations)
    hand_fund = FundingStressDetector(p.funding)
    liq, fund = liquidations(t_len), funding(t_len)
    alpha = 1.0 - 2.0 ** (-1.0 / p.variance_baseline_half_life_bars)
    li = fi = 0
    n_events = {"cosell": 0, "liquidation": 0, "funding": 0}
    for t in range(t_len):
        start, end = t * STEP_S * NS, (t + 1) * STEP_S * NS
        while li < len(liq) and liq[li][0] <= end:
            ts, a, side, usd = liq[li]
            assert det.on_liquidation(ts, a, side, usd) == hand_liq.update(ts, a, side, usd, True)  # type: ignore[arg-type]
            li += 1
        while fi < len(fund) and fund[fi][0] <= end:
            ts, a, rate = fund[fi]
            events = det.on_funding(ts, a, "v", rate)
            assert events == hand_fund.update(ts, a, "v", rate)
            n_events["funding"] += len(events)
            fi += 1
        out = det.on_bar(start, closes[t])
        r = ret.iloc[t].to_numpy()
        np.testing.assert_allclose(out.returns, r, atol=ATOL, rtol=0)
        window = ret.iloc[max(0, t - W + 1) : t + 1]
        corr = window.corr(min_periods=MINP).to_numpy()
        avg = average_correlation(corr, CLASSES)
        assert out.corr_avg == pytest.approx(avg.pop("all"), abs=ATOL, nan_ok=True)
        assert out.corr_by_class_pair == pytest.approx(avg, abs=ATOL, nan_ok=True)
        block = complete_block(corr)
        ar = absorption_ratio(corr[np.ix_(block, block)])
        assert out.absorption_ratio == pytest.approx(ar, abs=ATOL, nan_ok=True)
        # Forbes-Rigobon: window variance (ddof 1) over the pandas EW baseline variance
        var_w = window.var().where(window.count() >= MINP).to_numpy()
        base = np.full(4, np.nan)
        for i, a in enumerate(ASSETS):
            s = ret[a].iloc[: t + 1].dropna()
            if len(s) >= W:
                base[i] = s.ewm(alpha=alpha, adjust=False).var(bias=True).iloc[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = np.where((var_w > 0) & (base > 0), var_w / base, np.nan)
        adj = adjusted_average_correlation(corr, CLASSES, ratios)
        assert out.corr_avg_adjusted == pytest.approx(adj.pop("all"), abs=ATOL, nan_ok=True)
        assert out.corr_adjusted_by_class_pair == pytest.approx(adj, abs=ATOL, nan_ok=True)
        hand_ew.update(r)
        ew_avg = average_correlation(hand_ew.get(), CLASSES)["all"]
        assert out.corr_avg_ew == pytest.approx(ew_avg, abs=ATOL, nan_ok=True)
        # turbulence: this bar against the previous window (mean, pairwise covariance)
        prev = ret.iloc[max(0, t - W) : t]
        mean, cov = prev.mean().to_numpy(), prev.cov(min_periods=MINP).to_numpy()
        use = np.isfinite(r) & np.isfinite(mean)
        b = complete_block(np.where(use[:, None] & use[None, :], cov, np.nan))
        args = (r[b], mean[b], cov[np.ix_(b, b)])
        turb = turbulence(*args) if b.size else math.nan
        surprise = correlation_surprise(*args) if b.size else math.nan
        assert out.turbulence == pytest.approx(turb, rel=1e-8, abs=ATOL, nan_ok=True)
        assert out.correlation_surprise == pytest.approx(surprise, rel=1e-8, nan_ok=True)
        # the detectors by hand, fed what the composite computed
        for i in np.flatnonzero(np.isfinite(closes[t])):
            hand_liq.update_price(end, ASSETS[i], float(closes[t, i]))
        liq_events = hand_liq.advance(end)
        zs = [hand_liq.snapshot(a).long.z for a in ("BTC", "ETH")]
        zs = [z for z in zs if math.isfinite(z)]
        z = max(zs) if zs else None
        long_usd = sum(hand_liq.snapshot(a).long.notional_usd[300] for a in ("BTC", "ETH"))
        assert out.long_liq_z == z
        assert out.long_liq_notional_usd == long_usd
        fund_events = hand_fund.advance(end)
        res = hand_cos.update(
            start, np.array(out.returns), out.corr_avg, out.absorption_ratio, z, long_usd,
            out.corr_by_class_pair,
        )  # fmt: skip
        assert out.cosell == res
        assert out.events == (*liq_events, *fund_events, *res.events)
        n_events["cosell"] += len(res.events)
        n_events["liquidation"] += len(liq_events)
        n_events["funding"] += len(fund_events)
    assert det.bars_seen == t_len
    # the run exercised every path: a flag, a cascade ending at a bar, funding events
    assert n_events["cosell"] >= 2
    assert n_events["liquidation"] >= 1
    assert n_events["funding"] >= 1


@pytest.mark.parametrize("max_gap", [0, 2, 13, 1000])
def test_returns_span_gaps_up_to_max_gap_bars(max_gap: int) -> None:
    closes = market(seed=5, t_len=140)
    det = MarketDetector(ASSETS, CLASSES, STEP_S, params(max_gap_bars=max_gap))
    got = np.array([det.on_bar(t * STEP_S * NS, c).returns for t, c in enumerate(closes)])
    want = pandas_returns(closes, max_gap).to_numpy()
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert math.isfinite(got[54, 2])  # SPX open (it is closed on bars 80..119)
    assert math.isfinite(got[120, 2]) == (max_gap >= 40)  # reopening after 40 closed bars
    assert math.isfinite(got[23, 3]) == (max_gap >= 1)  # GOLD after its one missing bar 22


def test_gap_is_measured_on_the_time_grid_not_in_calls() -> None:
    det = MarketDetector(["A"], ["crypto"], STEP_S, params(max_gap_bars=1))
    det.on_bar(0, [100.0])
    assert det.on_bar(2 * STEP_S * NS, [110.0]).returns[0] == pytest.approx(math.log(1.1))
    assert math.isnan(det.on_bar(5 * STEP_S * NS, [121.0]).returns[0])  # 2 bars skipped


def test_liquidations_count_only_universe_assets_that_had_one() -> None:
    det = MarketDetector(ASSETS, CLASSES, STEP_S, params())
    closes = market(t_len=30)
    assert det.on_bar(0, closes[0]).long_liq_z is None  # no feed yet: unavailable
    det.on_liquidation(70 * NS, "XRP", "long", 5e4)  # not in the universe
    out = det.on_bar(STEP_S * NS, closes[1])
    assert (out.long_liq_z, out.long_liq_notional_usd) == (None, None)
    for k in range(2, 30):
        det.on_liquidation(k * STEP_S * NS + 1, "BTC", "long", 2e4 + k)
        out = det.on_bar(k * STEP_S * NS, closes[k])
    snap_z = det._liq.snapshot("BTC").long.z
    assert out.long_liq_z == snap_z  # SPX, GOLD, ETH (no liquidation) do not count as z = 0
    assert out.long_liq_notional_usd == pytest.approx(sum(2e4 + k for k in range(25, 30)))


def test_sum_aggregate_and_liquidations_kept_out_of_the_score() -> None:
    closes = market(t_len=60)
    runs = {}
    for name, p in {
        "max": params(),
        "sum": params(liq_z_aggregate="sum"),
        "out": params(liq_in_score=False),
    }.items():
        det = MarketDetector(ASSETS, CLASSES, STEP_S, p)
        for k in range(60):
            det.on_liquidation(k * STEP_S * NS + 1, "BTC", "long", 2e4 + 100 * (k % 7))
            det.on_liquidation(k * STEP_S * NS + 2, "ETH", "long", 1e4 + 50 * (k % 5))
            out = det.on_bar(k * STEP_S * NS, closes[k])
        runs[name] = out
    zs = [runs["max"].long_liq_z, runs["sum"].long_liq_z, runs["out"].long_liq_z]
    assert zs[0] is not None
    assert zs[1] is not None
    btc, eth = (det._liq.snapshot(a).long.z for a in ("BTC", "ETH"))  # same feed in each run
    assert zs[0] == max(btc, eth)
    assert zs[1] == pytest.approx(btc + eth)
    assert zs[2] == zs[0]  # reported, but not scored
    assert math.isnan(runs["out"].cosell.liq)
    assert runs["max"].cosell.liq == min(max(zs[0] / 20.0, 0.0), 1.0)


@given(
    perm=st.permutations(range(4)),
    scale=st.lists(st.floats(0.01, 100.0), min_size=4, max_size=4),
)
@settings(max_examples=15, deadline=None)
def test_figures_invariant_to_asset_order_and_price_scale(
    perm: list[int], scale: list[float]
) -> None:
    closes = market(seed=11, t_len=90)
    a = MarketDetector(ASSETS, CLASSES, STEP_S, params())
    b = MarketDetector([ASSETS[i] for i in perm], [CLASSES[i] for i in perm], STEP_S, params())
    scaled = closes[:, perm] * np.array(scale)
    for t in range(90):
        x, y = a.on_bar(t * STEP_S * NS, closes[t]), b.on_bar(t * STEP_S * NS, scaled[t])
    np.testing.assert_allclose(np.array(y.returns), np.array(x.returns)[perm], atol=1e-12)
    for name in ("corr_avg", "corr_avg_adjusted", "corr_avg_ew", "absorption_ratio",
                 "turbulence", "correlation_surprise"):  # fmt: skip
        assert getattr(y, name) == pytest.approx(getattr(x, name), rel=1e-8, nan_ok=True)
    assert y.cosell.score == pytest.approx(x.cosell.score, abs=1e-9, nan_ok=True)


@given(
    st.lists(
        st.lists(st.sampled_from([0.5, math.nan, 1.0]), min_size=5, max_size=5),
        min_size=5,
        max_size=5,
    )
)
@settings(max_examples=60, deadline=None)
def test_complete_block_leaves_no_nan(rows: list[list[float]]) -> None:
    m = np.array(rows)
    m = np.where(np.isnan(m) | np.isnan(m.T), np.nan, m)  # symmetric NaN pattern
    keep = complete_block(m)
    sub = m[np.ix_(keep, keep)]
    assert not np.isnan(sub).any()
    assert (np.diagonal(sub) > 0).all()
    dropped = np.setdiff1d(np.arange(5), keep)
    full_ok = ~np.isnan(m).any(axis=0)
    assert not np.intersect1d(dropped, np.flatnonzero(full_ok)).size  # clean assets stay


def test_to_dict_is_json_with_nan_as_null() -> None:
    det = MarketDetector(ASSETS, CLASSES, STEP_S, params())
    out: BarSignals | None = None
    for t, c in enumerate(market(t_len=50)):
        out = det.on_bar(t * STEP_S * NS, c)
    assert out is not None
    d = orjson.loads(orjson.dumps(out.to_dict()))
    assert d["bar_start_ns"] == 49 * STEP_S * NS
    assert set(d["returns"]) == set(ASSETS)
    assert d["corr_avg"] == pytest.approx(out.corr_avg)
    assert d["long_liq_z"] is None
    assert set(d["corr_by_class_pair"]) == {
        "crypto-crypto", "crypto-equity", "crypto-metal", "equity-equity", "equity-metal",
        "metal-metal",
    }  # fmt: skip
    assert d["corr_by_class_pair"]["metal-metal"] is None  # one metal: no pair


@pytest.mark.parametrize(
    ("closes", "match"),
    [
        ([1.0, 2.0], "shape"),
        ([1.0, 2.0, 3.0, math.inf], "finite and > 0"),
        ([1.0, 2.0, -3.0, 4.0], "'SPX' is -3.0"),
        ([1.0, 0.0, 3.0, 4.0], "'ETH' is 0.0"),
        (["a", 1.0, 1.0, 1.0], "not numeric"),
    ],
)
def test_bad_closes_are_rejected(closes: list[object], match: str) -> None:
    det = MarketDetector(ASSETS, CLASSES, STEP_S)
    with pytest.raises(InvalidInputError, match=match):
        det.on_bar(0, closes)  # type: ignore[arg-type]


def test_time_must_increase_and_construction_is_checked() -> None:
    det = MarketDetector(ASSETS, CLASSES, STEP_S)
    det.on_bar(60 * NS, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(InvalidInputError, match="not after the previous bar"):
        det.on_bar(60 * NS, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(InvalidInputError, match="must be an int"):
        det.on_bar(1.5e9, [1.0, 1.0, 1.0, 1.0])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="interval_s"):
        MarketDetector(ASSETS, CLASSES, 0)
    with pytest.raises(InvalidInputError, match="one class per asset"):
        MarketDetector(ASSETS, CLASSES[:3], STEP_S)
    with pytest.raises(InvalidInputError, match="no '-'"):
        MarketDetector(["A", "B"], ["crypto", "eq-uity"], STEP_S)
    with pytest.raises(InvalidInputError, match="duplicates"):
        MarketDetector(["A", "A"], ["crypto", "crypto"], STEP_S)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_bars": 1}, "window_bars"),
        ({"max_gap_bars": -1}, "max_gap_bars"),
        ({"ew_half_life_bars": 0.0}, "ew_half_life_bars"),
        ({"variance_baseline_half_life_bars": math.nan}, "variance_baseline"),
        ({"absorption_fraction": 0.0}, "absorption_fraction"),
        ({"liq_z_aggregate": "mean"}, "liq_z_aggregate"),
    ],
)
def test_invalid_params(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        DetectorParams(**kwargs)  # type: ignore[arg-type]


def test_presets_keep_spans_of_time_with_floors_and_daily_preset() -> None:
    five = DetectorParams.for_bar_interval(300)
    assert five == DetectorParams()  # the defaults are the 5-minute preset
    one = DetectorParams.for_bar_interval(60)
    assert one.cosell == CoSellParams.for_bar_interval(60)  # floors do not bind at 1m
    assert one.variance_baseline_half_life_bars == 5 * 864.0
    hour = DetectorParams.for_bar_interval(3600, window_bars=48)
    assert (hour.cosell.horizon_bars, hour.cosell.min_obs, hour.window_bars) == (1, 48, 48)
    day = DetectorParams.for_bar_interval(86_400)
    assert day == DetectorParams.daily()
    assert (day.max_gap_bars, day.cosell.horizon_bars, day.cosell.theta_off) == (3, 2, 0.3)
    with pytest.raises(InvalidInputError, match="interval_s"):
        DetectorParams.for_bar_interval(0)
