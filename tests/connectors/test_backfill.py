"""REST backfill through real ccxt clients against a local fake of the venues' kline endpoints.

The fake (tests/connectors/fake_rest.py) answers as each venue does — Binance the earliest
``limit`` rows of a range, Bybit and OKX the latest, newest first — so a pagination that only
works for one ordering fails here. Expected values are built from the candle table by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from connectors.app import run_connect
from connectors.backfill import (
    Backfiller,
    BackfillStats,
    Candle,
    GapFillRouter,
    candles_to_ticks,
    fetch_candles,
    make_exchange,
    unified_symbol,
)
from connectors.base import Instrument
from connectors.metrics import ConnectorMetrics
from signals.bars import BarBuilder
from streams.events import GapMarker, PriceTick, decode
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.fake_rest import FakeRest, Row, rows
from tests.connectors.test_supervisor import ListSink

MIN = 60_000
T0 = 1_760_000_000_000 // MIN * MIN  # 2025-10-09T08:53Z, a minute boundary
RECV_NS = 1_770_000_000_123_456_789
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"

MARKET_IDS = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT-SWAP"}


def market(venue_id: str, symbol: str) -> dict[str, Any]:
    """A ccxt unified market (spot when the symbol has no settle currency)."""
    base, _, rest = symbol.partition("/")
    quote, _, settle = rest.partition(":")
    swap = bool(settle)
    return {
        "id": venue_id, "symbol": symbol, "base": base, "quote": quote,
        "settle": settle or None, "type": "swap" if swap else "spot", "spot": not swap,
        "margin": False, "swap": swap, "future": False, "option": False, "contract": swap,
        "linear": True if swap else None, "inverse": False if swap else None, "active": True,
        "contractSize": 1.0 if swap else None,
    }  # fmt: skip


def markets_for(venue: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for venue_id in ids:
        base = venue_id.split("-")[0] if venue == "okx" else venue_id.removesuffix("USDT")
        out.append(market(venue_id, f"{base}/USDT:USDT"))
        if venue == "bybit":  # Bybit spot shares the id: the swap must be picked
            out.append(market(venue_id, f"{base}/USDT"))
    return out


@asynccontextmanager
async def serving(
    table: dict[str, list[Row]], ids: Mapping[str, Sequence[str]], interval_ms: int = MIN
) -> AsyncIterator[tuple[FakeRest, dict[str, Any]]]:
    """The fake REST server and one ccxt exchange per venue in ``ids``, pointed at it."""
    fake = FakeRest(table, interval_ms)
    url = await fake.start()
    exchanges = {v: make_exchange(v, markets_for(v, i), url) for v, i in ids.items()}
    try:
        yield fake, exchanges
    finally:
        for exchange in exchanges.values():
            await exchange.close()
        await fake.stop()


def candle(open_ms: int, close: float) -> Candle:
    return Candle(open_ms, close, close, close, close, 10.0)


def tick(inst: Instrument, close_ms: int, price: float, recv_ns: int = RECV_NS) -> PriceTick:
    return PriceTick(
        venue=inst.venue, symbol=inst.symbol, asset=inst.asset, asset_class=inst.asset_class,
        ts_event_ns=(close_ms - 1) * 1_000_000, ts_recv_ns=recv_ns, price=price, kind="trade",
    )  # fmt: skip


def published(sink: ListSink) -> list[PriceTick]:
    for topic, key, value in sink.messages:
        assert topic == "ticks.price.v1"
        event = decode(PriceTick, value)
        assert key == f"{event.venue}:{event.symbol}".encode()
    return [decode(PriceTick, v) for v in sink.of("ticks.price.v1")]


# ---------------------------------------------------------------- fetch_candles


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
async def test_pagination_covers_every_candle_once(venue: str) -> None:
    closes = [100.0 + 0.25 * n for n in range(23)]
    venue_id = MARKET_IDS[venue]
    async with serving({venue_id: rows(T0, closes)}, {venue: [venue_id]}) as (fake, exchanges):
        fake.max_limit = 5  # the venue serves at most 5 rows a request
        exchange = exchanges[venue]
        stats = BackfillStats()
        symbol = unified_symbol(exchange, venue_id)
        got = await fetch_candles(
            exchange, symbol, "1m", T0 + 30_000, T0 + 22 * MIN + 30_000, limit=5, stats=stats
        )
    assert symbol == "BTC/USDT:USDT"
    # since floored to the grid; the 23rd candle is still forming at `until`, but it is there
    assert got == [candle(T0 + n * MIN, c) for n, c in enumerate(closes)]
    assert len(fake.requests) == 5
    assert stats.requests == 5
    assert stats.candles == 23
    assert stats.duplicates == 0
    assert not stats.rejected
    if venue == "binance":
        windows = [(int(q["startTime"]), int(q["endTime"])) for _, q in fake.requests]
    elif venue == "bybit":
        assert {q["category"] for _, q in fake.requests} == {"linear"}  # the swap, not spot
        windows = [(int(q["start"]), int(q["end"])) for _, q in fake.requests]
    else:
        windows = [(int(q["before"]) + 1, int(q["after"])) for _, q in fake.requests]
    starts = [T0 + k * 5 * MIN for k in range(5)]
    assert windows == [(s, min(s + 5 * MIN - 1, T0 + 22 * MIN + 29_999)) for s in starts]


async def test_duplicates_are_merged_by_open_time() -> None:
    table = rows(T0, [100.0, 101.0, 102.0])
    table.insert(2, Row(T0 + MIN, "101.5", "101.5", "101.5", "101.5"))  # the venue repeats it
    async with serving({"BTCUSDT": table}, {"binance": ["BTCUSDT"]}) as (_, exchanges):
        stats = BackfillStats()
        got = await fetch_candles(
            exchanges["binance"], "BTC/USDT:USDT", "1m", T0, T0 + 3 * MIN, stats=stats
        )
    assert [(c.open_ms, c.close) for c in got] == [
        (T0, 100.0),
        (T0 + MIN, 101.5),  # the row seen last
        (T0 + 2 * MIN, 102.0),
    ]
    assert stats.duplicates == 1
    assert stats.candles == 3


async def test_nan_and_non_positive_closes_are_rejected_and_counted() -> None:
    table = rows(T0, [100.0, "NaN", 0.0, -3.0, 104.0, "inf"])
    async with serving({"BTCUSDT": table}, {"bybit": ["BTCUSDT"]}) as (_, exchanges):
        stats = BackfillStats()
        got = await fetch_candles(
            exchanges["bybit"], "BTC/USDT:USDT", "1m", T0, T0 + 6 * MIN, stats=stats
        )
    assert got == [candle(T0, 100.0), candle(T0 + 4 * MIN, 104.0)]
    assert stats.rejected == {"close_not_finite": 2, "close_not_positive": 2}


# ---------------------------------------------------------------- candles_to_ticks

BTC = Instrument("binance", "BTCUSDT", "BTC", "crypto")
ETH = Instrument("binance", "ETHUSDT", "ETH", "crypto")
OKX_BTC = Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", contract_size=0.01)
OKX_GOLD = Instrument("okx", "XAU-USDT-SWAP", "GOLD", "metal", contract_size=0.001)


def test_ticks_sit_at_the_last_millisecond_and_the_forming_candle_is_skipped() -> None:
    candles = [candle(T0, 100.0), candle(T0 + MIN, 101.0), candle(T0 + 2 * MIN, 102.0)]
    # closed at exactly until (T0 + 2 min) counts; the third closes after until: forming
    ticks = candles_to_ticks(BTC, candles, 60, RECV_NS, until_ms=T0 + 2 * MIN)
    assert ticks == [tick(BTC, T0 + MIN, 100.0), tick(BTC, T0 + 2 * MIN, 101.0)]
    assert ticks[0].ts_event_ns == 1_760_000_039_999_000_000
    # default until = the receive time
    recv = (T0 + 2 * MIN + 59_999) * 1_000_000
    assert len(candles_to_ticks(BTC, candles, 60, recv)) == 2
    assert len(candles_to_ticks(BTC, candles, 60, recv + 1_000_000)) == 3


@pytest.mark.parametrize("interval_s", [60, 300])
def test_bar_closes_equal_candle_closes(interval_s: int) -> None:
    """The point of close − 1 ms: each candle's close is the previous-tick sample of its bar."""
    closes = [100.0 + n for n in range(10)]
    step = interval_s * 1000
    start = T0 // step * step
    ticks = candles_to_ticks(
        BTC, [candle(start + n * step, c) for n, c in enumerate(closes)], interval_s, RECV_NS
    )
    builder = BarBuilder(["BTC"], interval_s=interval_s, grace_s=0.0)
    bars = [b for t in ticks for b in builder.add_tick("BTC", t.ts_event_ns, t.price)]
    assert [(b.bar_start_ns, b.bars[0].close) for b in bars] == [
        ((start + n * step) * 1_000_000, closes[n]) for n in range(9)
    ]  # the 10th bar stays open: nothing after it moves the watermark
    assert builder.late_ticks == {"BTC": 0}
    assert all(not b.bars[0].stale for b in bars)


