"""Tests of signals.bars: hand-computed grids, pandas resample oracle, late ticks, idle timeout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signals.bars import NS_PER_S, Bar, BarBuilder, BarSet
from signals.errors import InvalidInputError

T0 = 1_762_214_400 * NS_PER_S  # 2025-11-04 00:00:00 UTC, a multiple of one day
S = NS_PER_S

Tick = tuple[str, int, float]  # asset, ts_event_ns, price


def run(builder: BarBuilder, ticks: Sequence[Tick]) -> list[BarSet]:
    out: list[BarSet] = []
    for asset, ts, price in ticks:
        out.extend(builder.add_tick(asset, ts, price))
    return out


def late_mask(ticks: Sequence[Tick], interval_s: int, grace_ns: int) -> list[bool]:
    """Which ticks the watermark rule makes late (independent restatement of the rule)."""
    step = interval_s * S
    mask: list[bool] = []
    start: int | None = None  # first open bar index
    closed_any = False
    max_ts: int | None = None
    for _, ts, _ in ticks:
        k = ts // step
        if start is None or (k < start and not closed_any):
            start = k
            mask.append(False)
        elif k < start:
            mask.append(True)
            continue
        else:
            mask.append(False)
        max_ts = ts if max_ts is None else max(max_ts, ts)
        last_closed = (max_ts - grace_ns) // step - 1
        if last_closed >= start:
            start = last_closed + 1
            closed_any = True
    return mask


def pandas_oracle(
    ticks: Sequence[Tick], assets: Sequence[str], interval_s: int, grid: Sequence[int]
) -> dict[str, pd.DataFrame]:
    """Per asset: close (last by event time, ties by arrival, forward-filled) and tick count."""
    df = pd.DataFrame(ticks, columns=["asset", "ts", "price"])
    df["arrival"] = np.arange(len(df))
    idx = pd.DatetimeIndex(grid, tz="UTC")
    out = {}
    for asset in assets:
        sub = df[df["asset"] == asset].sort_values(["ts", "arrival"], kind="stable")
        series = pd.Series(
            sub["price"].to_numpy(), index=pd.to_datetime(sub["ts"].to_numpy(), utc=True)
        )
        rs = series.resample(f"{interval_s}s", origin="epoch", label="left", closed="left")
        last = rs.last().reindex(idx)
        count = rs.count().reindex(idx).fillna(0).astype(int)
        # forward-fill from before the grid start too (ticks are never before it, by construction)
        out[asset] = pd.DataFrame({"close": last.ffill(), "n": count, "raw": last})
    return out


def check_against_oracle(
    ticks: Sequence[Tick],
    assets: Sequence[str],
    interval_s: int,
    grace_s: float,
    max_stale_bars: int,
) -> list[BarSet]:
    builder = BarBuilder(assets, interval_s, grace_s=grace_s, max_stale_bars=max_stale_bars)
    emitted = run(builder, ticks)
    grace_ns = round(grace_s * S)
    mask = late_mask(ticks, interval_s, grace_ns)
    kept = [t for t, late in zip(ticks, mask, strict=True) if not late]
    for asset in assets:
        expected_late = sum(
            1 for t, late in zip(ticks, mask, strict=True) if late and t[0] == asset
        )
        assert builder.late_ticks[asset] == expected_late
    step = interval_s * S
    first = min(ts for _, ts, _ in kept) // step
    last = (max(ts for _, ts, _ in kept) - grace_ns) // step - 1
    grid = [k * step for k in range(first, last + 1)]
    assert [bs.bar_start_ns for bs in emitted] == grid
    if not grid:
        return emitted
    oracle = pandas_oracle(kept, assets, interval_s, grid)
    run_len = dict.fromkeys(assets, 0)
    for row, bs in enumerate(emitted):
        assert bs.interval_s == interval_s
        assert bs.assets == tuple(assets)
        for bar in bs.bars:
            o = oracle[bar.asset].iloc[row]
            assert bar.bar_start_ns == grid[row]
            assert bar.n_ticks == o["n"]
            assert bar.stale == (o["n"] == 0)
            run_len[bar.asset] = run_len[bar.asset] + 1 if bar.stale else 0
            assert bar.stale_bars == run_len[bar.asset]
            if math.isnan(o["close"]):
                assert math.isnan(bar.close)
            else:
                assert bar.close == o["close"]
            if not bar.stale:
                assert bar.close == o["raw"]
            expect_excluded = math.isnan(o["close"]) or run_len[bar.asset] > max_stale_bars
            assert (bar.asset in bs.excluded) == expect_excluded
    return emitted


# ----------------------------------------------------------------------------- hand-computed


def test_hand_computed_grid_with_gap_and_stale_forward_fill() -> None:
    b = BarBuilder(["BTC", "ETH"], interval_s=60, grace_s=2.0, max_stale_bars=1)
    assert b.add_tick("BTC", T0 + 5 * S, 100.0) == []
    assert b.add_tick("ETH", T0 + 7 * S, 10.0) == []
    assert b.add_tick("BTC", T0 + 50 * S, 101.0) == []
    assert b.add_tick("BTC", T0 + 20 * S, 102.0) == []  # out of order in the open bar
    assert b.add_tick("BTC", T0 + 61 * S, 103.0) == []  # watermark 59 s: bar 0 still open
    # 200 s: watermark 198 s closes bars [0,60) [60,120) [120,180)
    out = b.add_tick("BTC", T0 + 200 * S, 104.0)
    assert [bs.bar_start_ns for bs in out] == [T0, T0 + 60 * S, T0 + 120 * S]
    bar0, bar1, bar2 = out
    assert bar0.bars == (
        Bar("BTC", T0, 60, 101.0, 3, False, 0),
        Bar("ETH", T0, 60, 10.0, 1, False, 0),
    )
    assert bar0.excluded == ()
    assert bar1.bars == (
        Bar("BTC", T0 + 60 * S, 60, 103.0, 1, False, 0),
        Bar("ETH", T0 + 60 * S, 60, 10.0, 0, True, 1),
    )
    assert bar1.excluded == ()
    assert bar2.bars == (
        Bar("BTC", T0 + 120 * S, 60, 103.0, 0, True, 1),
        Bar("ETH", T0 + 120 * S, 60, 10.0, 0, True, 2),
    )
    assert bar2.excluded == ("ETH",)  # stale 2 > max_stale_bars 1
    np.testing.assert_array_equal(bar2.closes(), [103.0, np.nan])
    r1 = bar1.log_returns(bar0)
    assert r1[0] == pytest.approx(math.log(103.0 / 101.0), abs=1e-15)
    assert math.isnan(r1[1])  # ETH stale in bar 1: NaN, not 0
    assert np.isnan(bar2.log_returns(bar1)).all()


def test_tick_exactly_on_the_bar_end_belongs_to_the_next_bar() -> None:
    b = BarBuilder(["BTC"], interval_s=60, grace_s=0.0)
    b.add_tick("BTC", T0, 100.0)
    [bs] = b.add_tick("BTC", T0 + 60 * S, 200.0)  # closes [T0, T0+60s) without this tick
    assert bs.bars[0].close == 100.0
    assert bs.bars[0].n_ticks == 1


def test_ties_in_event_time_last_arrival_wins() -> None:
    b = BarBuilder(["BTC"], interval_s=1, grace_s=0.0)
    b.add_tick("BTC", T0 + 500, 1.0)
    b.add_tick("BTC", T0 + 900, 2.0)
    b.add_tick("BTC", T0 + 900, 3.0)
    b.add_tick("BTC", T0 + 100, 4.0)
    [bs] = b.add_tick("BTC", T0 + S, 5.0)
    assert bs.bars[0].close == 3.0
    assert bs.bars[0].n_ticks == 4


def test_never_seen_asset_is_excluded_with_nan_close() -> None:
    b = BarBuilder(["BTC", "SPX"], interval_s=60, grace_s=0.0, max_stale_bars=100)
    b.add_tick("BTC", T0, 100.0)
    [bs] = b.add_tick("BTC", T0 + 60 * S, 100.0)
    spx = bs.bars[1]
    assert math.isnan(spx.close)
    assert spx.stale
    assert bs.excluded == ("SPX",)
    assert spx.to_dict()["close"] is None


def test_late_ticks_are_counted_not_merged() -> None:
    b = BarBuilder(["BTC", "ETH"], interval_s=60, grace_s=1.0)
    b.add_tick("BTC", T0 + 10 * S, 100.0)
    [bs] = b.add_tick("BTC", T0 + 61 * S, 101.0)
    assert b.closed_until_ns == T0 + 60 * S
    assert b.add_tick("ETH", T0 + 59 * S, 50.0) == []
    assert b.add_tick("BTC", T0 + 59 * S, 50.0) == []
    assert b.add_tick("BTC", T0 + 60 * S, 99.0) == []  # open bar: not late
    stats = b.stats()
    assert stats.late_ticks == {"BTC": 1, "ETH": 1}
    assert stats.ticks_total == 5
    assert stats.bars_closed == 1
    assert stats.watermark_ns == T0 + 60 * S
    out = b.add_tick("BTC", T0 + 121 * S, 102.0)
    assert out[0].bars[0].close == 101.0  # bar [60,120): 99 at 60 s then 101 at 61 s
    assert out[0].bars[0].n_ticks == 2
    assert bs.bars[0].close == 100.0


def test_earlier_tick_moves_the_grid_start_back_until_a_bar_closed() -> None:
    b = BarBuilder(["BTC"], interval_s=60, grace_s=30.0)
    b.add_tick("BTC", T0 + 70 * S, 2.0)
    b.add_tick("BTC", T0 + 10 * S, 1.0)  # nothing closed yet: grid starts at T0
    out = b.add_tick("BTC", T0 + 95 * S, 3.0)  # watermark 65 s: bar [0,60) closes
    assert [(bs.bar_start_ns, bs.bars[0].close) for bs in out] == [(T0, 1.0)]
    assert b.late_ticks == {"BTC": 0}


def test_one_day_bars_are_utc_day_aligned() -> None:
    b = BarBuilder(["GOLD"], interval_s=86_400, grace_s=60.0)
    b.add_tick("GOLD", T0 + 3_600 * S, 4000.0)
    b.add_tick("GOLD", T0 + 80_000 * S, 4010.0)
    [bs] = b.add_tick("GOLD", T0 + 86_460 * S, 4020.0)
    assert bs.bar_start_ns == T0
    assert pd.Timestamp(bs.bar_start_ns, tz="UTC") == pd.Timestamp("2025-11-04", tz="UTC")
    assert bs.bars[0].close == 4010.0


# ----------------------------------------------------------------------------- idle timeout


def test_idle_timeout_advances_the_watermark_by_elapsed_processing_time() -> None:
    lag = 300_000_000  # receive 0.3 s after the event
    b = BarBuilder(["BTC", "ETH"], interval_s=10, grace_s=1.0, idle_timeout_s=3.0)
    b.add_tick("BTC", T0 + 2 * S, 100.0, ts_recv_ns=T0 + 2 * S + lag)
    b.add_tick("ETH", T0 + 4 * S, 10.0, ts_recv_ns=T0 + 4 * S + lag)
    assert b.advance(T0 + 7 * S + lag) == []  # idle exactly 3 s: not more than the timeout
    # idle 3.5 s: event time ≈ 4 + 3.5 = 7.5 s, watermark 6.5 s < 10 s
    assert b.advance(T0 + 7 * S + lag + S // 2) == []
    # idle 7 s: event time ≈ 11 s, watermark 10 s: bar [0, 10) closes
    [bs] = b.advance(T0 + 11 * S + lag)
    assert bs.bar_start_ns == T0
    assert [x.close for x in bs.bars] == [100.0, 10.0]
    # a long silence closes the gap bars, stale
    out = b.advance(T0 + 41 * S + lag)
    assert [x.bar_start_ns for x in out] == [T0 + 10 * S, T0 + 20 * S, T0 + 30 * S]
    assert all(x.stale for bs in out for x in bs.bars)
    assert out[-1].bars[0].stale_bars == 3
    # a tick for a bar the idle watermark closed is late
    assert b.add_tick("BTC", T0 + 25 * S, 1.0, ts_recv_ns=T0 + 42 * S) == []
    assert b.late_ticks["BTC"] == 1
    # a live tick resets idleness: no advance right after it
    assert b.add_tick("BTC", T0 + 45 * S, 101.0, ts_recv_ns=T0 + 45 * S + lag) == []
    assert b.advance(T0 + 46 * S) == []


def test_advance_is_a_no_op_without_timeout_or_ticks() -> None:
    assert BarBuilder(["BTC"], 60, idle_timeout_s=1.0).advance(T0) == []
    b = BarBuilder(["BTC"], 60)
    b.add_tick("BTC", T0, 1.0)
    assert b.advance(T0 + 10_000 * S) == []


def test_watermark_never_moves_back() -> None:
    b = BarBuilder(["BTC"], interval_s=10, grace_s=0.0, idle_timeout_s=1.0)
    b.add_tick("BTC", T0, 1.0, ts_recv_ns=T0)
    b.advance(T0 + 35 * S)
    assert b.watermark_ns == T0 + 35 * S
    b.add_tick("BTC", T0 + 31 * S, 2.0, ts_recv_ns=T0 + 36 * S)
    assert b.watermark_ns == T0 + 35 * S


# ----------------------------------------------------------------------------- log returns


def test_log_returns_nan_after_a_stale_run_and_validation() -> None:
    b = BarBuilder(["A"], interval_s=1, grace_s=0.0)
    prices = {0: 100.0, 1: 110.0, 3: 121.0, 4: 133.1}  # no tick in bar 2
    sets = run(b, [("A", T0 + k * S, p) for k, p in prices.items()] + [("A", T0 + 5 * S, 1.0)])
    r = [s.log_returns(p)[0] for p, s in zip([None, *sets[:-1]], sets, strict=True)]
    assert math.isnan(r[0])
    assert r[1] == pytest.approx(math.log(1.1), abs=1e-15)
    assert math.isnan(r[2])  # stale bar 2
    assert math.isnan(r[3])  # bar 3 spans two intervals: not a one-bar return
    assert r[4] == pytest.approx(math.log(1.1), abs=1e-15)
    with pytest.raises(InvalidInputError, match="immediately before"):
        sets[3].log_returns(sets[1])
    other = BarSet(
        sets[2].bar_start_ns, 1, (Bar("B", sets[2].bar_start_ns, 1, 1.0, 1, False, 0),), ()
    )
    with pytest.raises(InvalidInputError, match="one builder"):
        sets[3].log_returns(other)


# ----------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("interval_s", [1, 60, 300, 86_400])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_streams_match_pandas_resample(interval_s: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    assets = ["BTC", "ETH", "GOLD"]
    n = 400
    step = interval_s * S
    # event times roughly increasing with jitter, so some ticks are out of order or late
    base = T0 + np.sort(rng.integers(0, 40 * step, n))
    jitter = rng.integers(-step // 2, step // 2 + 1, n)
    ts = np.maximum(base + jitter, 0)
    names = rng.choice(assets, n, p=[0.6, 0.3, 0.1])
    prices = np.round(rng.lognormal(4.0, 0.1, n), 2)  # rounding makes price ties likely
    ts[rng.integers(0, n, 20)] = ts[rng.integers(0, n, 20)]  # exact ties in event time
    ticks = [(str(a), int(t), float(p)) for a, t, p in zip(names, ts, prices, strict=True)]
    for grace_s in (0.0, interval_s / 4, 3.0 * interval_s):
        emitted = check_against_oracle(ticks, assets, interval_s, grace_s, max_stale_bars=2)
        assert len(emitted) > 10


@st.composite
def tick_streams(draw: st.DrawFn) -> tuple[list[Tick], int, float, int]:
    interval_s = draw(st.sampled_from([1, 7, 60, 300, 86_400]))
    step = interval_s * S
    assets = ["A", "B", "C"]
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(assets),
                st.integers(0, 12 * step),
                st.sampled_from([1.0, 2.5, 3.0, 100.0, 1e-6, 7e4]),
            ),
            min_size=1,
            max_size=60,
        )
    )
    grace_s = draw(st.sampled_from([0.0, 0.5, float(interval_s), 2.5 * interval_s]))
    max_stale = draw(st.integers(0, 3))
    return [(a, T0 + t, p) for a, t, p in raw], interval_s, grace_s, max_stale


@settings(max_examples=150, deadline=None)
@given(tick_streams())
def test_property_every_emitted_close_equals_the_oracle(
    case: tuple[list[Tick], int, float, int],
) -> None:
    ticks, interval_s, grace_s, max_stale = case
    check_against_oracle(ticks, ["A", "B", "C"], interval_s, grace_s, max_stale)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"assets": [], "interval_s": 60}, "one or more"),
        ({"assets": ["A", "A"], "interval_s": 60}, "duplicates"),
        ({"assets": ["A"], "interval_s": 0}, "1..86400"),
        ({"assets": ["A"], "interval_s": 86_401}, "1..86400"),
        ({"assets": ["A"], "interval_s": 1.5}, "1..86400"),
        ({"assets": ["A"], "interval_s": True}, "1..86400"),
        ({"assets": ["A"], "interval_s": 60, "grace_s": -1.0}, "grace_s"),
        ({"assets": ["A"], "interval_s": 60, "grace_s": math.nan}, "grace_s"),
        ({"assets": ["A"], "interval_s": 60, "idle_timeout_s": 0.0}, "idle_timeout_s"),
        ({"assets": ["A"], "interval_s": 60, "max_stale_bars": -1}, "max_stale_bars"),
    ],
)
def test_constructor_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        BarBuilder(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("XRP", T0, 1.0), "'XRP' is not one of"),
        (("BTC", T0, math.nan), "price for 'BTC' is nan: prices must be finite and > 0"),
        (("BTC", T0, math.inf), "finite and > 0"),
        (("BTC", T0, 0.0), "finite and > 0"),
        (("BTC", T0, -3.0), "finite and > 0"),
        (("BTC", T0, True), "finite and > 0"),
        (("BTC", -1, 1.0), "ts_event_ns is -1"),
        (("BTC", 1.5, 1.0), "must be an int"),
    ],
)
def test_add_tick_errors(args: tuple[object, ...], match: str) -> None:
    b = BarBuilder(["BTC"], 60)
    with pytest.raises(InvalidInputError, match=match):
        b.add_tick(*args)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="ts_recv_ns"):
        b.add_tick("BTC", T0, 1.0, ts_recv_ns=-5)
    with pytest.raises(InvalidInputError, match="now_ns"):
        b.advance(-1)
    assert b.stats().ticks_total == 0  # rejected ticks leave no trace
