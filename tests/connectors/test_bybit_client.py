"""connection_specs: URLs, subscribe batching, the args budget, keepalive."""

from __future__ import annotations

import json

import pytest

from connectors.base import Instrument, Keepalive
from connectors.bybit.client import (
    ARGS_CHARS_PER_CONNECTION,
    TOPICS_PER_MESSAGE,
    connection_specs,
    topics_for,
)
from connectors.bybit.parse import BybitParser


def instruments(n: int, width: int = 7) -> list[Instrument]:
    return [Instrument("bybit", f"S{i:0{width - 1}d}", f"A{i}", "crypto") for i in range(n)]


def test_default_universe_like_spec() -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "XAUUSDT", "SPYUSDT", "QQQUSDT"]
    insts = [Instrument("bybit", s, s[:3], "crypto") for s in symbols]
    [spec] = connection_specs(insts)
    assert spec.url == "wss://stream.bybit.com/v5/public/linear"
    assert (spec.name, spec.venue) == ("bybit-linear-0", "bybit")
    topics = [t for s in symbols for t in (f"allLiquidation.{s}", f"tickers.{s}")]
    assert spec.channels == tuple(topics)
    assert [json.loads(m) for m in spec.subscribe] == [
        {"req_id": "sub-0-0", "op": "subscribe", "args": topics[:10]},
        {"req_id": "sub-0-1", "op": "subscribe", "args": topics[10:]},
    ]
    assert spec.subscribe_ack_expected == 2
    assert spec.keepalive == Keepalive("json_ping", 20.0, '{"req_id":"{n}","op":"ping"}')
    assert json.loads(spec.keepalive.payload.replace("{n}", "12")) == {
        "req_id": "12",
        "op": "ping",
    }
    assert (spec.stale_after_s, spec.max_lifetime_s) == (60.0, None)
    parser = spec.parser_factory()
    assert isinstance(parser, BybitParser)
    assert parser is not spec.parser_factory()  # fresh ticker state per connection


@pytest.mark.parametrize(
    "base",
    ["ws://127.0.0.1:8765", "ws://127.0.0.1:8765/", "ws://127.0.0.1:8765/v5/public/linear"],
)
def test_base_url_override(base: str) -> None:
    [spec] = connection_specs(instruments(1), ws_base_url=base)
    assert spec.url == "ws://127.0.0.1:8765/v5/public/linear"


def test_base_url_must_be_websocket() -> None:
    with pytest.raises(ValueError, match="must start with ws:// or wss://"):
        connection_specs(instruments(1), ws_base_url="https://stream.bybit.com")


def test_topics_are_deduplicated() -> None:
    btc = Instrument("bybit", "BTCUSDT", "BTC", "crypto")
    assert topics_for([btc, btc]) == ["allLiquidation.BTCUSDT", "tickers.BTCUSDT"]


def test_no_instruments_no_connections() -> None:
    assert connection_specs([]) == []


def test_large_universes_split_within_the_args_budget() -> None:
    insts = instruments(700, width=10)
    specs = connection_specs(insts)
    assert len(specs) > 1
    seen: list[str] = []
    for index, spec in enumerate(specs):
        args = [t for m in spec.subscribe for t in json.loads(m)["args"]]
        assert len(json.dumps(args, separators=(",", ":"))) <= ARGS_CHARS_PER_CONNECTION
        assert all(len(json.loads(m)["args"]) <= TOPICS_PER_MESSAGE for m in spec.subscribe)
        assert tuple(args) == spec.channels
        assert spec.subscribe_ack_expected == len(spec.subscribe)
        assert spec.name == f"bybit-linear-{index}"
        # both topics of a symbol share the connection (the ticker state and the liquidations)
        symbols = {t.partition(".")[2] for t in args}
        assert set(args) == {f"{k}.{s}" for s in symbols for k in ("allLiquidation", "tickers")}
        seen += args
    assert seen == topics_for(insts)
