"""Tests of signals.cosell: pandas oracle after every bar, hand-built scenarios, hysteresis,
cold windows, input validation, properties, and golden runs on real history excerpts."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from signals.cosell import CoSellDetector, CoSellEvent, CoSellParams, CoSellResult
from signals.errors import InvalidInputError

NS = 1_000_000_000
T0 = 1_762_214_400 * NS  # 2025-11-04 00:00 UTC
BAR = 60 * NS
HISTORY = Path(__file__).resolve().parents[1] / "fixtures" / "history"

ASSETS = ("BTC", "ETH", "SPX", "NDX", "GOLD")
CLASSES = ("crypto", "crypto", "equity", "equity", "metal")

SMALL = CoSellParams(
    horizon_bars=3,
    z_sell=2.0,
    vol_halflife_bars=15.0,
    vol_window_bars=25,
    baseline_halflife_bars=10.0,
    baseline_sd_floor=0.05,
    corr_z_full=2.0,
    liq_z_full=5.0,
    theta_on=0.55,
    theta_off=0.35,
    min_on_bars=2,
    min_off_bars=3,
    update_every_bars=2,
    warmup_bars=30,
    min_obs=20,
)


def ts(i: int) -> int:
    return T0 + i * BAR


# --------------------------------------------------------------------------- pandas oracle


def oracle(
    r: NDArray[np.float64],
    classes: Sequence[str],
    corr: NDArray[np.float64],
    ar: NDArray[np.float64],
    liq: Sequence[float | None],
    p: CoSellParams,
    weights: NDArray[np.float64] | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Every per-bar quantity of the module Notes, computed column-wise with pandas."""
    t_len, n = r.shape
    df = pd.DataFrame(r)
    exited = df.shift(p.horizon_bars)  # the return that left the H-window at bar t
    count = exited.notna().cumsum()
    if p.vol_estimator == "ew":
        var = (exited**2).ewm(halflife=p.vol_halflife_bars, ignore_na=True).mean().ffill()
    else:
        var = (
            pd.concat(
                [
                    (exited[c].dropna() ** 2).rolling(p.vol_window_bars, min_periods=1).mean()
                    for c in exited.columns
                ],
                axis=1,
            )
            .reindex(df.index)
            .ffill()
        )
    sigma = np.sqrt(var.to_numpy())
    sigma[(count.to_numpy() < p.min_obs) | ~(sigma > 0)] = np.nan
    cum = df.rolling(p.horizon_bars, min_periods=1).sum().to_numpy()
    m = df.notna().astype(float).rolling(p.horizon_bars, min_periods=1).sum().to_numpy()
    defined = np.isfinite(r) & np.isfinite(sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(defined, cum / (sigma * np.sqrt(m)), np.nan)
    sells = defined & (z < -p.z_sell)
    w = np.ones(n) if weights is None else weights
    breadth = np.full(t_len, np.nan)
    cls = np.full(t_len, np.nan)
    for t in range(t_len):
        if defined[t].any():
            breadth[t] = (w * sells[t]).sum() / (w * defined[t]).sum()
            hit = {classes[i] for i in range(n) if sells[t, i]}
            cls[t] = len(hit) / len({classes[i] for i in range(n) if defined[t, i]})

    def zscore(x: NDArray[np.float64]) -> NDArray[np.float64]:
        s = pd.Series(x)
        ew = s.ewm(halflife=p.baseline_halflife_bars, ignore_na=True)
        mean = ew.mean().ffill().shift(1).to_numpy()
        sd = np.sqrt(ew.var(bias=True).ffill().shift(1).to_numpy())
        seen = s.notna().cumsum().shift(1).fillna(0).to_numpy()
        out = (x - mean) / np.maximum(sd, p.baseline_sd_floor)
        out[(seen < p.min_obs) | ~np.isfinite(x)] = np.nan
        return out

    zc, za = zscore(corr), zscore(ar)
    mapped = np.clip(np.stack([zc, za]) / p.corr_z_full, 0, 1)
    n_def = np.isfinite(mapped).sum(axis=0)
    c = np.where(n_def > 0, np.nansum(mapped, axis=0) / np.maximum(n_def, 1), np.nan)
    liq_arr = np.array([np.nan if v is None else v for v in liq], dtype=float)
    d = np.clip(liq_arr / p.liq_z_full, 0, 1)
    comps = np.stack([breadth, cls, c, d])
    wk = np.array(p.component_weights)[:, None] * np.isfinite(comps)
    with np.errstate(invalid="ignore"):
        score = np.nansum(wk * np.nan_to_num(comps), axis=0) / wk.sum(axis=0)
    score[np.isnan(breadth)] = np.nan
    score[: p.warmup_bars] = np.nan
    return {"sigma": sigma, "z": z, "breadth": breadth, "classes": cls, "corr": c, "liq": d,
            "corr_z": zc, "ar_z": za, "score": score, "sells": sells}  # fmt: skip


def market(seed: int, t_len: int, closed_every: int = 0) -> dict[str, NDArray[np.float64]]:
    """Random returns with co-selling bursts, closed sessions and noisy correlation inputs."""
    rng = np.random.default_rng(seed)
    vols = np.array([2e-3, 3e-3, 1e-3, 1.2e-3, 0.8e-3])
    r = rng.standard_t(4, size=(t_len, len(ASSETS))) * vols
    for start in rng.choice(np.arange(40, t_len - 5), size=max(1, t_len // 60), replace=False):
        r[start : start + rng.integers(1, 5)] -= vols * rng.uniform(1.0, 4.0)
    if closed_every:
        closed = (np.arange(t_len) // closed_every) % 3 == 2
        r[closed, 2:] = np.nan  # equities and gold closed: undefined, never 0
    r[rng.random(r.shape) < 0.02] = np.nan  # stale bars
    corr = np.clip(0.4 + np.cumsum(rng.normal(0, 0.03, t_len)), -1, 1)
    corr[rng.random(t_len) < 0.05] = np.nan
    ar = np.clip(0.5 + np.cumsum(rng.normal(0, 0.02, t_len)), 0, 1)
    liq = rng.normal(1.0, 3.0, t_len)
    return {"r": r, "corr": corr, "ar": ar, "liq": liq}


# --------------------------------------------------------------------------- oracle tests


@pytest.mark.parametrize(
    ("seed", "closed_every", "estimator", "with_liq"),
    [(1, 0, "ew", True), (2, 17, "ew", False), (3, 11, "rolling", True), (4, 0, "rolling", False)],
)
def test_matches_pandas_oracle_after_every_bar(
    seed: int, closed_every: int, estimator: str, with_liq: bool
) -> None:
    mk = market(seed, 400, closed_every)
    p = replace(SMALL, vol_estimator=estimator)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed + 100)
    liq = [float(v) if with_liq and rng.random() > 0.1 else None for v in mk["liq"]]
    exp = oracle(mk["r"], CLASSES, mk["corr"], mk["ar"], liq, p)
    det = CoSellDetector(ASSETS, CLASSES, p)
    n_scored = 0
    for t in range(len(mk["r"])):
        res = det.update(ts(t), mk["r"][t], mk["corr"][t], mk["ar"][t], liq[t])
        assert det.sigma() == pytest.approx(exp["sigma"][t], abs=1e-10, nan_ok=True)
        for key, got in (("score", res.score), ("breadth", res.breadth),
                         ("classes", res.classes), ("corr", res.corr), ("liq", res.liq),
                         ("corr_z", res.corr_avg_z), ("ar_z", res.absorption_ratio_z)):  # fmt: skip
            assert got == pytest.approx(exp[key][t], abs=1e-10, nan_ok=True), (key, t)
        expected_selling = {ASSETS[i] for i in np.flatnonzero(exp["sells"][t])}
        assert {s.asset for s in res.selling} == expected_selling
        for s in res.selling:
            assert s.z == pytest.approx(exp["z"][t, ASSETS.index(s.asset)], abs=1e-10)
        n_scored += math.isfinite(res.score)
    assert n_scored > 300  # the comparison covered warm bars, not only NaNs


def test_asset_weights_enter_breadth() -> None:
    mk = market(7, 200)
    weights = {"BTC": 3.0, "GOLD": 0.5}
    p = replace(SMALL, asset_weights=weights)
    w = np.array([weights.get(a, 1.0) for a in ASSETS])
    liq: list[float | None] = [None] * 200
    exp = oracle(mk["r"], CLASSES, mk["corr"], mk["ar"], liq, p, w)
    det = CoSellDetector(ASSETS, CLASSES, p)
    for t in range(200):
        res = det.update(ts(t), mk["r"][t], mk["corr"][t], mk["ar"][t])
        assert res.breadth == pytest.approx(exp["breadth"][t], abs=1e-10, nan_ok=True)
        assert res.score == pytest.approx(exp["score"][t], abs=1e-10, nan_ok=True)


# --------------------------------------------------------------------------- hand-built scenarios

HAND_ASSETS = ("BTC", "ETH", "SPX", "GOLD")
HAND_CLASSES = ("crypto", "crypto", "equity", "metal")
HAND = CoSellParams(
    horizon_bars=1, z_sell=3.0, vol_halflife_bars=10.0, theta_on=0.6, theta_off=0.3,
    min_on_bars=1, min_off_bars=2, update_every_bars=2, warmup_bars=20, min_obs=10,
)  # fmt: skip
CALM = 0.001  # returns alternate ±CALM, so every σ is exactly CALM


def calm_bar(t: int) -> NDArray[np.float64]:
    return np.full(4, CALM if t % 2 else -CALM)


def feed_calm(det: CoSellDetector, bars: int, start: int = 0) -> None:
    for t in range(start, start + bars):
        res = det.update(ts(t), calm_bar(t), 0.30, 0.50, None)
        assert not res.events


def test_all_assets_fall_together_start_then_end_with_exact_components() -> None:
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    feed_calm(det, 30)
    crash = np.array([-0.006, -0.005, -0.004, 0.001])  # z = -6, -5, -4, +1 (σ = 0.001, H = 1)
    res = det.update(ts(30), crash, 0.33, 0.53, 10.0, 2.5e8, {"crypto-equity": 0.8})
    # independent arithmetic: 3 of 4 assets sell; crypto and equity hit of 3 classes;
    # ζ = (0.33 - 0.30) / floor 0.02 = 1.5 -> 1.5 / 3 = 0.5 for both; liq 10 / 20 = 0.5
    breadth, classes, corr, liq = 3 / 4, 2 / 3, 0.5, 0.5
    score = 0.4 * breadth + 0.2 * classes + 0.2 * corr + 0.2 * liq
    assert (res.breadth, res.classes) == pytest.approx((breadth, classes), abs=1e-12)
    assert (res.corr, res.liq, res.score) == pytest.approx((corr, liq, score), abs=1e-9)
    assert res.corr_avg_z == pytest.approx(1.5, abs=1e-9)
    assert res.active
    (start,) = res.events
    assert start.type == "cosell.start"
    assert start.id == f"cosell.start:{ts(30)}"
    assert start.episode_start_ns == start.bar_start_ns == ts(30)
    assert [(s.asset, s.asset_class) for s in start.selling] == [
        ("BTC", "crypto"), ("ETH", "crypto"), ("SPX", "equity")]  # fmt: skip
    assert [s.z for s in start.selling] == pytest.approx([-6.0, -5.0, -4.0], abs=1e-9)
    assert [s.cum_return for s in start.selling] == [-0.006, -0.005, -0.004]
    assert start.classes_hit == ("crypto", "equity")
    assert start.corr_by_class_pair == (("crypto-equity", 0.8),)
    assert (start.long_liq_z, start.long_liq_notional_usd) == (10.0, 2.5e8)
    assert start.peak_score == pytest.approx(score, abs=1e-9)
    # calm again: no liquidation figure (renormalised), correlation back to baseline
    res = det.update(ts(31), calm_bar(31), 0.30, 0.50)
    assert res.score == 0.0
    assert res.active
    assert not res.events
    res = det.update(ts(32), calm_bar(32), 0.30, 0.50)
    (end,) = res.events
    assert not res.active
    assert end.type == "cosell.end"
    assert end.id == f"cosell.end:{ts(30)}"
    assert end.episode_start_ns == ts(30)
    assert end.bar_start_ns == ts(32)
    assert (end.duration_s, end.duration_bars) == (60.0, 1)  # ends at the first calm bar
    assert (end.min_cum_return, end.min_cum_return_asset) == (-0.006, "BTC")
    assert end.peak_score == pytest.approx(score, abs=1e-9)
    payload = json.loads(json.dumps(end.to_dict(), allow_nan=False))
    assert payload["selling"] == []
    assert payload["liq"] is None
    assert payload["type"] == "cosell.end"


def test_closed_class_is_left_out_of_breadth_and_classes() -> None:
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    feed_calm(det, 30)
    crash = np.array([-0.006, -0.005, np.nan, 0.001])  # equities closed: undefined
    res = det.update(ts(30), crash, 0.30, 0.50)
    assert res.n_defined == 3
    assert (res.breadth, res.classes) == pytest.approx((2 / 3, 1 / 2), abs=1e-12)
    assert res.classes_hit == ("crypto",)
    assert res.score == pytest.approx((0.4 * 2 / 3 + 0.2 * 1 / 2 + 0.0) / 0.8, abs=1e-9)


def test_closed_asset_class_counts_only_through_an_open_sibling() -> None:
    assets, classes = ("BTC", "SPX", "NDX", "GOLD"), ("crypto", "equity", "equity", "metal")
    det = CoSellDetector(assets, classes, HAND)
    for t in range(30):
        det.update(ts(t), calm_bar(t), 0.3, 0.5)
    res = det.update(ts(30), np.array([0.001, np.nan, -0.005, 0.001]), 0.3, 0.5)
    assert res.classes_hit == ("equity",)
    assert (res.breadth, res.classes) == pytest.approx((1 / 3, 1 / 3), abs=1e-12)
    res = det.update(ts(31), np.array([-0.001, -0.009, np.nan, 0.001]), 0.3, 0.5)
    assert [s.asset for s in res.selling] == ["SPX"]
    # with every non-crypto class closed only crypto is defined: one class, one hit
    res = det.update(ts(32), np.array([-0.009, np.nan, np.nan, np.nan]), 0.3, 0.5)
    assert (res.n_defined, res.breadth, res.classes) == (1, 1.0, 1.0)


def test_weights_renormalised_when_liquidations_or_correlations_unavailable() -> None:
    crash = np.array([-0.006, -0.005, -0.004, 0.001])
    a, b = 3 / 4, 2 / 3
    for liq_z, corr_avg, expected in [
        (None, 0.33, (0.4 * a + 0.2 * b + 0.2 * 0.5) / 0.8),
        (float("nan"), 0.33, (0.4 * a + 0.2 * b + 0.2 * 0.5) / 0.8),
        (30.0, 0.33, 0.4 * a + 0.2 * b + 0.2 * 0.5 + 0.2 * 1.0),
    ]:
        det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
        feed_calm(det, 30)
        res = det.update(ts(30), crash, corr_avg, 0.53, liq_z)
        assert res.score == pytest.approx(expected, abs=1e-9)
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    feed_calm(det, 30)
    res = det.update(ts(30), crash, float("nan"), float("nan"), 5.0)
    assert math.isnan(res.corr)
    assert math.isnan(res.corr_avg_z)
    assert res.score == pytest.approx((0.4 * a + 0.2 * b + 0.2 * 0.25) / 0.8, abs=1e-12)


def test_cold_window_never_fires() -> None:
    crash = np.array([-0.05, -0.05, -0.05, -0.05])
    # 1) inside the warm-up: vol is warm (min_obs 10) but the detector is not (warmup 20)
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    feed_calm(det, 15)
    res = det.update(ts(15), crash, 0.99, 0.99, 100.0)
    assert math.isnan(res.score)
    assert not res.active
    assert not res.events
    assert res.breadth == 1.0  # the components are shown, the flag is held back
    # 2) past the warm-up but volatility still cold
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, replace(HAND, warmup_bars=0, min_obs=50))
    feed_calm(det, 40)
    res = det.update(ts(40), crash, 0.99, 0.99, 100.0)
    assert math.isnan(res.score)
    assert res.n_defined == 0
    assert not res.events
    assert np.isnan(det.sigma()).all()
    # 3) one asset with cold volatility is left out, the others are scored
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    for t in range(30):
        bar = calm_bar(t)
        bar[3] = np.nan if t < 25 else bar[3]  # GOLD has only 4 returns in its vol
        det.update(ts(t), bar, 0.3, 0.5)
    res = det.update(ts(30), crash, 0.3, 0.5)
    assert res.n_defined == 3
    assert res.breadth == 1.0
    assert res.classes == 1.0


def test_threshold_uses_volatility_from_before_the_window() -> None:
    p = replace(HAND, horizon_bars=3, warmup_bars=0)
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, p)
    feed_calm(det, 20)
    before = det.sigma().copy()
    crash = np.full(4, -0.01)
    det.update(ts(20), crash, 0.3, 0.5)
    det.update(ts(21), crash, 0.3, 0.5)
    res = det.update(ts(22), crash, 0.3, 0.5)
    np.testing.assert_allclose(det.sigma(), before, rtol=0, atol=1e-15)  # crash not in σ yet
    assert res.selling[0].z == pytest.approx(-0.03 / (CALM * math.sqrt(3)), abs=1e-9)
    det.update(ts(23), calm_bar(23), 0.3, 0.5)
    assert (det.sigma() > before * 1.5).all()  # the first crash bar has left the window


# --------------------------------------------------------------------------- hysteresis

LIQ_ONLY = replace(
    HAND, weight_breadth=0.01, weight_classes=0.0, weight_corr=0.0, weight_liq=0.99,
    liq_z_full=1.0, min_on_bars=1, min_off_bars=2, update_every_bars=1000,
)  # fmt: skip


def drive(scores: Sequence[float], p: CoSellParams) -> list[tuple[int, CoSellEvent]]:
    """Feed calm returns and liquidation z chosen so that the score equals each target."""
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, p)
    feed_calm(det, 30)
    out = []
    for k, s in enumerate(scores):
        t = 30 + k
        res = det.update(ts(t), calm_bar(t), 0.30, 0.50, s / 0.99)
        assert res.score == pytest.approx(s, abs=1e-12)
        out += [(t, e) for e in res.events]
    return out