# ---------------------------------------------------------------- Backfiller.warm_start


async def test_warm_start_publishes_each_assets_history_from_its_first_venue() -> None:
    table = {
        "BTCUSDT": rows(T0, [100.0 + n for n in range(10)]),
        "ETHUSDT": rows(T0, [10.0 + n for n in range(10)]),
        "BTC-USDT-SWAP": rows(T0, [900.0 + n for n in range(10)]),  # must not be used
        "XAU-USDT-SWAP": rows(T0, [4000.0 + n for n in range(10)]),
    }
    ids = {"binance": ["BTCUSDT", "ETHUSDT"], "okx": ["BTC-USDT-SWAP", "XAU-USDT-SWAP"]}
    async with serving(table, ids) as (fake, exchanges):
        sink = ListSink()
        instruments = {"binance": [BTC, ETH], "okx": [OKX_BTC, OKX_GOLD]}
        bf = Backfiller(exchanges, instruments, sink, clock_ns=lambda: RECV_NS)
        now_ms = T0 + 7 * MIN + 30_000  # candle 7 is forming; 5 bars back = candles 2..6
        n = await bf.warm_start(lookback_bars=5, interval_s=60, now_ms=now_ms)
    expected = sorted(
        [tick(i, T0 + (k + 1) * MIN, base + k) for k in range(2, 7)
         for i, base in ((BTC, 100.0), (ETH, 10.0), (OKX_GOLD, 4000.0))],
        key=lambda t: (t.ts_event_ns, t.venue, t.symbol),
    )  # fmt: skip
    assert published(sink) == expected  # interleaved in event time across assets
    assert n == 15
    assert bf.stats.ticks == 15
    assert "BTC-USDT-SWAP" not in str(fake.requests)
    assert not bf.stats.errors


