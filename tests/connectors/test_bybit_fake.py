"""FakeBybit speaks the Bybit linear protocol to a raw WebSocket client using our specs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from connectors.base import ConnectionSpec, Instrument
from connectors.bybit.client import connection_specs
from connectors.bybit.parse import BybitParser
from streams.events import Liquidation
from tests.connectors.fake_bybit import FakeBybit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
INSTRUMENTS = [
    Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0),
    Instrument("bybit", "BTCUSDT", "BTC", "crypto", funding_interval_hours=8.0),
]


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop, not the session's
async def fake() -> AsyncIterator[tuple[FakeBybit, ConnectionSpec]]:
    server = FakeBybit()
    url = await server.start()
    [spec] = connection_specs(INSTRUMENTS, ws_base_url=url)
    try:
        yield server, spec
    finally:
        await server.stop()


async def recv_json(ws: Connection, timeout_s: float = 5.0) -> dict[str, object]:
    reply = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    assert isinstance(reply, dict)
    return reply


async def subscribed(spec: ConnectionSpec) -> ClientConnection:
    ws = await connect(spec.url)
    for message in spec.subscribe:
        await ws.send(message)
    return ws


async def test_subscribe_messages_get_acks(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    server, spec = fake
    parser = spec.parser_factory()
    async with await subscribed(spec) as ws:
        replies = [await recv_json(ws) for _ in range(spec.subscribe_ack_expected)]
        await server.wait_subscribed(spec.channels, timeout_s=5)
    assert spec.subscribe_ack_expected == 1
    assert replies == [
        {
            "success": True,
            "ret_msg": "",
            "conn_id": replies[0]["conn_id"],
            "req_id": "sub-0-0",
            "op": "subscribe",
        }
    ]
    assert parser.parse(json.dumps(replies[0]), 0).control == "ack"
    assert server.subscriptions == {
        "allLiquidation.ROSEUSDT",
        "tickers.ROSEUSDT",
        "allLiquidation.BTCUSDT",
        "tickers.BTCUSDT",
    }
    assert server.paths == ["/v5/public/linear"]


async def test_json_ping_gets_a_pong(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    _, spec = fake
    async with await connect(spec.url) as ws:
        await ws.send(spec.keepalive.payload.replace("{n}", "3"))
        pong = await recv_json(ws)
    assert pong == {
        "success": True,
        "ret_msg": "pong",
        "conn_id": pong["conn_id"],
        "req_id": "3",
        "op": "ping",
    }
    assert BybitParser(INSTRUMENTS).parse(json.dumps(pong), 0).control == "pong"


async def test_answer_pings_false_stays_silent(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    server, spec = fake
    server.answer_pings = False
    async with await connect(spec.url) as ws:
        await ws.send(spec.keepalive.payload.replace("{n}", "1"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        server.answer_pings = True
        await ws.send(spec.keepalive.payload.replace("{n}", "2"))
        assert (await recv_json(ws))["ret_msg"] == "pong"


async def test_malformed_topic_is_a_venue_error(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    server, spec = fake
    request = {"req_id": "x", "op": "subscribe", "args": ["tickers.SPYUSDT", "tickers.btc usdt"]}
    async with await connect(spec.url) as ws:
        await ws.send(json.dumps(request))
        reply = await recv_json(ws)
        await server.wait_subscribed({"tickers.SPYUSDT"}, timeout_s=5)
    assert (reply["success"], reply["ret_msg"], reply["req_id"]) == (
        False,
        "error:handler not found,topic:tickers.btc usdt",
        "x",
    )
    result = BybitParser(INSTRUMENTS).parse(json.dumps(reply), 0)
    assert result.control == "error"
    assert [r.reason for r in result.rejects] == ["venue_error"]
    assert "tickers.btc usdt" not in server.subscriptions


async def test_unsubscribe_is_acked_and_recorded(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    server, spec = fake
    async with await subscribed(spec) as ws:
        await recv_json(ws)
        await ws.send('{"req_id":"u","op":"unsubscribe","args":["tickers.BTCUSDT"]}')
        reply = await recv_json(ws)
    assert (reply["success"], reply["op"], reply["req_id"]) == (True, "unsubscribe", "u")
    assert "tickers.BTCUSDT" not in server.subscriptions
    assert "allLiquidation.BTCUSDT" in server.subscriptions


async def test_broadcast_frames_arrive_and_parse(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    server, spec = fake
    parser = spec.parser_factory()
    async with await subscribed(spec) as ws:
        await recv_json(ws)
        await server.wait_subscribed(spec.channels, timeout_s=5)
        for name in ("bybit_allLiquidation.json", "bybit_tickers.json"):
            assert await server.broadcast((FIXTURES / name).read_text()) == 1
        results = [parser.parse(await asyncio.wait_for(ws.recv(), 5), 0) for _ in range(2)]
    [liquidation] = results[0].events
    assert isinstance(liquidation, Liquidation)
    assert (liquidation.symbol, liquidation.liquidated_side) == ("ROSEUSDT", "short")
    assert [type(e).__name__ for e in results[1].events] == ["PriceTick", "PriceTick", "Funding"]


async def test_drop_all_closes_the_connection(fake: tuple[FakeBybit, ConnectionSpec]) -> None:
    server, spec = fake
    async with await subscribed(spec) as ws:
        await recv_json(ws)
        await server.drop_all()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert server.subscriptions == set()
    assert server.connections == set()