def test_score_between_thresholds_does_not_flap() -> None:
    between = [0.35, 0.59, 0.31, 0.55] * 10  # always in [theta_off, theta_on)
    assert drive(between, LIQ_ONLY) == []
    events = drive([0.7, *between, 0.2, 0.2], LIQ_ONLY)
    assert [(t, e.type) for t, e in events] == [(30, "cosell.start"), (72, "cosell.end")]
    assert events[1][1].duration_bars == 41
    assert events[1][1].peak_score == pytest.approx(0.7)


def test_min_on_and_min_off_bars() -> None:
    p = replace(LIQ_ONLY, min_on_bars=3, min_off_bars=3)
    seq = [0.7, 0.7, 0.5, 0.7, 0.7, 0.7, 0.2, 0.2, 0.4, 0.2, 0.2, 0.2]
    events = drive(seq, p)
    assert [(t, e.type) for t, e in events] == [(35, "cosell.start"), (41, "cosell.end")]
    start, end = events[0][1], events[1][1]
    assert start.episode_start_ns == ts(33)  # the first bar of the qualifying run
    assert start.id == f"cosell.start:{ts(33)}"
    assert end.id == f"cosell.end:{ts(33)}"
    assert (end.duration_bars, end.duration_s) == (6, 360.0)  # 33 .. first bar of calm run 39


