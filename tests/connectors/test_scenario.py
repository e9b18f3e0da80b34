"""Tests of the scenario source: determinism, event validity, calm statistics against the
parameters, the fire-sale signature (drawdowns, correlations toward 1, liquidation burst, funding
flip), the co-selling detector firing on it (and never in calm), and the Kafka-facing runner."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from connectors.runner import TOPIC_OF
from connectors.scenario import (
    Phase,
    ScenarioParams,
    ScenarioTick,
    generate,
    phase_schedule,
    run_scenario,
)
from connectors.scenario.model import cme_globex_open
from signals.correlation import RollingCorrelation
from signals.cosell import CoSellDetector, CoSellParams
from signals.errors import InvalidInputError
from signals.matrix import absorption_ratio, average_correlation
from streams.config import load_universe
from streams.events import Funding, Liquidation, PriceTick, decode, encode

NS = 1_000_000_000
BAR_NS = 60 * NS
T0 = 1_762_214_400 * NS  # 2025-11-04 00:00 UTC, a Tuesday
SEED = 11
UNIVERSE = load_universe()
ASSETS = UNIVERSE.assets
NAMES = list(UNIVERSE.names)
CLASSES = [a.asset_class for a in ASSETS]
# Fewer ticks (marks every 10 s, 10 % of the trades) for speed; the dynamics are the defaults.
FAST = {"mark_interval_s": 10.0, "trade_rate_scale": 0.1}
MAX_DETECTION_DELAY_BARS = 30  # H of CoSellParams.for_bar_interval(60): half an hour

FloatArray = NDArray[np.float64]


class ListSink:
    """In-memory sink (as in test_supervisor.py) that also records when each put happened."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.put_ns: list[int] = []

    async def put(self, topic: str, key: bytes, value: bytes) -> bool:
        self.messages.append((topic, key, value))
        self.put_ns.append(time.monotonic_ns())
        return True


def round_trips(event: PriceTick | Liquidation | Funding) -> bool:
    """decode(type, encode(e)) == e, with the type spelled out for mypy."""
    if isinstance(event, PriceTick):
        return decode(PriceTick, encode(event)) == event
    if isinstance(event, Liquidation):
        return decode(Liquidation, encode(event)) == event
    return decode(Funding, encode(event)) == event


def short_params(**overrides: object) -> ScenarioParams:
    phases = (
        Phase("calm", 600),
        Phase("fire_sale", 600, 1.0, 1.0, move=1.0),
        Phase("recovery", 300, 0.5, 0.0, move=-0.4),
    )
    return ScenarioParams.preset("fire-sale", **({"phases": phases} | FAST | overrides))


def closes(ticks: list[ScenarioTick], n_bars: int, venue: str | None = None) -> FloatArray:
    """Previous-tick bar closes (n_bars, assets): last price at or before each bar's end."""
    out = np.full((n_bars, len(NAMES)), np.nan)
    ends = T0 + BAR_NS * np.arange(1, n_bars + 1)
    for j, name in enumerate(NAMES):
        ev = [t.event for t in ticks if type(t.event) is PriceTick and t.event.asset == name]
        ev = [e for e in ev if venue is None or (e.venue == venue and e.kind == "mark")]
        ts = np.array([e.ts_event_ns for e in ev], dtype=np.int64)
        px = np.array([e.price for e in ev])
        idx = np.searchsorted(ts, ends, side="left") - 1
        out[idx >= 0, j] = px[idx[idx >= 0]]
    return out


def calm_target(params: ScenarioParams) -> FloatArray:
    n = len(ASSETS)
    c = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        a, b = ASSETS[i], ASSETS[j]
        c[i, j] = c[j, i] = params.correlation(a.name, a.asset_class, b.name, b.asset_class)
    return c


def mean_pair(c: FloatArray) -> float:
    return float(c[np.triu_indices(len(c), 1)].mean())


@dataclasses.dataclass
class Market:
    params: ScenarioParams
    ticks: list[ScenarioTick]
    labels: NDArray[np.str_]  # phase of each bar (by its start)
    marks: FloatArray  # closes from Bybit marks (synchronous: every asset trades there)
    all_prices: FloatArray  # closes from every price tick, as a bar builder sees them
    liq: dict[str, FloatArray]  # notional per bar and side, all venues


