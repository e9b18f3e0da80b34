"""The pipeline benchmark: its ticks close the bars it expects, its checker catches wrong bars,
and a tiny run on a real broker with real worker processes delivers exactly those bars and
sane figures. No timing thresholds beyond positivity and order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.pipeline import (
    NS,
    T0_NS,
    BenchError,
    TickPlan,
    check_outputs,
    plan_ticks,
    primaries,
    print_table,
    run_bench,
    run_pipeline,
)
from deploy.kafka import broker
from streams.config import load_universe
from streams.events import BarEvent, PriceTick, decode
from streams.topics import ensure_topics

SOURCES = primaries(load_universe(None))


def test_primaries_are_the_first_listed_venue_of_each_asset() -> None:
    keys = {s.asset: s.key.decode() for s in SOURCES}
    assert keys == {
        "BTC": "binance:BTCUSDT",
        "ETH": "binance:ETHUSDT",
        "SOL": "binance:SOLUSDT",
        "XRP": "binance:XRPUSDT",
        "GOLD": "binance:XAUUSDT",
        "SPX": "bybit:SPYUSDT",
        "NDX": "bybit:QQQUSDT",
    }


def test_plan_closes_are_the_last_tick_of_each_bar() -> None:
    plan = plan_ticks(SOURCES, 1_300)
    assert plan.n_bars == 3
    assert plan.n_ticks == 7 * (3 * 60 + 3)  # 3 bars, then grace (2 s) + 1 s to close the last
    last: dict[tuple[str, int], tuple[int, float]] = {}
    counts: dict[tuple[str, int], int] = {}
    for key, value in plan.messages:
        tick = decode(PriceTick, value)
        assert key == f"{tick.venue}:{tick.symbol}".encode()
        bar = (tick.ts_event_ns - T0_NS) // (60 * NS)
        counts[tick.asset, bar] = counts.get((tick.asset, bar), 0) + 1
        if tick.ts_event_ns >= last.get((tick.asset, bar), (-1, 0.0))[0]:
            last[tick.asset, bar] = (tick.ts_event_ns, tick.price)
    for s in SOURCES:
        assert plan.closes[s.asset] == [last[s.asset, k][1] for k in range(3)]
        assert [counts[s.asset, k] for k in range(3)] == [60, 60, 60]
        assert counts[s.asset, 3] == 3  # the open bar: never expected
    assert sorted({start for _, start in plan.expected_bars}) == [
        T0_NS,
        T0_NS + 60 * NS,
        T0_NS + 120 * NS,
    ]
    assert plan.expected_ids[1] == f"correlation.bar:{T0_NS + 60 * NS}"


def test_check_outputs_names_wrong_missing_stale_and_unexpected_bars() -> None:
    plan = plan_ticks(SOURCES, 1_300)
    bars = {
        (asset, start): BarEvent(
            asset=asset,
            asset_class=next(s.asset_class for s in SOURCES if s.asset == asset),
            bar_start_ns=start,
            interval_s=60,
            close=close,
            n_ticks=60,
            stale=False,
        )
        for (asset, start), close in plan.expected_bars.items()
    }
    problems = check_outputs(plan, bars, {})
    assert problems == [f"missing correlation record {i}" for i in plan.expected_ids]
    wrong = dict(bars)
    btc = ("BTC", T0_NS + 60 * NS)
    wrong[btc] = _with(bars[btc], close=1.0)
    del wrong["ETH", T0_NS]
    gold = ("GOLD", T0_NS + 120 * NS)
    wrong[gold] = _with(bars[gold], stale=True)
    # The open bar after the input, closed by the idle timeout once a worker runs dry: ignored.
    wrong["SOL", T0_NS + 180 * NS] = _with(bars["SOL", T0_NS], bar_start_ns=T0_NS + 180 * NS)
    wrong["XRP", T0_NS - 60 * NS] = _with(bars["XRP", T0_NS], bar_start_ns=T0_NS - 60 * NS)
    problems = check_outputs(plan, wrong, {})[: -len(plan.expected_ids)]
    assert problems == [
        f"missing bar ('ETH', {T0_NS})",
        f"bar ('BTC', {btc[1]}): close 1.0 n_ticks 60 stale False interval 60 "
        f"(expected close {plan.closes['BTC'][1]} n_ticks 60 stale False)",
        f"bar ('GOLD', {gold[1]}): close {plan.closes['GOLD'][2]} n_ticks 60 stale True "
        f"interval 60 (expected close {plan.closes['GOLD'][2]} n_ticks 60 stale False)",
        f"bar ('XRP', {T0_NS - 60 * NS}): close {plan.closes['XRP'][0]} n_ticks 60 stale False "
        f"interval 60 (expected close None n_ticks 60 stale False)",
    ]


def _with(bar: BarEvent, **changes: object) -> BarEvent:
    fields = {name: getattr(bar, name) for name in BarEvent.__dataclass_fields__}
    return BarEvent(**(fields | changes))


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker.BrokerInfo]:
    """A broker of its own: the benchmark truncates ticks.price.v1 and bars.v1, which would
    disturb anyone else's test on a shared broker (and their ticks would reach our worker)."""
    home = tmp_path_factory.mktemp("bench-kafka")
    info = broker.start(home, None, detach=False)
    try:
        yield info
    finally:
        broker.stop(home)