def test_updates_every_k_bars_while_active() -> None:
    p = replace(LIQ_ONLY, update_every_bars=3)
    events = drive([0.7] * 8 + [0.1, 0.1], p)
    kinds = [(t, e.type) for t, e in events]
    assert kinds == [(30, "cosell.start"), (33, "cosell.update"), (36, "cosell.update"),
                     (39, "cosell.end")]  # fmt: skip
    assert events[1][1].id == f"cosell.update:{ts(30)}:{ts(33)}"


def test_nan_score_counts_as_calm_while_active() -> None:
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, LIQ_ONLY)
    feed_calm(det, 30)
    assert det.update(ts(30), calm_bar(30), 0.3, 0.5, 1.0).events[0].type == "cosell.start"
    nan_bar = np.full(4, np.nan)
    assert det.update(ts(31), nan_bar, 0.3, 0.5, 1.0).events == ()
    res = det.update(ts(32), nan_bar, 0.3, 0.5, 1.0)
    assert math.isnan(res.score)
    assert res.events[0].type == "cosell.end"
    assert res.events[0].min_cum_return is not None


# --------------------------------------------------------------------------- determinism, I/O


def run_all(seed: int) -> list[str]:
    mk = market(seed, 300, 13)
    det = CoSellDetector(ASSETS, CLASSES, SMALL)
    out = []
    for t in range(300):
        res = det.update(ts(t), mk["r"][t], mk["corr"][t], mk["ar"][t], float(mk["liq"][t]))
        out += [json.dumps(e.to_dict(), allow_nan=False, sort_keys=True) for e in res.events]
    return out