async def test_warm_start_falls_back_to_the_next_venue_when_the_first_fails() -> None:
    table = {"BTC-USDT-SWAP": rows(T0, [900.0, 901.0, 902.0])}  # binance has no BTCUSDT rows
    ids = {"binance": ["BTCUSDT"], "okx": ["BTC-USDT-SWAP"]}
    async with serving(table, ids) as (_, exchanges):
        sink = ListSink()
        bf = Backfiller(
            exchanges, {"binance": [BTC], "okx": [OKX_BTC]}, sink, clock_ns=lambda: RECV_NS
        )
        await bf.warm_start(lookback_bars=2, interval_s=60, now_ms=T0 + 2 * MIN)
    assert published(sink) == [tick(OKX_BTC, T0 + MIN, 900.0), tick(OKX_BTC, T0 + 2 * MIN, 901.0)]
    assert bf.stats.errors == {"unknown_symbol": 1}  # Binance: "Invalid symbol", no retry


# ---------------------------------------------------------------- Backfiller.fill_gap

BY_BTC = Instrument("bybit", "BTCUSDT", "BTC", "crypto")
BY_ETH = Instrument("bybit", "ETHUSDT", "ETH", "crypto")


def gap(venue: str, channel: str, from_ms: int, to_ms: int) -> GapMarker:
    return GapMarker(
        venue=venue, channel=channel, from_ns=from_ms * 1_000_000 + 123, to_ns=to_ms * 1_000_000,
        reason="disconnect", ts_recv_ns=to_ms * 1_000_000,
    )  # fmt: skip