@pytest.mark.kafka
async def test_quick_run_delivers_exactly_the_planned_bars(
    own_broker: broker.BrokerInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n_ticks, latency_s = 1_300, 6.0
    res = await run_bench(own_broker.bootstrap, n_ticks, latency_s, tmp_path, own_broker.pid)
    plan = plan_ticks(SOURCES, n_ticks)  # the same, deterministic, plan
    starts = [T0_NS, T0_NS + 60 * NS, T0_NS + 120 * NS]
    assert set(res.pipeline) == {1, 2}
    for n, [run] in res.pipeline.items():
        # Two workers run apart on a backlog; the market stage waits for every asset's bar,
        # so the returns must be exact with two workers as with one.
        assert run.problems == [], n
        assert run.duplicates == 0
        assert {key: bar.close for key, bar in run.bars.items()} == plan.expected_bars
        assert {(b.n_ticks, b.stale, b.interval_s) for b in run.bars.values()} == {(60, False, 60)}
        assert sorted({start for _, start in run.bars}) == starts
        assert sorted(run.records) == [f"correlation.bar:{s}" for s in starts]
        second = run.records[f"correlation.bar:{starts[1]}"].data["returns"]
        assert second["BTC"] == pytest.approx(
            math.log(plan.closes["BTC"][1] / plan.closes["BTC"][0]), abs=1e-12
        )
        assert len(run.assignment) == n
        assert run.n_ticks == plan.n_ticks == 1_281
        assert run.wall_s > 0
        assert run.ticks_per_s > 0
        assert run.worker_cpu_s > 0
        assert run.produced.n == plan.n_ticks
        produced_keys = sorted(k for keys in run.produced.keys.values() for k in keys)
        assert produced_keys == sorted(s.key.decode() for s in SOURCES)
    assert [r.n_ticks for r in res.raw] == [1_281, 1_281]
    assert all(r.ticks_per_s > 0 and r.cpu_s >= 0 for r in res.raw)

    assert res.raw_latency is not None
    assert len(res.raw_latency.samples_ns) == 7 * 5 * 3  # 7 assets x 5 Hz x latency_s / 2
    assert 0 < res.raw_latency.p50_ms <= res.raw_latency.p99_ms
    lat = res.latency
    assert lat is not None
    assert lat.bar_starts, "no correlation record measured"
    assert all(s % NS == 0 for s in lat.bar_starts)  # 1 s bars on the grid
    assert lat.bar_starts[0] >= lat.instants[0] // NS * NS + 3 * NS  # first 3 bars left out
    assert lat.bar_starts[-1] + NS + 200_000_000 <= lat.instants[-1]  # closed by a real tick
    for tick, end in zip(
        lat.tick_to_signal.samples_ns, lat.bar_end_to_signal.samples_ns, strict=True
    ):
        assert 0 < tick <= end  # the closing tick is sent at or after bar end + grace
    assert 0 < lat.tick_to_signal.p50_ms <= lat.tick_to_signal.p99_ms

    ratios = print_table(res)
    out = capsys.readouterr().out
    assert ratios["pipeline/raw"] == pytest.approx(res.ticks_per_s(1) / res.ticks_per_s(0))
    assert f"= {ratios['pipeline/raw']:.3f} x the raw" in out
    assert f"= {ratios['2 workers/1']:.2f} x 1 worker" in out
    assert "PROBLEM" not in out


@pytest.mark.kafka
async def test_a_wrong_expectation_is_an_error_not_a_figure(
    own_broker: broker.BrokerInfo, tmp_path: Path
) -> None:
    await ensure_topics(own_broker.bootstrap)
    plan = plan_ticks(SOURCES, 1_300)
    # Ask for a 4th bar the ticks cannot close: the run must fail and say what arrived.
    closes = {a: [*c, 1.0] for a, c in plan.closes.items()}
    greedy = TickPlan(plan.sources, 60, plan.grace_s, 4, plan.messages, closes)
    with pytest.raises(BenchError, match=r"21/28 bars and 3/4 correlation records"):
        await run_pipeline(own_broker.bootstrap, greedy, 1, tmp_path, timeout_s=5.0)