def test_event_ids_and_payloads_are_deterministic() -> None:
    first, second = run_all(5), run_all(5)
    assert first == second
    assert any('"cosell.start"' in e for e in first)
    assert any('"cosell.end"' in e for e in first)
    ids = [json.loads(e)["id"] for e in first]
    assert len(ids) == len(set(ids))


def test_get_has_no_side_effects() -> None:
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    assert det.get() is None
    res = det.update(ts(0), calm_bar(0), 0.3, 0.5)
    assert det.get() is res
    assert det.get() is res


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(3), 0.3, 0.5), "shape"),
        ((np.zeros((4, 1)), 0.3, 0.5), "shape"),
        ((np.array([0.0, np.inf, 0.0, 0.0]), 0.3, 0.5), "ETH"),
        ((np.array(["a", "b", "c", "d"]), 0.3, 0.5), "numeric"),
        ((np.zeros(4), math.inf, 0.5), "corr_avg"),
        ((np.zeros(4), 1.5, 0.5), "corr_avg"),
        ((np.zeros(4), 0.3, -0.1), "absorption_ratio"),
        ((np.zeros(4), 0.3, 0.5, math.inf), "long_liq_z"),
        ((np.zeros(4), 0.3, 0.5, 1.0, -5.0), "long_liq_notional_usd"),
        ((np.zeros(4), 0.3, 0.5, None, None, {"crypto-equity": 2.0}), "crypto-equity"),
        ((np.zeros(4), "0.3", 0.5), "corr_avg"),
    ],
)
def test_invalid_inputs(args: tuple[object, ...], match: str) -> None:
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    with pytest.raises(InvalidInputError, match=match):
        det.update(ts(0), *args)  # type: ignore[arg-type]


