"""The worker's processing without Kafka: scenario ticks → bars → cross-sections → signals.

The faust agents only decode, call Pipeline and send; this proves the composition: the
co-selling flag rises inside the labelled fire sale, never in calm, and every record
published is a valid event of its topic.
"""

from __future__ import annotations

import math
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
        assert isinstance(tick, PriceTick | Liquidation | FundingEvent)
        out.extend((rec.topic, rec.value) for rec in pipe.feed(tick, tick.ts_event_ns))
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
    # episode gauges follow the last start/end of each cascade subject
    last: dict[str, str] = {}
    for r in records:
        if r.type.startswith("liquidation.cascade.") and not r.type.endswith(".peak"):
            last[r.subject] = r.type
    assert last
    for subject, kind in last.items():
        asset, side = subject.split(":")
        gauge = metrics.cascade_active.labels(asset, side)._value.get()
        assert gauge == (1.0 if kind.endswith(".start") else 0.0), subject


def test_gap_makes_the_venues_assets_missing_in_overlapping_bars() -> None:
    """A gap marker of binance (BTC's primary venue) blanks BTC in the bars it overlaps.

    The bar itself had a tick, so ``bars.v1`` carries it as fresh; the market stage must
    still not compute a return into or out of it: returns 60..120 and 120..180 are None.
    """
    universe = load_universe(None)
    pipe = Pipeline(universe, 60, PipelineMetrics.create(CollectorRegistry()))
    base = {"asset_class": "crypto", "kind": "mark", "venue": "binance", "symbol": "BTCUSDT"}
    s = 10**9
    gap = GapMarker(
        venue="binance",
        channel="markPrice",
        from_ns=T0 + 70 * s,
        to_ns=T0 + 100 * s,
        reason="disconnect",
        ts_recv_ns=T0 + 100 * s,
    )
    assert pipe.on_gap(gap, T0) == []
    bars: list[BarEvent] = []
    records: list[SignalEvent] = []
    for sec, price in [(1, 100.0), (61, 101.0), (130, 102.0), (190, 103.0), (250, 104.0)]:
        tick = PriceTick(
            asset="BTC", ts_event_ns=T0 + sec * s, ts_recv_ns=T0 + sec * s, price=price, **base
        )  # type: ignore[arg-type]
        for rec in pipe.on_price(tick, T0 + sec * s):
            bar = decode(BarEvent, rec.value)
            bars.append(bar)
            out = pipe.on_bar(bar, T0 + sec * s)
            # the other six universe assets never report: the first bar waits 10 s for them
            out += pipe.market.tick(T0 + (sec + 11) * s)
            records += [decode(SignalEvent, r.value) for r in out if r.topic.startswith("signals.")]
    assert [((b.bar_start_ns - T0) // s, b.close, b.stale) for b in bars] == [
        (0, 100.0, False),
        (60, 101.0, False),
        (120, 102.0, False),
        (180, 103.0, False),
    ]
    by_bar = {(r.ts_event_ns - T0) // s: r.data["returns"]["BTC"] for r in records}  # type: ignore[index]
    assert by_bar[0] is None  # first bar: no previous close
    assert by_bar[60] is None  # overlaps the gap
    assert by_bar[120] is None  # previous bar was blanked: no return across the gap
    assert by_bar[180] == pytest.approx(math.log(103.0 / 102.0), rel=1e-12)


def test_assembler_waits_for_every_expected_asset_and_expires_a_silent_one() -> None:
    asm = BarAssembler(["BTC", "ETH"], 60, max_wait_s=1.0, dropout_wait_s=5.0)
    m, s = 60 * 10**9, 10**9
    # BTC's bar builder races ahead (a backlog): nothing is released without ETH
    for k in range(4):
        assert asm.add("BTC", k * m, 1.0 + k, stale=False, now_ns=0) == []
    first = asm.add("ETH", 0, 2.0, stale=False, now_ns=s)
    assert [(t, c.tolist()) for t, c in first] == [(0, [1.0, 2.0])]
    both = asm.add("ETH", m, 2.1, stale=True, now_ns=s)  # stale: NaN, but it reported
    assert [t for t, _ in both] == [m]
    assert both[0][1][0] == 2.0
    assert np.isnan(both[0][1][1])
    assert asm.expire(5 * s) == []  # bar 2 has waited 4 s
    expired = asm.expire(6 * s)  # 5 s: ETH's worker is gone, ETH is declared absent
    assert [t for t, _ in expired] == [2 * m, 3 * m]
    assert expired[0][1][0] == 3.0
    assert np.isnan(expired[0][1][1])
    assert asm.absent == {"ETH"}
    assert asm.expired == 1
    assert [t for t, _ in asm.add("BTC", 4 * m, 5.0, stale=False, now_ns=7 * s)] == [4 * m]
    assert asm.add("ETH", 2 * m, 2.2, stale=False, now_ns=7 * s) == []  # late: dropped
    assert asm.late_bars == 1
    assert asm.absent == set()
    assert asm.add("BTC", 5 * m, 6.0, stale=False, now_ns=8 * s) == []  # waits for ETH now
    assert [t for t, _ in asm.add("ETH", 5 * m, 2.5, stale=False, now_ns=8 * s)] == [5 * m]
    assert asm.add("ETH", 5 * m, 2.5, stale=False, now_ns=8 * s) == []
    assert asm.duplicates == 0
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


def test_tick_stamped_in_the_future_is_counted_and_cannot_move_the_watermark() -> None:
    """Clock skew: a venue stamping minutes ahead must not make the honest ticks late."""
    universe = load_universe(None)
    metrics = PipelineMetrics.create(CollectorRegistry())
    pipe = Pipeline(universe, 60, metrics)
    s = 10**9
    base = {"asset_class": "crypto", "kind": "mark", "venue": "binance", "symbol": "BTCUSDT"}

    def tick(event_s: float, recv_s: float, price: float) -> PriceTick:
        return PriceTick(asset="BTC", ts_event_ns=T0 + int(event_s * s),
                         ts_recv_ns=T0 + int(recv_s * s), price=price, **base)  # type: ignore[arg-type]  # fmt: skip

    assert pipe.on_price(tick(1, 1, 100.0), T0 + s) == []
    assert pipe.on_price(tick(301, 2, 999.0), T0 + 2 * s) == []  # 5 min ahead of its receipt
    assert pipe.on_price(tick(6, 3, 101.0), T0 + 3 * s) == []  # 3 s ahead: within tolerance
    closed = [decode(BarEvent, r.value) for r in pipe.on_price(tick(63, 63, 102.0), T0 + 63 * s)]
    assert [(b.bar_start_ns - T0, b.close, b.n_ticks) for b in closed] == [(0, 101.0, 2)]
    assert metrics.early_ticks.labels("BTC")._value.get() == 1
    assert metrics.late_ticks.labels("BTC")._value.get() == 0


def test_idle_timeout_is_held_while_the_broker_does_not_answer_fetches() -> None:
    """Silence with the broker away is not idleness: the ticks wait in the connectors' buffer.

    One BTC tick at 30 s into a 60 s bar; 25 s of silence later the idle timeout (10 s) would
    move event time to 30 + 25 − 2 = 53 s: not yet the bar's end. At 40 s of silence it would
    close bar [0, 60) — unless the partition's fetches go unanswered; then a tick at 50 s that
    was waiting in a buffer still counts.
    """
    from streams.tick_stage import TickStage

    universe = load_universe(None)
    metrics = PipelineMetrics.create(CollectorRegistry())
    s = 10**9

    def stage_with_one_tick() -> TickStage:
        stage = TickStage(universe, 60, metrics, grace_s=2.0, idle_timeout_s=10.0)
        stage.start(0)
        tick = PriceTick(
            venue="binance",
            symbol="BTCUSDT",
            asset="BTC",
            asset_class="crypto",
            ts_event_ns=30 * s,
            ts_recv_ns=30 * s,
            price=100.0,
            kind="mark",
        )
        assert stage.on_price(0, 0, tick, 30 * s) == []
        return stage

    answered = stage_with_one_tick()
    (closed,) = answered.advance(70 * s)[0]  # 40 s idle, the broker answering: a quiet market
    bar = decode(BarEvent, closed.value)
    assert (bar.asset, bar.bar_start_ns, bar.close, bar.n_ticks) == ("BTC", 0, 100.0, 1)

    held = stage_with_one_tick()
    assert held.advance(70 * s, answered=lambda partition: False) == {}
    late = PriceTick(
        venue="binance",
        symbol="BTCUSDT",
        asset="BTC",
        asset_class="crypto",
        ts_event_ns=50 * s,
        ts_recv_ns=50 * s,
        price=101.0,
        kind="mark",
    )
    assert held.on_price(0, 1, late, 71 * s) == []  # on time: the bar is still open
    (closed,) = held.advance(90 * s)[0]  # broker back, then quiet: now it closes
    bar = decode(BarEvent, closed.value)
    assert (bar.bar_start_ns, bar.close, bar.n_ticks) == (0, 101.0, 2)
    assert metrics.late_ticks.labels("BTC")._value.get() == 0
