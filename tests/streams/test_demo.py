"""`firesale demo`: the view fed with real encoded events, and the command end to end."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

from connectors.scenario import ScenarioParams, phase_schedule
from deploy.kafka import broker
from signals.detector import DetectorParams, MarketDetector
from signals.liquidations import LiquidationCascadeDetector, LiquidationParams
from streams.demo import DemoView, format_price
from streams.events import BarEvent, SignalEvent, decode, encode
from streams.signal_events import bar_signal_events, cascade_event, topic_for
from streams.tail import format_time_ns

T0 = 1_762_214_400_000_000_000  # 2025-11-04T00:00:00Z
BAR_NS = 300_000_000_000
ASSETS = [("BTC", "crypto"), ("ETH", "crypto"), ("SOL", "crypto"), ("XRP", "crypto"),
          ("GOLD", "metal"), ("SPX", "equity"), ("NDX", "equity")]  # fmt: skip
START_PRICES = [110_000.0, 3_900.0, 190.0, 2.5, 4_000.0, 680.0, 620.0]


def _text(view: DemoView) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(view.render())
    return console.export_text()


def _row(text: str, first_cell: str) -> str:
    """The table row whose first cell is ``first_cell``, from that cell on (tables sit side by
    side, so a line can hold a row of each)."""
    pattern = re.compile(rf"│ {re.escape(first_cell)}\s+│")
    (row,) = [ln[m.start() :] for ln in text.splitlines() if (m := pattern.search(ln))]
    return row


def _market(n_bars: int, crash_from: int = 300) -> tuple[list[BarEvent], list[SignalEvent]]:
    """Bars of 7 assets (calm noise, then 12 bars falling 1 % each together) and everything a
    real MarketDetector publishes for them, in the order a worker emits them."""
    det = MarketDetector([a for a, _ in ASSETS], [c for _, c in ASSETS], 300,
                         DetectorParams.for_bar_interval(300))  # fmt: skip
    rng = np.random.default_rng(7)
    prices = np.array(START_PRICES)
    bars: list[BarEvent] = []
    signals: list[SignalEvent] = []
    for t in range(n_bars):
        drift = -0.01 if crash_from <= t < crash_from + 12 else 0.0
        prices = prices * np.exp(drift + rng.normal(0, 0.002, len(ASSETS)))
        start = T0 + t * BAR_NS
        bars += [BarEvent(asset=a, asset_class=c, bar_start_ns=start, interval_s=300,
                          close=float(p), n_ticks=30, stale=False)
                 for (a, c), p in zip(ASSETS, prices, strict=True)]  # fmt: skip
        signals += bar_signal_events(det.on_bar(start, prices), start + BAR_NS + 10**9)
    return bars, signals


def _fed(n_bars: int) -> tuple[DemoView, list[BarEvent], list[SignalEvent]]:
    bars, signals = _market(n_bars)
    view = DemoView(ASSETS, theta_on=0.65, theta_off=0.4)
    by_start: dict[int, list[SignalEvent]] = {}
    for s in signals:
        by_start.setdefault(s.ts_event_ns, []).append(s)
    for i, bar in enumerate(bars):
        view.feed("bars.v1", encode(bar))
        if i % len(ASSETS) == len(ASSETS) - 1:  # the bar is complete: its signals follow
            for s in by_start.get(bar.bar_start_ns, []):
                view.feed(topic_for(s), encode(s))
    return view, bars, signals


def test_view_shows_closes_class_pairs_score_and_the_cosell_start() -> None:
    view, bars, signals = _fed(304)  # the flag starts at bar 302 (2025-11-05T01:10Z)
    text = _text(view)

    last = {b.asset: b for b in bars[-len(ASSETS) :]}
    prev = {b.asset: b for b in bars[-2 * len(ASSETS) : -len(ASSETS)]}
    for asset, cls in ASSETS:
        close = last[asset].close
        cells = [c.strip() for c in _row(text, asset).split("│")[1:-1]]
        change = f"{(close / prev[asset].close - 1) * 100:+.2f} %"
        assert cells[:5] == [asset, cls, format_price(close), change, cells[4]], cells
        assert cells[5] == "01:15"  # the bar's start, UTC
    assert format_price(last["BTC"].close) == f"{last['BTC'].close:,.2f}"
    assert format_price(last["XRP"].close) == f"{last['XRP'].close:.4f}"

    record = [s for s in signals if s.type == "correlation.bar"][-1]
    assert record.ts_event_ns == T0 + 303 * BAR_NS
    pairs = record.data["corr_by_class_pair"]
    assert set(pairs) == {"crypto-crypto", "crypto-equity", "crypto-metal", "equity-equity",
                          "equity-metal", "metal-metal"}  # fmt: skip
    for pair, value in pairs.items():
        shown = "—" if value is None else f"{value:.3f}"
        assert _row(text, pair).split("│")[2].strip() == shown
    assert pairs["metal-metal"] is None  # one metal: no pair, shown as a dash
    assert _row(text, "average").split("│")[2].strip() == f"{record.data['corr_avg']:.3f}"
    absorption = _row(text, "absorption ratio").split("│")[2].strip()
    assert absorption == f"{record.data['absorption_ratio']:.3f}"

    score = record.data["score"]
    assert score >= 0.65
    assert f"score {score:.3f}  (flag on ≥ 0.65, off < 0.4)    CO-SELLING " in text
    (start,) = [s for s in signals if s.type == "cosell.start"]
    assert start.ts_event_ns == T0 + 302 * BAR_NS
    assert "cosell.start 2025-11-05T01:10:00.000Z → still on" in text
    event_line = _row(text, "2025-11-05T01:10:00.000Z")
    assert [c.strip() for c in event_line.split("│")[2:4]] == ["cosell.start", "market"]
    assert f"score {start.data['score']:.3f}" in event_line
    head = text.splitlines()[:3]
    assert head[:2] == ["firesale demo  last bar 2025-11-05T01:15:00.000Z  phase —", "scenario: —"]
    assert head[2] == f"bars {304 * 7}  correlation records 304  signal events 1  invalid records 0"
    assert view.closes() == {a: last[a].close for a, _ in ASSETS}


def test_view_follows_the_flag_to_its_end_and_keeps_the_score_history() -> None:
    view, _, signals = _fed(340)
    ends = [s for s in signals if s.type == "cosell.end"]
    assert [e.ts_event_ns for e in ends] == [T0 + 320 * BAR_NS]
    text = _text(view)
    assert "cosell.start 2025-11-05T01:10:00.000Z → cosell.end 2025-11-05T02:40:00.000Z" in text
    assert " no flag " in text
    assert "CO-SELLING" not in text
    scores = [s.data["score"] for s in signals if s.type == "correlation.bar"][-72:]
    assert list(view.scores) == scores
    spark = next(ln for ln in text.splitlines() if ln.startswith("│ score     "))
    assert spark[12 : 12 + 72].count("█") == sum(1 for s in scores if s is not None and s >= 7 / 8)
    assert view.flag_marks() == [("cosell.start", T0 + 302 * BAR_NS),
                                 ("cosell.end", T0 + 320 * BAR_NS)]  # fmt: skip
    summary = view.summary_lines()
    assert summary[2].endswith(
        "flags: cosell.start 2025-11-05T01:10:00.000Z → cosell.end 2025-11-05T02:40:00.000Z"
    )


def test_invalid_records_are_counted_and_shown_never_raised() -> None:
    view = DemoView(ASSETS)
    good = BarEvent(asset="ETH", asset_class="crypto", bar_start_ns=T0, interval_s=300,
                    close=3_901.25, n_ticks=4, stale=False)  # fmt: skip
    record = SignalEvent(id="correlation.bar:1", type="correlation.bar", ts_event_ns=T0,
                         ts_emit_ns=T0, subject="market", data={"corr_avg": "high"})  # fmt: skip
    unknown = SignalEvent(id="x:1", type="weather.rain", ts_event_ns=T0, ts_emit_ns=T0,
                          subject="market", data={})  # fmt: skip
    view.feed("bars.v1", b"{not json")
    view.feed("bars.v1", None)
    view.feed("bars.v1", encode(good).replace(b'"close":3901.25,', b""))
    view.feed("signals.correlation.v1", encode(record))
    view.feed("signals.cosell.v1", encode(unknown))
    view.feed("ticks.price.v1", encode(good))
    assert (view.invalid, view.bars, view.records, view.signals) == (6, 0, 0, 0)
    view.feed("bars.v1", encode(good))
    view.feed("bars.v1", encode(good))  # redelivered: shown once
    assert (view.bars, view.duplicates, view.closes()) == (1, 1, {"ETH": 3901.25})
    text = _text(view)
    assert "invalid records 6 (last: ticks.price.v1: not a topic the demo shows)" in text
    assert _row(text, "ETH").split("│")[3].strip() == "3,901.25"
    assert _row(text, "BTC").split("│")[3].strip() == "—"


def test_a_liquidation_cascade_shows_its_start_and_newest_peak_once_each() -> None:
    det = LiquidationCascadeDetector(LiquidationParams(min_baseline_windows=1))
    det.advance(T0)
    found = []
    for i, notional in enumerate([1e6, 2e6, 4e6, 8e6]):
        found += det.update(T0 + BAR_NS + i * 10**9, "ETH", "long", notional, complete=False)
    events = [cascade_event(e, T0 + BAR_NS + 5 * 10**9) for e in found]
    assert [e.type for e in events] == ["liquidation.cascade.start"] + 3 * [
        "liquidation.cascade.peak"
    ]
    view = DemoView(ASSETS)
    for ev in [*events, events[1]]:  # the last one redelivered
        view.feed(topic_for(ev), encode(ev))
    assert (view.signals, view.duplicates) == (4, 1)
    text = _text(view)
    start = _row(text, "2025-11-04T00:05:00.000Z")
    assert [c.strip() for c in start.split("│")[2:5]] == [
        "liquidation.cascade.start", "ETH:long", "$1.0M in window  z 100.0"
    ]  # fmt: skip
    peak = _row(text, "2025-11-04T00:05:03.000Z")
    assert [c.strip() for c in peak.split("│")[2:5]] == [
        "liquidation.cascade.peak", "ETH:long", "$15.0M in window  z 1500.0"
    ]  # fmt: skip
    assert text.count("liquidation.cascade.peak") == 1


def test_phase_of_the_latest_bar_comes_from_the_schedule() -> None:
    schedule = phase_schedule(ScenarioParams.preset("fire-sale"), T0)
    view = DemoView(ASSETS, schedule)
    fire = T0 + 26 * 3_600_000_000_000 + 30 * 60_000_000_000  # 30 min into the fire sale
    bar = BarEvent(asset="SOL", asset_class="crypto", bar_start_ns=fire, interval_s=300,
                   close=171.5, n_ticks=9, stale=True)  # fmt: skip
    view.feed("bars.v1", encode(bar))
    assert view.phase == "fire_sale"
    text = _text(view)
    assert "last bar 2025-11-05T02:30:00.000Z  phase fire_sale" in text
    assert text.splitlines()[1] == (
        "scenario:  calm 2025-11-04T00:00Z → ▶fire_sale 2025-11-05T02:00Z →  recovery "
        "2025-11-05T04:00Z → end 2025-11-05T10:00Z"
    )
    assert "171.50 stale" in _row(text, "SOL")


# ---------------------------------------------------------------------- end to end


async def _ends(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.subscribe(topics)
        while {tp.topic for tp in consumer.assignment()} != set(topics):
            await asyncio.sleep(0.05)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(consumer.assignment()))
        return ends
    finally:
        await consumer.stop()


async def _read(bootstrap: str, start: dict[TopicPartition, int],
                end: dict[TopicPartition, int]) -> dict[str, list[Any]]:  # fmt: skip
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    out: dict[str, list[Any]] = {tp.topic: [] for tp in start}
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        left = sum(end[tp] - start[tp] for tp in start)
        while left > 0:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                mine = [r for r in records if r.offset < end[tp]]
                out[tp.topic] += mine
                left -= len(mine)
    finally:
        await consumer.stop()
    return out


@pytest.mark.kafka
async def test_demo_command_shows_the_pipeline_output_and_the_flag(tmp_path: Path) -> None:
    # A broker of its own: the session broker's ticks.* hold other tests' scenario ticks, whose
    # event times run hours ahead; a new consumer group reads them first and drops ours as late.
    info = broker.start(tmp_path / "kafka", None, detach=False)
    try:
        await _demo_run(info.bootstrap, tmp_path)
    finally:
        broker.stop(tmp_path / "kafka")


async def _demo_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = ["bars.v1", "signals.correlation.v1", "signals.cosell.v1"]
    subprocess.run([sys.executable, "-m", "streams", "topics", "create", "--bootstrap",
                    kafka_bootstrap], check=True, capture_output=True)  # fmt: skip
    before = await _ends(kafka_bootstrap, topics)
    env = {**os.environ, "FIRESALE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "FIRESALE_APP_ID": f"demo-test-{time.time_ns()}", "FIRESALE_METRICS_PORT": "0",
           "FIRESALE_BAR_INTERVAL_S": "300"}  # fmt: skip
    out_path = tmp_path / "demo.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "demo", "--no-live", "--speed", "1500",
         "--seconds", "240"],
        env=env, stdout=out_path.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:  # stopped with SIGTERM once the flag is up, as Ctrl-C would
        deadline = time.monotonic() + 180
        while not re.search(r"cosell\.start \S+: seen", out_path.read_text()):
            assert proc.poll() is None, out_path.read_text()[-3000:]
            assert time.monotonic() < deadline, out_path.read_text()[-3000:]
            await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    out = out_path.read_text()
    assert code == 0, out[-3000:]
    assert "stream worker stopped (exit 0)" in out
    got = await _read(kafka_bootstrap, before, await _ends(kafka_bootstrap, topics))

    bars = [decode(BarEvent, r.value) for r in got["bars.v1"]]
    newest: dict[str, BarEvent] = {}
    for b in bars:
        if b.asset not in newest or b.bar_start_ns > newest[b.asset].bar_start_ns:
            newest[b.asset] = b
    assert set(newest) == {a for a, _ in ASSETS}
    closes_line = next(ln for ln in out.splitlines() if ln.startswith("last closes"))
    for asset, _ in ASSETS:
        assert f" {asset} {format_price(newest[asset].close)} (" in closes_line, closes_line

    records = [decode(SignalEvent, r.value) for r in got["signals.correlation.v1"]]
    last = max(records, key=lambda r: r.ts_event_ns)
    assert last.data["score"] is not None
    assert f"co-selling score {last.data['score']:.3f};" in out

    (start,) = {e.ts_event_ns for r in got["signals.cosell.v1"]
                if (e := decode(SignalEvent, r.value)).type == "cosell.start"}  # fmt: skip
    assert f"flags: cosell.start {format_time_ns(start)} → " in out
    fire = re.search(r"scenario phase fire_sale: (\S+) → (\S+)", out)
    assert fire is not None
    onset, end = (datetime.fromisoformat(x).timestamp() * 1e9 for x in fire.groups())
    assert onset <= start < end  # raised inside the labelled fire sale