def test_invalid_time_and_construction() -> None:
    det = CoSellDetector(HAND_ASSETS, HAND_CLASSES, HAND)
    det.update(ts(1), np.zeros(4), 0.3, 0.5)
    for bad in (ts(1), ts(0)):
        with pytest.raises(InvalidInputError, match="not after"):
            det.update(bad, np.zeros(4), 0.3, 0.5)
    with pytest.raises(InvalidInputError, match="must be an int"):
        det.update(float(ts(2)), np.zeros(4), 0.3, 0.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="one class per asset"):
        CoSellDetector(["BTC", "ETH"], ["crypto"])
    with pytest.raises(InvalidInputError, match="duplicates"):
        CoSellDetector(["BTC", "BTC"], ["crypto", "crypto"])
    with pytest.raises(InvalidInputError, match="unknown assets"):
        CoSellDetector(["BTC"], ["crypto"], CoSellParams(asset_weights={"ETH": 2.0}))


@pytest.mark.parametrize(
    "kwargs",
    [{"theta_on": 0.3, "theta_off": 0.5}, {"theta_on": 1.2}, {"theta_off": 0.0},
     {"horizon_bars": 0}, {"horizon_bars": 2.5}, {"warmup_bars": -1}, {"z_sell": math.nan},
     {"weight_liq": -0.1}, {"weight_breadth": 0.0, "weight_classes": 0.0},
     {"vol_estimator": "garch"}, {"asset_weights": {"BTC": 0.0}}],
)  # fmt: skip
def test_invalid_params(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        CoSellParams(**kwargs)  # type: ignore[arg-type]


def test_for_bar_interval_keeps_spans_of_time() -> None:
    five = CoSellParams()
    one = CoSellParams.for_bar_interval(60)
    for name in ("horizon_bars", "min_off_bars", "update_every_bars", "warmup_bars", "min_obs"):
        assert getattr(one, name) == 5 * getattr(five, name)
    assert one.vol_halflife_bars == 5 * five.vol_halflife_bars
    assert (one.z_sell, one.theta_on, one.min_on_bars) == (five.z_sell, five.theta_on, 1)
    assert CoSellParams.for_bar_interval(300) == five
    with pytest.raises(InvalidInputError, match="interval_s"):
        CoSellParams.for_bar_interval(0)


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.lists(st.one_of(st.just(math.nan), st.floats(-0.2, 0.2)), min_size=3, max_size=3),
            st.one_of(st.just(math.nan), st.floats(-1, 1)),
            st.one_of(st.just(math.nan), st.floats(0, 1)),
            st.one_of(st.none(), st.just(math.nan), st.floats(-1e6, 1e6)),
        ),
        min_size=1,
        max_size=80,
    ),
    horizon=st.integers(1, 4),
)
def test_score_in_unit_interval_or_nan_and_events_alternate(
    data: list[tuple[list[float], float, float, float | None]], horizon: int
) -> None:
    p = replace(SMALL, horizon_bars=horizon, warmup_bars=5, min_obs=3, min_on_bars=1)
    det = CoSellDetector(("A", "B", "C"), ("crypto", "equity", "metal"), p)
    expect = "cosell.start"
    for t, (r, corr, ar, liq) in enumerate(data):
        res: CoSellResult = det.update(ts(t), np.array(r), corr, ar, liq)
        assert math.isnan(res.score) or 0.0 <= res.score <= 1.0
        for comp in (res.breadth, res.classes, res.corr, res.liq):
            assert math.isnan(comp) or 0.0 <= comp <= 1.0
        for e in res.events:
            if e.type == "cosell.update":
                assert expect == "cosell.end"
                continue
            assert e.type == expect
            expect = "cosell.end" if expect == "cosell.start" else "cosell.start"
            json.dumps(e.to_dict(), allow_nan=False)
        assert res.active == (expect == "cosell.end")