@pytest.fixture(scope="module")
def market() -> Market:
    params = ScenarioParams.preset("fire-sale", **FAST)
    ticks = list(generate(params, ASSETS, T0, SEED))
    n_bars = round(params.duration_s) // 60
    sched = phase_schedule(params, T0)
    labels = np.array([sched.phase_at(T0 + k * BAR_NS) for k in range(n_bars)])
    liq = {"long": np.zeros(n_bars), "short": np.zeros(n_bars)}
    for t in ticks:
        if type(t.event) is Liquidation:
            liq[t.event.liquidated_side][(t.event.ts_event_ns - T0) // BAR_NS] += (
                t.event.notional_usd
            )
    return Market(params, ticks, labels, closes(ticks, n_bars, "bybit"), closes(ticks, n_bars),
                  liq)  # fmt: skip


# --------------------------------------------------------------------------- determinism, validity


def test_same_seed_same_events_other_seed_other_events() -> None:
    p = short_params()
    first = list(generate(p, ASSETS, T0, 5))
    assert first == list(generate(p, ASSETS, T0, np.random.default_rng(5)))
    other = list(generate(p, ASSETS, T0, 6))
    assert [t.event for t in other] != [t.event for t in first]
    assert len({type(t.event) for t in first}) == 3


def test_events_ordered_labelled_and_inside_the_schedule(market: Market) -> None:
    sched = phase_schedule(market.params, T0)
    ts = np.array([t.event.ts_event_ns for t in market.ticks], dtype=np.int64)
    assert (np.diff(ts) >= 0).all()
    assert ts[0] >= T0
    assert ts[-1] < sched.end_ns
    starts = np.array([i.start_ns for i in sched.intervals])
    expected = np.array([i.phase for i in sched.intervals])[
        np.searchsorted(starts, ts, "right") - 1
    ]
    assert (np.array([t.phase for t in market.ticks]) == expected).all()
    assert all(t.event.ts_recv_ns == t.event.ts_event_ns for t in market.ticks)


def test_events_round_trip_and_follow_the_universe(market: Market) -> None:
    for tick in market.ticks[::37]:
        assert round_trips(tick.event)
    seen = {(t.event.venue, t.event.symbol, t.event.asset, t.event.asset_class)
            for t in market.ticks}  # fmt: skip
    expected = {(v, s, a.name, a.asset_class) for a in ASSETS for v, s in a.symbols.items()
                if v in ("binance", "bybit", "okx")}  # fmt: skip
    assert seen == expected  # SPX/NDX on Bybit only; no hyperliquid