async def test_fill_gap_covers_the_gap_once_per_instrument() -> None:
    table = {
        "BTCUSDT": rows(T0, [100.0 + n for n in range(20)]),
        "ETHUSDT": rows(T0, [10.0 + n for n in range(20)]),
    }
    async with serving(table, {"bybit": ["BTCUSDT", "ETHUSDT"]}) as (fake, exchanges):
        sink = ListSink()
        bf = Backfiller(exchanges, {"bybit": [BY_BTC, BY_ETH]}, sink, clock_ns=lambda: RECV_NS)
        frm, to = T0 + 3 * MIN + 20_000, T0 + 7 * MIN + 5_000
        # what the supervisor publishes for one Bybit connection: one marker per topic
        channels = ["allLiquidation.BTCUSDT", "tickers.BTCUSDT", "allLiquidation.ETHUSDT",
                    "tickers.ETHUSDT"]  # fmt: skip
        counts = [await bf.fill_gap(gap("bybit", c, frm, to)) for c in channels]
        again = await bf.fill_gap(gap("bybit", "tickers.BTCUSDT", frm, to))
        liq_only = await bf.fill_gap(gap("bybit", "allLiquidation.BTCUSDT", to, to + 5 * MIN))
        requests = list(fake.requests)
    # candle 3 contains `from`, candle 6 is the last one closed by `to`
    want_btc = [tick(BY_BTC, T0 + (k + 1) * MIN, 100.0 + k) for k in range(3, 7)]
    want_eth = [tick(BY_ETH, T0 + (k + 1) * MIN, 10.0 + k) for k in range(3, 7)]
    assert published(sink) == want_btc + want_eth  # one fill per marker, each in time order
    assert counts == [0, 4, 0, 4]
    assert again == 0
    assert liq_only == 0
    assert [(q["symbol"], int(q["start"]), int(q["end"])) for _, q in requests] == [
        ("BTCUSDT", T0 + 3 * MIN, to - 1),
        ("ETHUSDT", T0 + 3 * MIN, to - 1),
    ]
    assert bf.stats.gaps_filled == 2
    assert bf.stats.gaps_repeated == 1


async def test_gap_router_publishes_the_marker_then_fills_once_per_venue() -> None:
    """Binance: one connection's gap repeats for forceOrder, markPrice and aggTrade."""
    table = {"BTCUSDT": rows(T0, [100.0 + n for n in range(20)]),
             "ETHUSDT": rows(T0, [10.0 + n for n in range(20)])}  # fmt: skip
    async with serving(table, {"binance": ["BTCUSDT", "ETHUSDT"]}) as (fake, exchanges):
        sink = ListSink()
        bf = Backfiller(exchanges, {"binance": [BTC, ETH]}, sink, clock_ns=lambda: RECV_NS)
        router = GapFillRouter(sink, ConnectorMetrics.create(CollectorRegistry()), None, bf)
        markers = [gap("binance", c, T0 + MIN, T0 + 3 * MIN) for c in
                   ("forceOrder", "markPrice", "aggTrade")]  # fmt: skip
        for marker in markers:
            await router.on_gap(marker)
        assert [decode(GapMarker, v) for v in sink.of("ticks.gap.v1")] == markers
        await router.close()
        assert len(fake.requests) == 2  # BTCUSDT and ETHUSDT, once each
    ticks = [decode(PriceTick, v) for v in sink.of("ticks.price.v1")]
    assert ticks == [tick(BTC, T0 + 2 * MIN, 101.0), tick(ETH, T0 + 2 * MIN, 11.0),
                     tick(BTC, T0 + 3 * MIN, 102.0), tick(ETH, T0 + 3 * MIN, 12.0)]  # fmt: skip


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
@pytest.mark.parametrize("status", [503, 429])
async def test_transient_failures_are_retried(venue: str, status: int) -> None:
    venue_id = MARKET_IDS[venue]
    async with serving({venue_id: rows(T0, [100.0, 101.0])}, {venue: [venue_id]}) as (
        fake,
        exchanges,
    ):
        fake.fail_next, fake.fail_status = 2, status
        inst = Instrument(venue, venue_id, "BTC", "crypto")
        sink = ListSink()
        bf = Backfiller(exchanges, {venue: [inst]}, sink, backoff_s=0.01, clock_ns=lambda: 7)
        n = await bf.warm_start(lookback_bars=2, interval_s=60, now_ms=T0 + 2 * MIN)
    assert n == 2
    assert published(sink) == [
        tick(inst, T0 + MIN, 100.0, recv_ns=7),
        tick(inst, T0 + 2 * MIN, 101.0, recv_ns=7),
    ]
    assert bf.stats.retries == 2
    assert bf.stats.requests == 3
    assert not bf.stats.errors


