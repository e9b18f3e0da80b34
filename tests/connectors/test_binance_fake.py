"""FakeBinance speaks Binance's market-stream protocol to a raw websockets client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connectors.base import Instrument
from connectors.binance.client import connection_specs, subscribe_message
from connectors.binance.parse import BinanceParser
from streams.events import Liquidation
from tests.connectors.binance_cases import fixture_doc
from tests.connectors.fake_binance import FakeBinance

BTC = Instrument("binance", "BTCUSDT", "BTC", "crypto")
XAU = Instrument("binance", "XAUUSDT", "GOLD", "metal")
MARKET_STREAMS = {"!forceOrder@arr", "!markPrice@arr@1s", "btcusdt@aggTrade", "xauusdt@aggTrade"}


class ServedFake(FakeBinance):
    """A FakeBinance that remembers its URL."""

    url = ""


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop, not the session's
async def fake() -> AsyncIterator[ServedFake]:
    server = ServedFake(server_ping_interval_s=0.05)
    server.url = await server.start()
    yield server
    await server.stop()


def base(fake: FakeBinance) -> str:
    assert isinstance(fake, ServedFake)
    return fake.url


async def recv_json(ws: ClientConnection) -> object:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_specs_subscribe_through_the_url_and_frames_arrive_wrapped(fake: FakeBinance) -> None:
    market, public = connection_specs([BTC, XAU], base(fake), book_ticker=True)
    parser = BinanceParser([BTC, XAU])
    async with connect(market.url) as ws_market, connect(public.url) as ws_public:
        for message in market.subscribe + public.subscribe:  # none: streams ride in the URL
            await ws_market.send(message)
        await fake.wait_subscribed(MARKET_STREAMS | {"btcusdt@bookTicker", "xauusdt@bookTicker"})
        assert await fake.push("!forceOrder@arr", fixture_doc("binance_forceOrder.json")) == 1
        frame = await asyncio.wait_for(ws_market.recv(), 5)
        result = parser.parse(frame, 1)
        assert [type(e) for e in result.events] == [Liquidation]
        assert json.loads(frame)["stream"] == "!forceOrder@arr"
        book = fixture_doc("binance_bookTicker_combined.json")["data"]
        assert await fake.push("btcusdt@bookTicker", book) == 1  # only the /public connection
        assert json.loads(await ws_public.recv())["data"] == book
    assert sorted(fake.paths) == sorted(
        [market.url[len(base(fake)) :], public.url[len(base(fake)) :]]
    )


async def test_subscribe_message_gets_binance_ack(fake: FakeBinance) -> None:
    parser = BinanceParser([BTC])
    async with connect(f"{base(fake)}/market/stream") as ws:
        await ws.send(subscribe_message(["btcusdt@aggTrade", "!forceOrder@arr"], 7))
        ack = await asyncio.wait_for(ws.recv(), 5)
        assert json.loads(ack) == {"result": None, "id": 7}
        assert parser.parse(ack, 1).control == "ack"
        await fake.wait_subscribed({"btcusdt@aggTrade", "!forceOrder@arr"})
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        listing = await asyncio.wait_for(ws.recv(), 5)
        assert json.loads(listing) == {"result": ["!forceOrder@arr", "btcusdt@aggTrade"], "id": 8}
        assert parser.parse(listing, 1).control == "info"
        await ws.send(
            json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 9})
        )
        assert await recv_json(ws) == {"result": None, "id": 9}
        assert await fake.push("btcusdt@aggTrade", fixture_doc("binance_aggTrade.json")) == 0


@pytest.mark.parametrize(
    ("request_text", "code", "msg"),
    [
        (subscribe_message(["btcusdt@nonsense"], 1), 2, "unknown stream: 'btcusdt@nonsense'"),
        (subscribe_message(["BTCUSDT@aggTrade"], 1), 2, "unknown stream"),
        (subscribe_message(["btcusdt@bookTicker"], 1), 2, "stream served on /public"),
        ('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":-1}', 2, "unsigned integer"),
        ('{"method":"SUBSCRIB","params":[],"id":1}', 2, "unknown variant SUBSCRIB"),
        ('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"]', 3, "Invalid JSON"),
        ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}', 1, "expected Boolean"),
    ],
)
async def test_venue_errors(fake: FakeBinance, request_text: str, code: int, msg: str) -> None:
    parser = BinanceParser([BTC])
    async with connect(f"{base(fake)}/market/stream") as ws:
        await ws.send(request_text)
        frame = await asyncio.wait_for(ws.recv(), 5)
    error = json.loads(frame)
    assert error["code"] == code
    assert msg in error["msg"]
    result = parser.parse(frame, 1)
    assert result.control == "error"
    assert [r.reason for r in result.rejects] == ["venue_error"]


async def test_unknown_stream_in_url_gets_an_error_frame(fake: FakeBinance) -> None:
    async with connect(f"{base(fake)}/public/stream?streams=!forceOrder@arr") as ws:
        error = await recv_json(ws)
    assert error == {
        "code": 2,
        "msg": "Invalid request: stream served on /market: '!forceOrder@arr'",
    }


async def test_ws_mode_sends_raw_payloads_and_set_property(fake: FakeBinance) -> None:
    async with connect(f"{base(fake)}/market/ws/0/btcusdt@aggTrade") as ws:  # ccxt-style index
        await fake.wait_subscribed({"btcusdt@aggTrade"})
        trade = fixture_doc("binance_aggTrade.json")
        await fake.push("btcusdt@aggTrade", trade)
        assert await recv_json(ws) == trade  # raw: no envelope
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 1}))
        assert await recv_json(ws) == {"result": False, "id": 1}
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 2}))
        assert await recv_json(ws) == {"result": None, "id": 2}
        await fake.push("btcusdt@aggTrade", trade)
        assert await recv_json(ws) == {"stream": "btcusdt@aggTrade", "data": trade}


@pytest.mark.parametrize("path", ["/ws", "/ws/btcusdt@aggTrade", "/stream?streams=a@aggTrade", "/"])
async def test_legacy_paths_fail_the_handshake_with_404(fake: FakeBinance, path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(base(fake) + path):
            pass
    assert info.value.response.status_code == 404
    assert fake.rejected_paths == [path]


async def test_server_pings_are_answered_by_the_client(fake: FakeBinance) -> None:
    async with connect(f"{base(fake)}/market/stream", ping_interval=None) as ws:
        await fake.wait_connections(1)
        (server_side,) = fake.connections
        assert server_side.latency == 0  # no ping/pong round trip measured yet
        async with asyncio.timeout(5):
            while server_side.latency == 0:  # set when the client's pong comes back
                await asyncio.sleep(0.02)
        assert 0 < server_side.latency < 1
        assert ws.state.name == "OPEN"


async def test_send_pings_false_sends_no_pings() -> None:
    quiet = FakeBinance(send_pings=False, server_ping_interval_s=0.05)
    url = await quiet.start()
    try:
        assert quiet.server_ping_interval_s is None
        async with connect(f"{url}/market/stream", ping_interval=None):
            await quiet.wait_connections(1)
            await asyncio.sleep(0.3)  # six ping intervals of the pinging fake
            (server_side,) = quiet.connections
            assert server_side.latency == 0
    finally:
        await quiet.stop()


async def test_broadcast_reaches_every_connection(fake: FakeBinance) -> None:
    async with (
        connect(f"{base(fake)}/market/stream") as one,
        connect(f"{base(fake)}/public/ws") as two,
    ):
        await fake.wait_connections(2)
        assert await fake.broadcast('{"result":null,"id":1}') == 2
        assert await recv_json(one) == await recv_json(two) == {"result": None, "id": 1}


async def test_drop_all_closes_connections(fake: FakeBinance) -> None:
    async with connect(f"{base(fake)}/market/stream?streams=btcusdt@aggTrade") as ws:
        await fake.wait_subscribed({"btcusdt@aggTrade"})
        await fake.drop_all()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert fake.connections == set()
    assert fake.subscriptions == set()


async def test_max_lifetime_closes_with_going_away() -> None:
    short = FakeBinance(max_lifetime_s=0.2)
    url = await short.start()
    try:
        async with connect(f"{url}/market/stream") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
    finally:
        await short.stop()