def test_liquidation_semantics(market: Market) -> None:
    liqs = [t.event for t in market.ticks if type(t.event) is Liquidation]
    for e in liqs:
        assert e.completeness == ("complete" if e.venue == "bybit" else "sampled")
        assert e.qty_base * e.price == pytest.approx(e.notional_usd, rel=1e-12)
    binance = [(e.symbol, e.ts_event_ns // NS) for e in liqs if e.venue == "binance"]
    assert len(binance) == len(set(binance))  # at most one per symbol and second
    bybit = [(e.symbol, e.ts_event_ns // NS) for e in liqs if e.venue == "bybit"]
    assert len(bybit) > len(set(bybit))  # complete feeds have several in a busy second
    onset = phase_schedule(market.params, T0).intervals[1].start_ns
    fire = [e for e in liqs if e.ts_event_ns >= onset]
    assert {e.liquidated_side for e in fire} == {"long", "short"}


def test_funding_fields(market: Market) -> None:
    funding = [t.event for t in market.ticks if type(t.event) is Funding]
    for e in funding[::11]:
        assert e.rate_annualized == pytest.approx(e.rate * 24 / e.interval_hours * 365, rel=1e-12)
        interval_ns = round(e.interval_hours * 3600 * NS)
        assert e.next_funding_ts_ns % interval_ns == 0
        assert 0 < e.next_funding_ts_ns - e.ts_event_ns <= interval_ns
        assert e.mark_price is not None
        assert e.open_interest_usd is not None
    assert {e.ts_event_ns % BAR_NS for e in funding} == {0}


def test_labels_cover_the_timeline_without_gaps() -> None:
    params = ScenarioParams.preset("fire-sale")
    sched = phase_schedule(params, T0)
    iv = sched.intervals
    assert [i.phase for i in iv] == ["calm", "fire_sale", "recovery"]
    assert iv[0].start_ns == T0
    assert iv[-1].end_ns == T0 + round(params.duration_s * NS)
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(iv))
    assert [i.end_ns - i.start_ns for i in iv] == [26 * 3600 * NS, 2 * 3600 * NS, 6 * 3600 * NS]
    assert sched.phase_at(iv[1].start_ns - 1) == "calm"
    assert sched.phase_at(iv[1].start_ns) == "fire_sale"
    assert sched.phase_at(iv[-1].end_ns - 1) == "recovery"
    for outside in (T0 - 1, iv[-1].end_ns):
        with pytest.raises(InvalidInputError, match="outside the scenario"):
            sched.phase_at(outside)


@settings(max_examples=15, deadline=None)
@given(
    durations=st.lists(st.integers(1, 400), min_size=1, max_size=3),
    names=st.lists(st.sampled_from(["calm", "fire_sale", "recovery"]), min_size=3, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    step_s=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_property_any_schedule_gives_ordered_valid_labelled_events(
    durations: list[int], names: list[str], seed: int, step_s: float
) -> None:
    phases = tuple(Phase(n, d, 1.0 if n == "fire_sale" else 0.0, 0.5, move=0.1)  # type: ignore[arg-type]
                   for n, d in zip(names, durations, strict=False))  # fmt: skip
    p = ScenarioParams(phases=phases, step_s=step_s, chunk_s=60.0, **FAST)  # type: ignore[arg-type]
    ticks = list(generate(p, ASSETS, T0 + 123_456_789, seed))
    sched = phase_schedule(p, T0 + 123_456_789)
    ts = [t.event.ts_event_ns for t in ticks]
    assert ts == sorted(ts)
    assert sched.start_ns <= ts[0]
    assert ts[-1] < sched.end_ns
    assert all(t.phase == sched.phase_at(t.event.ts_event_ns) for t in ticks)
    for t in ticks[:: max(1, len(ticks) // 50)]:
        assert round_trips(t.event)


# --------------------------------------------------------------------------- calibration


def test_calm_vols_and_correlations_match_the_params(market: Market) -> None:
    r = np.diff(np.log(market.marks), axis=0)[market.labels[1:] == "calm"]
    assert len(r) > 1500
    vol = r.std(axis=0, ddof=1) * math.sqrt(365 * 24 * 60)
    target = np.array([market.params.dynamics[n].vol_calm_annual for n in NAMES])
    np.testing.assert_allclose(vol, target, rtol=0.10)  # sampling sd ≈ 1.8 %
    corr = np.corrcoef(r.T)
    np.testing.assert_allclose(corr, calm_target(market.params), atol=0.10)  # sd <= 0.025
    assert abs(corr[NAMES.index("BTC"), NAMES.index("NDX")] - 0.40) < 0.1
    assert abs(corr[NAMES.index("BTC"), NAMES.index("GOLD")]) < 0.1


def test_fire_sale_every_class_draws_down_and_correlations_converge(market: Market) -> None:
    lab = market.labels
    i0, i1 = int(np.argmax(lab == "fire_sale")), int(np.argmax(lab == "recovery"))
    onset_close = market.marks[i0 - 1]
    window = market.marks[i0:i1]
    drawdown = 1 - window.min(axis=0) / onset_close
    planned = np.array([market.params.dynamics[n].drawdown for n in NAMES])
    assert (drawdown > 0.5 * planned).all(), dict(zip(NAMES, drawdown, strict=True))
    assert (window[-1] < onset_close).all()  # every asset, so every class, ends lower
    r = np.diff(np.log(market.marks), axis=0)
    vol = r[lab[1:] == "fire_sale"].std(axis=0, ddof=1) * math.sqrt(365 * 24 * 60)
    stressed = np.array([market.params.dynamics[n].vol_stress_annual for n in NAMES])
    np.testing.assert_allclose(vol, stressed, rtol=0.2)  # 120 bars: sampling sd ≈ 6.5 %
    calm = mean_pair(np.corrcoef(r[lab[1:] == "calm"].T))
    fire = mean_pair(np.corrcoef(r[lab[1:] == "fire_sale"].T))
    assert fire > calm + 0.3
    by_class = average_correlation(np.corrcoef(r[lab[1:] == "fire_sale"].T), CLASSES)
    assert min(by_class[k] for k in ("crypto-equity", "crypto-metal", "equity-metal")) > 0.6


def test_long_liquidations_burst_and_funding_flips(market: Market) -> None:
    lab, liq = market.labels, market.liq
    calm_long = liq["long"][lab == "calm"].mean()
    fire_long = liq["long"][lab == "fire_sale"].mean()
    assert fire_long > 10 * calm_long
    assert fire_long > 5 * liq["short"][lab == "fire_sale"].mean()  # longs are the forced side
    total = liq["long"][lab == "fire_sale"].sum()
    assert 0.3e9 < total < 2e9  # DESIGN: 2025-11-04 ≈ $1.1–1.3B market-wide in 24 h
    funding = [(t.phase, t.event) for t in market.ticks if isinstance(t.event, Funding)]
    for venue in ("binance", "bybit", "okx"):
        calm = [e.rate_annualized for ph, e in funding if ph == "calm" and e.venue == venue]
        fire = [e.rate_annualized for ph, e in funding if ph == "fire_sale" and e.venue == venue]
        assert np.mean(calm) > 0.02
        assert np.mean(fire) < -0.05  # flipped negative on every venue
    oi = {
        phase: np.mean([e.open_interest_usd or 0.0 for ph, e in funding
                        if ph == phase and e.asset == "BTC" and e.venue == "bybit"])
        for phase in ("calm", "fire_sale")
    }  # fmt: skip
    assert oi["fire_sale"] < 0.85 * oi["calm"]


# --------------------------------------------------------------------------- the detector fires


def replay_cosell(close: FloatArray) -> tuple[list[tuple[str, int]], FloatArray]:
    """CoSellDetector on bar returns, 120-bar rolling correlation + absorption ratio inputs."""
    r = np.diff(np.log(close), axis=0)
    rc = RollingCorrelation(len(NAMES), window_bars=120)
    det = CoSellDetector(NAMES, CLASSES, CoSellParams.for_bar_interval(60))
    events: list[tuple[str, int]] = []
    scores = np.full(len(r), np.nan)
    for t in range(len(r)):
        rc.update(r[t])
        corr = rc.get()
        res = det.update(T0 + (t + 1) * BAR_NS, r[t], average_correlation(corr, CLASSES)["all"],
                         absorption_ratio(corr))  # fmt: skip
        scores[t] = res.score
        events += [(e.type, e.bar_start_ns) for e in res.events if e.type != "cosell.update"]
    return events, scores


def test_cosell_detector_starts_inside_the_fire_sale_and_never_in_calm(market: Market) -> None:
    sched = phase_schedule(market.params, T0)
    onset = sched.intervals[1].start_ns
    events, scores = replay_cosell(market.all_prices)
    starts = [ts for kind, ts in events if kind == "cosell.start"]
    assert starts
    assert all(sched.phase_at(ts) != "calm" for ts in starts)
    delay_bars = (starts[0] - onset) // BAR_NS
    assert sched.phase_at(starts[0]) == "fire_sale"
    assert 0 <= delay_bars <= MAX_DETECTION_DELAY_BARS
    assert [kind for kind, _ in events][:2] == ["cosell.start", "cosell.end"]
    calm_scores = scores[market.labels[1:] == "calm"]
    assert np.isnan(calm_scores[:1440]).all()  # a day of warm-up: no flag on a cold window
    assert np.nanmax(calm_scores) < 0.4


# --------------------------------------------------------------------------- sessions, params


def test_sessions_closed_only_on_request() -> None:
    friday_1630_new_york = 1_762_551_000 * NS  # 2025-11-07 21:30 UTC
    p = ScenarioParams(phases=(Phase("calm", 3600),), closed_sessions=True, **FAST)  # type: ignore[arg-type]
    close_ns = friday_1630_new_york + 1800 * NS
    for closed, params in ((True, p), (False, dataclasses.replace(p, closed_sessions=False))):
        ticks = list(generate(params, ASSETS, friday_1630_new_york, 3))
        last = {a: max(t.event.ts_event_ns for t in ticks if t.event.asset == a) for a in NAMES}
        for a in ASSETS:
            gated = closed and a.session != "24/7"
            assert (last[a.name] < close_ns) == gated, a.name
    assert cme_globex_open(1_762_729_200 * NS)  # Sunday 2025-11-09 18:00 New York
    assert not cme_globex_open(1_762_729_200 * NS - 1)
    assert not cme_globex_open(1_762_812_000 * NS)  # Monday 17:00 New York: daily halt
    assert cme_globex_open(1_762_815_600 * NS)  # Monday 18:00


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phases": (Phase("calm", 0),)}, "must be > 0"),
        ({"phases": (Phase("calm", 60, 1.5),)}, "stress must be in"),
        ({"chunk_s": 600.5}, "multiple of step_s"),
        ({"venues": ("binance", "kraken")}, "venue 'kraken'"),
        ({"correlations": {("SPX", "NDX"): 0.999, ("BTC", "SPX"): 0.9, ("BTC", "NDX"): -0.9}},
         "not positive definite"),
    ],
)  # fmt: skip
def test_invalid_params_say_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        list(generate(ScenarioParams(**kwargs), ASSETS, T0, 0))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown preset"):
        ScenarioParams.preset("crash")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- run_scenario


async def test_run_scenario_emits_the_connector_topics_and_keys(tmp_path: Path) -> None:
    p = short_params()
    sink = ListSink()
    labels = tmp_path / "labels.jsonl"
    run = await run_scenario(sink, p, ASSETS, T0, None, asyncio.Event(), labels_path=labels, seed=9)
    expected = [t.event for t in generate(p, ASSETS, T0, 9)]
    assert run.completed
    assert run.events == len(expected) == len(sink.messages)
    assert run.last_ts_event_ns == expected[-1].ts_event_ns
    for (topic, key, value), event in zip(sink.messages, expected, strict=True):
        assert topic == TOPIC_OF[type(event)]
        assert key == f"{event.venue}:{event.symbol}".encode()
        assert decode(type(event), value) == event  # type: ignore[type-var]
    assert run.by_topic == {t: sum(m[0] == t for m in sink.messages) for t in TOPIC_OF.values()}
    written = [json.loads(line) for line in labels.read_text().splitlines()]
    sched = phase_schedule(p, T0)
    assert written == [i.to_dict() for i in sched.intervals]
    assert written[1]["phase"] == "fire_sale"
    assert written[1]["start"] == "2025-11-04T00:10:00+00:00"


async def test_run_scenario_unpaced_is_fast() -> None:
    p = ScenarioParams(phases=(Phase("calm", 1800), Phase("fire_sale", 1800, 1.0, 1.0, move=1.0)))
    sink = ListSink()
    t = time.perf_counter()
    run = await run_scenario(sink, p, ASSETS, T0, None, asyncio.Event(), seed=1)
    rate = run.events / (time.perf_counter() - t)
    assert run.events > 100_000
    assert rate > 20_000, f"{rate:.0f} events/s"  # about 100k/s measured on 2 cores


async def test_run_scenario_paces_event_time_and_stops() -> None:
    p = ScenarioParams(phases=(Phase("calm", 30),), **FAST)  # type: ignore[arg-type]
    sink = ListSink()
    wall0 = time.monotonic_ns()
    run = await run_scenario(sink, p, ASSETS, T0, 100.0, asyncio.Event(), clock=time.monotonic_ns)
    assert run.completed
    assert 0.25 < (time.monotonic_ns() - wall0) / NS < 2.0
    for (_, _, value), put_ns in zip(sink.messages, sink.put_ns, strict=True):
        ts = json.loads(value)["ts_event_ns"]
        assert put_ns - wall0 >= (ts - T0) / 100.0 - 2_000_000  # never early (2 ms slack)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    sink = ListSink()
    t = time.perf_counter()
    run = await run_scenario(sink, p, ASSETS, T0, 1.0, stop, clock=time.monotonic_ns)
    assert not run.completed
    assert time.perf_counter() - t < 0.5
    assert run.events == len(sink.messages)
    assert run.last_ts_event_ns is not None
    assert run.last_ts_event_ns < T0 + NS  # stopped ~50 ms in: well before 1 s of sim time
    with pytest.raises(InvalidInputError, match="speed"):
        await run_scenario(ListSink(), p, ASSETS, T0, 0.0, asyncio.Event())


async def test_run_scenario_reports_each_venue_as_a_feed() -> None:
    """Feed metrics (up, last message) per venue, so dashboards and feed alerts work offline."""
    from prometheus_client import CollectorRegistry

    from connectors.metrics import ConnectorMetrics

    metrics = ConnectorMetrics.create(CollectorRegistry())
    p = ScenarioParams(phases=(Phase("calm", 30),), **FAST)  # type: ignore[arg-type]
    ticks = itertools.count(1_000 * NS, NS)  # a wall clock that moves 1 s per reading
    sink = ListSink()
    run = await run_scenario(
        sink, p, ASSETS, T0, None, asyncio.Event(), clock=lambda: next(ticks), metrics=metrics
    )
    venues = sorted({json.loads(v)["venue"] for _, _, v in sink.messages})
    assert len(venues) >= 2
    last_clock = next(ticks) / NS - 1  # the reading taken for the last event
    per_venue = {}
    for venue in venues:
        up = metrics.connection_up.labels(venue, "scenario")._value.get()
        assert up == 0.0  # the run is over: the feed is down
        per_venue[venue] = metrics.last_message.labels(venue, "scenario")._value.get()
    last_venue = json.loads(sink.messages[-1][2])["venue"]
    assert per_venue[last_venue] == last_clock
    assert all(1_000 < t <= last_clock for t in per_venue.values())
    assert run.completed
