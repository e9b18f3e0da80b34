"""FakeOkx speaks OKX's protocol to a plain websockets client using the real connection specs:
acks per arg, text ping/pong, errors, pushes, drops, and OKX's 30 s no-subscription cut."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from connectors.base import ConnectionSpec, Instrument
from connectors.okx.client import connection_specs
from streams.events import Liquidation, PriceTick
from tests.connectors.fake_okx import IDLE_CLOSE_CODE, FakeOkx, okx_fixture

TS_RECV = 1_760_000_000_000_000_000
BTC = Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", contract_size=0.01)
XAU = Instrument("okx", "XAU-USDT-SWAP", "GOLD", "metal", contract_size=0.001)
TOPICS = {"liquidation-orders:SWAP"} | {
    f"{channel}:{symbol}"
    for channel in ("funding-rate", "mark-price", "trades")
    for symbol in ("BTC-USDT-SWAP", "XAU-USDT-SWAP")
}


@asynccontextmanager
async def okx(**kwargs: float) -> AsyncIterator[tuple[FakeOkx, ConnectionSpec]]:
    fake = FakeOkx(**kwargs)
    base = await fake.start()
    try:
        (spec,) = connection_specs([BTC, XAU], ws_base_url=base)
        yield fake, spec
    finally:
        await fake.stop()


async def recv(ws: ClientConnection, timeout_s: float = 5.0) -> str:
    message = await asyncio.wait_for(ws.recv(), timeout_s)
    return message if isinstance(message, str) else message.decode()


async def subscribe(ws: ClientConnection, spec: ConnectionSpec) -> list[str]:
    for request in spec.subscribe:
        await ws.send(request)
    return [await recv(ws) for _ in range(spec.subscribe_ack_expected)]


async def test_subscribe_gets_one_ack_per_arg() -> None:
    async with okx() as (fake, spec), connect(spec.url) as ws:
        acks = await subscribe(ws, spec)
        await fake.wait_subscribed(TOPICS, timeout_s=5)
        parser = spec.parser_factory()
        assert [parser.parse(a, TS_RECV).control for a in acks] == ["ack"] * 7
        decoded = [json.loads(a) for a in acks]
        assert {d["id"] for d in decoded} == {"1"}
        assert {FakeOkx.topic(d["arg"]) for d in decoded} == TOPICS == fake.subscriptions
        assert fake.paths == ["/ws/v5/public"]


async def test_text_ping_gets_text_pong() -> None:
    async with okx() as (fake, spec), connect(spec.url) as ws:
        await ws.send(spec.keepalive.payload)
        reply = await recv(ws)
        assert reply == "pong"
        assert spec.parser_factory().parse(reply, TS_RECV).control == "pong"
        assert fake.received == ["ping"]


async def test_answer_pings_false_stops_pongs() -> None:
    async with okx() as (fake, spec), connect(spec.url) as ws:
        fake.answer_pings = False
        await ws.send("ping")
        with pytest.raises(TimeoutError):
            await recv(ws, timeout_s=0.3)
        fake.answer_pings = True
        await ws.send("ping")
        assert await recv(ws) == "pong"


async def test_broadcast_frames_arrive_and_parse() -> None:
    async with okx() as (fake, spec), connect(spec.url) as ws:
        await subscribe(ws, spec)
        mark = json.loads(okx_fixture("okx_mark-price.json"))
        mark["arg"]["instId"] = mark["data"][0]["instId"] = "XAU-USDT-SWAP"
        mark["data"][0]["markPx"] = "4012.5"
        liquidation = okx_fixture("okx_liquidation-orders_derived_batch.json")
        assert await fake.broadcast(json.dumps(mark)) == 1
        assert await fake.broadcast(liquidation) == 1
        parser = spec.parser_factory()
        tick = parser.parse(await recv(ws), TS_RECV)
        assert tick.events == [
            PriceTick(
                venue="okx", symbol="XAU-USDT-SWAP", asset="GOLD", asset_class="metal",
                ts_event_ns=1597026383085_000_000, ts_recv_ns=TS_RECV, price=4012.5, kind="mark",
            )
        ]  # fmt: skip
        batch = parser.parse(await recv(ws), TS_RECV)
        (event,) = batch.events  # only BTC is in this universe
        assert isinstance(event, Liquidation)
        assert (event.symbol, event.liquidated_side, event.qty_base) == (
            "BTC-USDT-SWAP",
            "long",
            2.5,
        )
        assert batch.filtered == 2  # IOST and DOGE


async def test_unknown_channel_gets_a_venue_error() -> None:
    async with okx() as (fake, spec), connect(spec.url) as ws:
        await ws.send(
            json.dumps({"id": "9", "op": "subscribe", "args": [{"channel": "nope", "instId": "X"}]})
        )
        reply = await recv(ws)
        result = spec.parser_factory().parse(reply, TS_RECV)
        assert result.control == "error"
        assert [r.reason for r in result.rejects] == ["venue_error"]
        assert json.loads(reply)["code"] == "60018"
        assert json.loads(reply)["id"] == "9"
        await ws.send("{not json")
        assert json.loads(await recv(ws))["code"] == "60012"
        assert fake.subscriptions == set()


async def test_drop_all_closes_the_connection() -> None:
    async with okx() as (fake, spec), connect(spec.url) as ws:
        await subscribe(ws, spec)
        await fake.drop_all()
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert fake.subscriptions == set()


async def test_unsubscribed_connection_is_cut_like_okx() -> None:
    async with okx(subscribe_timeout_s=0.3) as (fake, spec):
        async with connect(spec.url) as idle, connect(spec.url) as busy:
            await subscribe(busy, spec)
            with pytest.raises(ConnectionClosed) as closed:
                await recv(idle, timeout_s=5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == IDLE_CLOSE_CODE
            await asyncio.sleep(0.3)  # the subscribed one outlives the timeout
            await busy.send("ping")
            assert await recv(busy) == "pong"
        assert fake.idle_closes == 1


# ---------------------------------------------------------------- connection specs


def test_spec_defaults() -> None:
    (spec,) = connection_specs([BTC, XAU])
    assert spec.url == "wss://ws.okx.com:8443/ws/v5/public"
    assert (spec.name, spec.venue) == ("okx-public", "okx")
    assert spec.channels == ("liquidation-orders", "funding-rate", "mark-price", "trades")
    assert (spec.keepalive.kind, spec.keepalive.interval_s, spec.keepalive.payload) == (
        "text_ping", 20.0, "ping"
    )  # fmt: skip
    assert (spec.stale_after_s, spec.max_lifetime_s, spec.subscribe_ack_expected) == (30.0, None, 7)
    (request,) = [json.loads(s) for s in spec.subscribe]
    assert request == {
        "id": "1",
        "op": "subscribe",
        "args": [
            {"channel": "liquidation-orders", "instType": "SWAP"},
            {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
            {"channel": "funding-rate", "instId": "XAU-USDT-SWAP"},
            {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
            {"channel": "mark-price", "instId": "XAU-USDT-SWAP"},
            {"channel": "trades", "instId": "BTC-USDT-SWAP"},
            {"channel": "trades", "instId": "XAU-USDT-SWAP"},
        ],
    }
    assert connection_specs([BTC], "ws://127.0.0.1:9/")[0].url == "ws://127.0.0.1:9/ws/v5/public"


def test_large_universe_is_split_into_few_requests() -> None:
    many = [Instrument("okx", f"C{i}-USDT-SWAP", f"C{i}", "crypto", 1.0) for i in range(40)]
    (spec,) = connection_specs([*many, many[0]])  # the duplicate is subscribed once
    requests = [json.loads(s) for s in spec.subscribe]
    assert [r["id"] for r in requests] == ["1", "2"]
    assert [len(r["args"]) for r in requests] == [100, 21]  # 1 + 3 × 40 args
    args = [a for r in requests for a in r["args"]]
    assert len({json.dumps(a, sort_keys=True) for a in args}) == 121 == spec.subscribe_ack_expected


def test_spec_validation() -> None:
    assert connection_specs([]) == []
    with pytest.raises(ValueError, match="'BTCUSDT' is a 'binance' instrument"):
        connection_specs([Instrument("binance", "BTCUSDT", "BTC", "crypto")])
    with pytest.raises(ValueError, match="'BTC-USDT' is not an OKX perpetual swap"):
        connection_specs([Instrument("okx", "BTC-USDT", "BTC", "crypto")])
    (spec,) = connection_specs([BTC])
    first, second = spec.parser_factory(), spec.parser_factory()
    assert first is not second
    assert first.venue == "okx"


async def test_split_requests_are_all_acked_by_the_fake() -> None:
    many = [Instrument("okx", f"C{i}-USDT-SWAP", f"C{i}", "crypto", 1.0) for i in range(40)]
    fake = FakeOkx()
    base = await fake.start()
    try:
        (spec,) = connection_specs(many, ws_base_url=base)
        async with connect(spec.url) as ws:
            acks = await subscribe(ws, spec)
            assert {json.loads(a)["id"] for a in acks} == {"1", "2"}
            assert len(fake.subscriptions) == 121
    finally:
        await fake.stop()
