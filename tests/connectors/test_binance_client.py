"""connection_specs: URLs after the 2026 split, streams, keepalive, lifetimes, chunking."""

from __future__ import annotations

import pytest

from connectors.base import Instrument, Keepalive
from connectors.binance import client
from connectors.binance.client import connection_specs, subscribe_message
from connectors.binance.parse import BinanceParser

BTC = Instrument("binance", "BTCUSDT", "BTC", "crypto")
XAU = Instrument("binance", "XAUUSDT", "GOLD", "metal", funding_interval_hours=8.0)


def test_production_market_connection() -> None:
    (spec,) = connection_specs([BTC, XAU])
    assert spec.name == "binance-market-0"
    assert spec.venue == "binance"
    assert spec.url == (
        "wss://fstream.binance.com/market/stream?streams="
        "!forceOrder@arr/!markPrice@arr@1s/btcusdt@aggTrade/xauusdt@aggTrade"
    )
    assert spec.channels == ("forceOrder", "markPrice", "aggTrade")
    assert spec.subscribe == ()  # the streams ride in the URL
    assert spec.subscribe_ack_expected == 0
    assert spec.keepalive == Keepalive(kind="server_ping", interval_s=180.0)
    assert spec.max_lifetime_s == 24 * 3600
    assert spec.stale_after_s == 10.0


def test_book_ticker_adds_a_public_connection() -> None:
    market, public = connection_specs([BTC, XAU], "ws://127.0.0.1:9/", book_ticker=True)
    assert market.url.startswith("ws://127.0.0.1:9/market/stream?streams=!forceOrder@arr/")
    assert public.name == "binance-public-0"
    assert (
        public.url == "ws://127.0.0.1:9/public/stream?streams=btcusdt@bookTicker/xauusdt@bookTicker"
    )
    assert public.channels == ("bookTicker",)
    assert public.stale_after_s == 30.0
    assert public.max_lifetime_s == 24 * 3600
    assert public.keepalive.kind == "server_ping"


def test_parser_factory_gives_a_fresh_parser_for_the_instruments() -> None:
    (spec,) = connection_specs([BTC])
    first, second = spec.parser_factory(), spec.parser_factory()
    assert isinstance(first, BinanceParser)
    assert first is not second
    frame = '{"stream":"xauusdt@aggTrade","data":{"e":"aggTrade","s":"XAUUSDT","p":"1","T":1}}'
    assert first.parse(frame, 0).filtered == 1  # XAUUSDT is not among this spec's instruments


def test_many_symbols_are_split_across_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_STREAMS_PER_CONNECTION", 3)
    instruments = [Instrument("binance", f"C{n}USDT", f"C{n}", "crypto") for n in range(5)]
    specs = connection_specs(instruments, book_ticker=True)
    assert [s.name for s in specs] == [
        "binance-market-0",
        "binance-market-1",
        "binance-market-2",
        "binance-public-0",
        "binance-public-1",
    ]
    streams = [s.url.split("streams=")[1].split("/") for s in specs]
    assert streams == [
        ["!forceOrder@arr", "!markPrice@arr@1s", "c0usdt@aggTrade"],
        ["c1usdt@aggTrade", "c2usdt@aggTrade", "c3usdt@aggTrade"],
        ["c4usdt@aggTrade"],
        ["c0usdt@bookTicker", "c1usdt@bookTicker", "c2usdt@bookTicker"],
        ["c3usdt@bookTicker", "c4usdt@bookTicker"],
    ]
    assert specs[1].channels == ("aggTrade",)


def test_no_instruments_no_connections() -> None:
    assert connection_specs([]) == []


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("wss://fstream.binance.com/ws", "has a path"),
        ("wss://fstream.binance.com/stream", "legacy /ws and /stream paths were retired"),
        ("https://fstream.binance.com", "must look like wss://"),
        ("fstream.binance.com", "must look like wss://"),
        ("wss://", "must look like wss://"),
    ],
)
def test_bad_base_url(base: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connection_specs([BTC], base)


def test_subscribe_message() -> None:
    assert subscribe_message(["btcusdt@aggTrade", "!forceOrder@arr"], 3) == (
        '{"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "!forceOrder@arr"], "id": 3}'
    )
    with pytest.raises(ValueError, match="unsigned"):
        subscribe_message(["btcusdt@aggTrade"], -1)