@pytest.mark.parametrize(("status", "kind"), [(503, "unavailable"), (429, "rate_limited")])
async def test_rest_down_is_survived_and_counted(status: int, kind: str) -> None:
    table = {"BTCUSDT": rows(T0, [100.0 + n for n in range(10)])}
    async with serving(table, {"bybit": ["BTCUSDT"]}) as (fake, exchanges):
        fake.fail_next, fake.fail_status = 100, status
        sink = ListSink()
        bf = Backfiller(exchanges, {"bybit": [BY_BTC]}, sink, backoff_s=0.01)
        assert await bf.warm_start(lookback_bars=3, interval_s=60, now_ms=T0 + 5 * MIN) == 0
        assert await bf.fill_gap(gap("bybit", "tickers.BTCUSDT", T0, T0 + 2 * MIN)) == 0
        assert bf.stats.errors == {kind: 2}
        assert bf.stats.retries == 4
        assert len(fake.requests) == 6  # 1 + 2 retries, twice
        fake.fail_next = 0  # REST is back: the next gap is filled
        got = await bf.fill_gap(gap("bybit", "tickers.BTCUSDT", T0 + 2 * MIN, T0 + 4 * MIN))
    assert got == 2
    assert sink.messages


async def test_unreachable_host_is_survived() -> None:
    fake = FakeRest({})
    url = await fake.start()
    await fake.stop()  # nothing listens there any more
    exchange = make_exchange("okx", markets_for("okx", ["BTC-USDT-SWAP"]), url)
    bf = Backfiller({"okx": exchange}, {"okx": [OKX_BTC]}, ListSink(), backoff_s=0.01)
    try:
        assert await bf.warm_start(lookback_bars=3, interval_s=60, now_ms=T0) == 0
    finally:
        await bf.close()
    assert bf.stats.errors == {"unavailable": 1}


# ---------------------------------------------------------------- run_connect


async def test_run_connect_warms_before_connecting_and_fills_gaps() -> None:
    rose = Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0)
    now_ms = time.time_ns() // 1_000_000
    start = now_ms // MIN * MIN - 30 * MIN
    table = {"ROSEUSDT": rows(start, [0.04 + n / 1e4 for n in range(40)])}
    ws = FakeBybit()
    ws_url = await ws.start()
    sink = ListSink()
    stop = asyncio.Event()
    frame = (FIXTURES / "bybit_allLiquidation.json").read_text()
    async with serving(table, {"bybit": ["ROSEUSDT"]}) as (fake, exchanges):
        bf = Backfiller(exchanges, {"bybit": [rose]}, None, lookback_bars=5)
        task = asyncio.create_task(
            run_connect("unused:9092", {"bybit": [rose]}, {"bybit": ws_url}, stop,
                        CollectorRegistry(), sink=sink, backfill=bf, restart_gaps=False)
        )  # fmt: skip
        try:
            await ws.wait_subscribed({"tickers.ROSEUSDT"})
            warm = published_prices(sink)
            await ws.broadcast(frame)
            await asyncio.sleep(0.3)
            await ws.drop_all()
            await ws.wait_subscribed({"tickers.ROSEUSDT"})
            await ws.broadcast(frame)  # the first data after the gap closes it
            async with asyncio.timeout(10):
                while len(fake.requests) < 2:
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await ws.stop()
    # warm start: published before the connection opened, the last 5 closed bars
    since = int(fake.requests[0][1]["start"])  # a minute may have turned since `now_ms`
    assert since in (start + 25 * MIN, start + 26 * MIN)
    assert warm == [since + (k + 1) * MIN - 1 for k in range(5)]
    assert sink.messages[0][0] == "ticks.price.v1"
    gaps = {g.channel: g for g in (decode(GapMarker, v) for v in sink.of("ticks.gap.v1"))}
    assert set(gaps) == {"allLiquidation.ROSEUSDT", "tickers.ROSEUSDT"}
    marker = gaps["tickers.ROSEUSDT"]
    _, query = fake.requests[1]  # one fill request for the gap's interval
    assert len(fake.requests) == 2
    assert int(query["start"]) == marker.from_ns // 1_000_000 // MIN * MIN
    assert int(query["end"]) == marker.to_ns // 1_000_000 - 1


def published_prices(sink: ListSink) -> list[int]:
    return [decode(PriceTick, v).ts_event_ns // 1_000_000 for v in sink.of("ticks.price.v1")]
