"""Each venue end to end: its fake server → the connector process code → real Kafka → consumer.

Every field of every event is asserted against values computed by hand from the verbatim
frames (see the venue parse tests for the arithmetic), then the connection is dropped: the
connector must reconnect, resubscribe and publish a gap marker; garbage must be dead-lettered
while the connection survives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from connectors.app import run_connect
from connectors.base import Instrument, TickEvent
from streams.events import DeadLetter, Funding, GapMarker, Liquidation, PriceTick, decode
from streams.topics import ensure_topics
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.fake_exchange import FakeExchange
from tests.connectors.fake_okx import FakeOkx
from tests.connectors.kafka_tail import Tail

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
TOPICS = [
    "ticks.price.v1",
    "ticks.liquidation.v1",
    "ticks.funding.v1",
    "ticks.deadletter.v1",
    "ticks.gap.v1",
]
DECODE = {
    "ticks.price.v1": PriceTick,
    "ticks.liquidation.v1": Liquidation,
    "ticks.funding.v1": Funding,
    "ticks.deadletter.v1": DeadLetter,
    "ticks.gap.v1": GapMarker,
}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


async def _run_venue(
    kafka_bootstrap: str,
    venue: str,
    fake: FakeExchange,
    instruments: list[Instrument],
    topics_subscribed: set[str],
    frames: list[str],
    done: Callable[[dict[str, list[Any]]], bool],
) -> tuple[dict[str, list[Any]], int, int]:
    await ensure_topics(kafka_bootstrap)
    url = await fake.start()
    tail = Tail(kafka_bootstrap, TOPICS)
    await tail.mark()
    stop = asyncio.Event()
    t0 = time.time_ns()
    task = asyncio.create_task(
        run_connect(
            kafka_bootstrap,
            {venue: instruments},
            {venue: url},
            stop,
            CollectorRegistry(),
            restart_gaps=False,  # the session broker holds other tests' data of these symbols
        )
    )
    try:
        await fake.wait_subscribed(topics_subscribed)
        for f in frames:
            await fake.broadcast(f)
        await fake.broadcast("{garbage")
        await asyncio.sleep(0.5)
        await fake.drop_all()
        await fake.wait_subscribed(topics_subscribed)  # resubscribed after the reconnect
        await fake.broadcast(frames[0])  # first data after the gap closes it
        got = await tail.collect(lambda out: done(out) and bool(out["ticks.gap.v1"]))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake.stop()
    t1 = time.time_ns()
    decoded = {t: [decode(DECODE[t], r.value) for r in recs] for t, recs in got.items()}
    for topic in ("ticks.price.v1", "ticks.liquidation.v1", "ticks.funding.v1"):
        for rec, event in zip(got[topic], decoded[topic], strict=True):
            assert rec.key == f"{event.venue}:{event.symbol}".encode()
            assert t0 <= event.ts_recv_ns <= t1
    return decoded, t0, t1


def _without_recv(events: list[TickEvent]) -> list[TickEvent]:
    return [replace(e, ts_recv_ns=0) for e in events]


def _check_gap_and_deadletter(decoded: dict[str, list[Any]], venue: str, t0: int, t1: int) -> None:
    letters = [d for d in decoded["ticks.deadletter.v1"] if d.venue == venue]
    assert any(d.raw == "{garbage" and d.reason.startswith("malformed_json") for d in letters)
    gaps = decoded["ticks.gap.v1"]
    assert gaps, "no gap marker after the dropped connection"
    for gap in gaps:
        assert gap.venue == venue
        assert gap.reason == "disconnect"
        assert t0 <= gap.from_ns < gap.to_ns <= t1


OKX_IOST = Instrument("okx", "IOST-USDT-SWAP", "IOST", "crypto", contract_size=1000.0)
OKX_BTC_INV = Instrument("okx", "BTC-USD-SWAP", "BTC", "crypto", contract_size=100.0)


async def test_okx_end_to_end(kafka_bootstrap: str) -> None:
    frames = [
        fixture("okx_liquidation-orders.json"),
        fixture("okx_liquidation-orders_derived_long.json"),
        fixture("okx_funding-rate.json"),
    ]
    decoded, t0, t1 = await _run_venue(
        kafka_bootstrap,
        "okx",
        FakeOkx(),
        [OKX_IOST, OKX_BTC_INV],
        {FakeOkx.topic({"channel": "liquidation-orders", "instType": "SWAP"})},
        frames,
        lambda out: len(out["ticks.liquidation.v1"]) >= 3 and len(out["ticks.funding.v1"]) >= 1,
    )
    short = Liquidation(
        venue="okx", symbol="IOST-USDT-SWAP", asset="IOST", asset_class="crypto",
        ts_event_ns=1_692_266_434_010_000_000, ts_recv_ns=0, liquidated_side="short",
        price=0.007831, qty_base=13 * 1000.0, notional_usd=13_000 * 0.007831,
        completeness="sampled",
    )  # fmt: skip
    liqs = _without_recv(decoded["ticks.liquidation.v1"])
    assert liqs[0] == short
    assert liqs[1] == replace(short, liquidated_side="long")
    assert liqs[2] == short  # the first frame again, after the reconnect
    (funding,) = _without_recv(decoded["ticks.funding.v1"])
    assert funding == Funding(
        venue="okx", symbol="BTC-USD-SWAP", asset="BTC", asset_class="crypto",
        ts_event_ns=1_700_724_675_402_000_000, ts_recv_ns=0, rate=0.0001875391284828,
        interval_hours=8.0, rate_annualized=0.0001875391284828 * 1095,
        next_funding_ts_ns=1_700_726_400_000_000_000, mark_price=None, open_interest_usd=None,
    )  # fmt: skip
    _check_gap_and_deadletter(decoded, "okx", t0, t1)


BYBIT_ROSE = Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0)


async def test_bybit_end_to_end(kafka_bootstrap: str) -> None:
    frames = [
        fixture("bybit_allLiquidation.json"),
        fixture("bybit_allLiquidation_derived_buy.json"),
    ]
    decoded, t0, t1 = await _run_venue(
        kafka_bootstrap,
        "bybit",
        FakeBybit(),
        [BYBIT_ROSE],
        {"allLiquidation.ROSEUSDT", "tickers.ROSEUSDT"},
        frames,
        lambda out: len(out["ticks.liquidation.v1"]) >= 3,
    )
    short = Liquidation(
        venue="bybit", symbol="ROSEUSDT", asset="ROSE", asset_class="crypto",
        ts_event_ns=1_739_502_302_929_000_000, ts_recv_ns=0, liquidated_side="short",  # S=Sell
        price=0.04499, qty_base=20_000.0, notional_usd=20_000 * 0.04499,
        completeness="complete",
    )  # fmt: skip
    liqs = _without_recv(decoded["ticks.liquidation.v1"])
    assert liqs == [short, replace(short, liquidated_side="long"), short]
    _check_gap_and_deadletter(decoded, "bybit", t0, t1)


async def test_binance_end_to_end(kafka_bootstrap: str) -> None:
    from tests.connectors.binance_cases import BTC, BTC_LONG_LIQ, BTC_MARK_DOCS, ETH
    from tests.connectors.fake_binance import FakeBinance

    frames = [
        fixture("binance_forceOrder_derived_combined.json"),
        fixture("binance_forceOrder_derived_buy.json"),
        fixture("binance_markPrice.json"),
    ]
    decoded, t0, t1 = await _run_venue(
        kafka_bootstrap,
        "binance",
        FakeBinance(),
        [BTC, ETH],
        {"!forceOrder@arr", "!markPrice@arr@1s", "btcusdt@aggTrade"},
        frames,
        lambda out: len(out["ticks.liquidation.v1"]) >= 3 and len(out["ticks.funding.v1"]) >= 1,
    )
    liqs = _without_recv(decoded["ticks.liquidation.v1"])
    btc_long = replace(BTC_LONG_LIQ, ts_recv_ns=0)
    # o.S = BUY in the derived frame: a short was liquidated; everything else identical
    assert liqs == [btc_long, replace(btc_long, liquidated_side="short"), btc_long]
    prices = _without_recv(decoded["ticks.price.v1"])
    mark, index, funding = (replace(e, ts_recv_ns=0) for e in BTC_MARK_DOCS)
    assert prices == [mark, index]
    assert _without_recv(decoded["ticks.funding.v1"]) == [funding]
    _check_gap_and_deadletter(decoded, "binance", t0, t1)
