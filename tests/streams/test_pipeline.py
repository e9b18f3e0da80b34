"""The worker's processing without Kafka: scenario ticks → bars → cross-sections → signals.

The faust agents only decode, call Pipeline and send; this proves the composition: the
co-selling flag rises inside the labelled fire sale, never in calm, and every record
published is a valid event of its topic.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from connectors.scenario import ScenarioParams, generate, phase_schedule
from streams.assembly import BarAssembler
from streams.config import load_universe
from streams.events import BarEvent, GapMarker, Liquidation, PriceTick, SignalEvent, decode
from streams.events import Funding as FundingEvent
from streams.metrics import PipelineMetrics
from streams.pipeline import Pipeline

T0 = 1_762_214_400_000_000_000  # 2025-11-04T00:00:00Z
BAR_S = 300


def _run(pipe: Pipeline, ticks: list[object]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for tick in ticks:
        ts = tick.ts_event_ns  # type: ignore[attr-defined]
        if isinstance(tick, PriceTick):
            produced = pipe.on_price(tick, ts)
        elif isinstance(tick, Liquidation):
            produced = pipe.on_liquidation(tick, ts)
        else:
            assert isinstance(tick, FundingEvent)
            produced = pipe.on_funding(tick, ts)
        for rec in produced:
            out.append((rec.topic, rec.value))
            if rec.topic == "bars.v1":  # the market agent reads bars.v1 back
                out.extend((r.topic, r.value) for r in pipe.on_bar(decode(BarEvent, rec.value), ts))
    return out


@pytest.mark.slow
def test_scenario_fire_sale_is_flagged_inside_the_labelled_phase() -> None:
    universe = load_universe(None)
    params = ScenarioParams.preset("fire-sale", mark_interval_s=10, trade_rate_scale=0.1)
    schedule = phase_schedule(params, T0)
    ticks = [t.event for t in generate(params, universe.assets, T0, seed=3)]
    metrics = PipelineMetrics.create(CollectorRegistry())
    pipe = Pipeline(universe, BAR_S, metrics)
    out = _run(pipe, ticks)

    by_topic = Counter(topic for topic, _ in out)
    bars = [decode(BarEvent, v) for t, v in out if t == "bars.v1"]
    records = [decode(SignalEvent, v) for t, v in out if t.startswith("signals.")]
    assert {b.asset for b in bars} == set(universe.names)
    n_bars = int(params.duration_s // BAR_S)
    assert by_topic["signals.correlation.v1"] >= n_bars - 3  # every bar but the last open ones
    starts = [r for r in records if r.type == "cosell.start"]
    assert starts, "no cosell.start in a fire-sale scenario"
    for start in starts:
        assert schedule.phase_at(start.ts_event_ns) != "calm", start
    onset = next(i.start_ns for i in schedule.intervals if i.phase == "fire_sale")
    delay_bars = (starts[0].ts_event_ns - onset) // (BAR_S * 10**9)
    assert 0 <= delay_bars <= 6
    ends = [r for r in records if r.type == "cosell.end"]
    assert ends
    assert ends[0].ts_event_ns > starts[0].ts_event_ns
    assert any(r.type.startswith("liquidation.cascade.start") for r in records)
    assert any(r.type.startswith("funding.") for r in records)
    # deterministic ids: a second run over the same input publishes the same ids
    again = _run(Pipeline(universe, BAR_S, PipelineMetrics.create(CollectorRegistry())), ticks)
    ids = [decode(SignalEvent, v).id for t, v in out if t.startswith("signals.")]
    assert ids == [decode(SignalEvent, v).id for t, v in again if t.startswith("signals.")]
    assert metrics.bars._value.get() == by_topic["signals.correlation.v1"]


def test_gap_marks_overlapping_bars_stale() -> None:
    universe = load_universe(None)
    pipe = Pipeline(universe, 60, PipelineMetrics.create(CollectorRegistry()))
    base = {"asset_class": "crypto", "kind": "mark", "venue": "binance", "symbol": "BTCUSDT"}
    s = 10**9
    pipe.on_gap(
        GapMarker(
            venue="binance",
            channel="markPrice",
            from_ns=T0 + 70 * s,
            to_ns=T0 + 100 * s,
            reason="disconnect",
            ts_recv_ns=T0 + 100 * s,
        )
    )
    out = []
    for sec, price in [(1, 100.0), (61, 101.0), (130, 102.0), (190, 103.0)]:
        tick = PriceTick(
            asset="BTC", ts_event_ns=T0 + sec * s, ts_recv_ns=T0 + sec * s, price=price, **base
        )  # type: ignore[arg-type]
        out += [decode(BarEvent, r.value) for r in pipe.on_price(tick, T0 + sec * s)]
    assert [(b.bar_start_ns - T0) // s for b in out] == [0, 60, 120]
    # every bar had a tick, but 60..120 overlaps the gap: its return must not be trusted
    assert [b.stale for b in out] == [False, True, False]
    assert [b.n_ticks for b in out] == [1, 1, 1]


def test_assembler_releases_overdue_bars_with_nan_for_missing_assets() -> None:
    asm = BarAssembler(["BTC", "ETH"], 60, max_wait_bars=2, silent_after_bars=3)
    m = 60 * 10**9
    assert asm.add("BTC", 0, 1.0, stale=False) == []
    assert asm.add("ETH", 0, 2.0, stale=False) == []  # the first bar waits until overdue
    assert asm.add("BTC", m, 1.1, stale=False) == []
    first = asm.add("BTC", 2 * m, 1.2, stale=False)
    assert [t for t, _ in first] == [0]
    assert list(first[0][1]) == [1.0, 2.0]
    released = asm.add("BTC", 3 * m, 1.3, stale=False)  # ETH silent: bar 1 is now overdue
    assert [t for t, _ in released] == [m]
    assert released[0][1][0] == 1.1
    assert np.isnan(released[0][1][1])
    assert asm.add("ETH", m, 2.1, stale=False) == []  # too late: counted, not merged
    assert asm.late_bars == 1
    assert [t for t, _ in asm.add("BTC", 4 * m, 1.4, stale=False)] == [2 * m]  # overdue
    # bar 3 is overdue too; from bar 4 on ETH counts as silent (no bar for 3 bars), so BTC
    # alone completes bars 4 and 5 without waiting
    assert [t for t, _ in asm.add("BTC", 5 * m, 1.5, stale=False)] == [3 * m, 4 * m, 5 * m]
    assert asm.add("BTC", 5 * m, 1.5, stale=False) == []
    assert asm.duplicates == 0  # bar 5 was already released: late, not a pending duplicate
    assert asm.late_bars == 2


def test_event_time_leap_restarts_the_grid_instead_of_flooding_stale_bars() -> None:
    universe = load_universe(None)
    metrics = PipelineMetrics.create(CollectorRegistry())
    pipe = Pipeline(universe, 60, metrics, max_jump_s=3600)
    s = 10**9
    base = {"asset_class": "crypto", "kind": "mark", "venue": "binance", "symbol": "BTCUSDT"}

    def tick(ts_ns: int, price: float) -> PriceTick:
        return PriceTick(asset="BTC", ts_event_ns=ts_ns, ts_recv_ns=ts_ns, price=price, **base)  # type: ignore[arg-type]

    assert pipe.on_price(tick(T0, 100.0), T0) == []
    year_later = T0 + 365 * 86_400 * s
    bars = pipe.on_price(tick(year_later, 50.0), T0 + s)
    assert bars == []  # not 525,600 stale bars
    assert metrics.time_jumps._value.get() == 1
    closed = [
        decode(BarEvent, r.value)
        for r in pipe.on_price(tick(year_later + 65 * s, 51.0), T0 + 2 * s)
    ]
    assert [(b.bar_start_ns, b.close, b.stale) for b in closed] == [(year_later, 50.0, False)]