# --------------------------------------------------------------------------- real history


def load_history(episode: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Wide log returns (per asset, on its own closes) of ``bars_<episode>.csv``."""
    bars = pd.read_csv(HISTORY / f"bars_{episode}.csv", parse_dates=["ts"])
    close = bars.pivot(index="ts", columns="asset", values="close")
    classes = bars.drop_duplicates("asset").set_index("asset")["asset_class"]
    rets = {a: np.log(close[a].dropna()).diff() for a in close.columns}
    ret = pd.concat(rets, axis=1).reindex(close.index)
    return ret, list(close.columns), [classes[a] for a in close.columns]


def replay(
    episode: str, p: CoSellParams, window_bars: int = 120
) -> tuple[pd.Series, list[CoSellEvent]]:
    """Rolling-correlation inputs from pandas/numpy, then the detector bar by bar."""
    ret, assets, classes = load_history(episode)
    pairs = list(itertools.combinations(assets, 2))
    rho = pd.concat([ret[a].rolling(window_bars).corr(ret[b]) for a, b in pairs], axis=1)
    corr_avg = rho.mean(axis=1, skipna=False).to_numpy()
    values = ret.to_numpy()
    det = CoSellDetector(assets, classes, p)
    scores: list[float] = []
    events: list[CoSellEvent] = []
    for t in range(1, len(ret)):
        ar = math.nan
        if t >= window_bars:
            ev = np.linalg.eigvalsh(np.corrcoef(values[t - window_bars + 1 : t + 1].T))
            ar = float(ev[-math.ceil(len(assets) / 5) :].sum() / ev.sum())
        res = det.update(int(ret.index[t].value), values[t], float(corr_avg[t]), ar)
        scores.append(res.score)
        events += res.events
    return pd.Series(scores, index=ret.index[1:]), events


def starts(events: list[CoSellEvent]) -> list[pd.Timestamp]:
    return [pd.Timestamp(e.episode_start_ns, tz="UTC") for e in events if e.type == "cosell.start"]


@pytest.mark.slow
def test_golden_2025_10_10_crash_fires_at_2055() -> None:
    scores, events = replay("2025-10-10", CoSellParams())
    late = [
        t.strftime("%m-%d %H:%M") for t in starts(events) if t >= pd.Timestamp("2025-10-10 20:00Z")
    ]
    assert late == ["10-10 20:55"]  # minutes before the 21:00-21:30 crash bars
    assert scores.loc["2025-10-10 21:00":"2025-10-10 21:30"].min() > 0.85
    (end,) = [
        e
        for e in events
        if e.type == "cosell.end" and e.episode_start_ns == ts_of("2025-10-10 20:55")
    ]
    assert end.peak_score > 0.99
    assert end.min_cum_return is not None
    assert end.min_cum_return < -0.3  # SOL's 30-minute log return reached -33 %


@pytest.mark.slow
def test_golden_2025_11_04_sell_off_fires() -> None:
    _, events = replay("2025-11-04", CoSellParams())
    on_day = [t.strftime("%H:%M") for t in starts(events) if t.strftime("%Y-%m-%d") == "2025-11-04"]
    assert on_day == ["05:30", "21:30"]


def ts_of(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


@pytest.mark.slow
def test_golden_calm_2025_09_stays_off() -> None:
    p = CoSellParams()
    scores, events = replay("calm-2025-09", p)
    assert starts(events) == []
    calm = scores.loc["2025-09-08":]
    assert calm.notna().mean() > 0.99
    assert calm.max() < p.theta_on
