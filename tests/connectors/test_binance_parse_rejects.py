"""BinanceParser rejects: each reason, with the rest of a batch surviving the bad item."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.base import Instrument
from connectors.binance.parse import MAX_FRAME_BYTES, BinanceParser, stream_channel
from tests.connectors.binance_cases import (
    BTC,
    CTK_TRADE,
    ETH_SHORT_LIQ,
    RECV,
    fixture,
    fixture_doc,
    make_parser,
    only_events,
    parse,
)


@pytest.fixture
def parser() -> BinanceParser:
    return make_parser()


# --- rejects --------------------------------------------------------------------------------


def liq_batch(mutate_first: Any) -> dict[str, Any]:
    """The array batch with its first (BTCUSDT) item mutated; ETHUSDT and DOGEUSDT intact."""
    doc: dict[str, Any] = fixture_doc("binance_forceOrder_derived_arr_combined.json")
    mutate_first(doc["data"][0])
    return doc


@pytest.mark.parametrize(
    ("mutate", "reason", "detail"),
    [
        (lambda i: i["o"].pop("z"), "missing_field", "item 0: BTCUSDT: o.z is missing or empty"),
        (lambda i: i["o"].update(ap=""), "missing_field", "item 0: BTCUSDT: o.ap is missing"),
        (lambda i: i.pop("o"), "missing_field", "item 0: o is missing or empty"),
        (lambda i: i["o"].pop("s"), "missing_field", "item 0: o.s is missing or empty"),
        (lambda i: i.update(o=[1]), "bad_type", "item 0: o must be an object, got list"),
        (lambda i: i["o"].update(z=[1]), "bad_type", "item 0: BTCUSDT: o.z must be a number"),
        (lambda i: i["o"].update(z="abc"), "bad_type", "item 0: BTCUSDT: o.z is not a number"),
        (lambda i: i["o"].update(S="LONG"), "bad_type", "item 0: BTCUSDT: o.S is 'LONG'"),
        (lambda i: i["o"].update(T="soon"), "bad_type", "item 0: BTCUSDT: o.T is not integer"),
        (lambda i: i["o"].update(ap="NaN"), "absurd_value", "item 0: BTCUSDT: o.ap is nan"),
        (lambda i: i["o"].update(ap="-9910"), "absurd_value", "item 0: BTCUSDT: o.ap is -9910"),
        (lambda i: i["o"].update(ap="inf"), "absurd_value", "item 0: BTCUSDT: o.ap is inf"),
        (lambda i: i["o"].update(z="0"), "absurd_value", "item 0: BTCUSDT: o.z is 0 (X=FILLED)"),
        (lambda i: i["o"].update(z="-0.1"), "absurd_value", "item 0: BTCUSDT: o.z is -0.1"),
        (lambda i: i["o"].update(z="1e300", ap="1e300"), "absurd_value", "notional z*ap is inf"),
        (lambda i: i["o"].update(T=5), "absurd_value", "item 0: BTCUSDT: o.T=5 is not"),
        (lambda i: i.update(e="aggTrade"), "unknown_message", "item 0: event type e='aggTrade'"),
    ],
)
def test_bad_liquidation_item_is_rejected_rest_of_batch_survives(
    parser: BinanceParser, mutate: Any, reason: str, detail: str
) -> None:
    result = parse(parser, liq_batch(mutate))
    (reject,) = result.rejects
    assert reject.reason == reason
    assert detail in reject.detail
    assert reject.channel == "forceOrder"
    assert result.events == [ETH_SHORT_LIQ]
    assert result.filtered == 1


def mark_batch(mutate_first: Any) -> dict[str, Any]:
    doc: dict[str, Any] = fixture_doc("binance_markPrice_derived_arr_combined.json")
    mutate_first(doc["data"][0])
    return doc


@pytest.mark.parametrize(
    ("mutate", "reason", "detail"),
    [
        (lambda i: i.pop("E"), "missing_field", "item 0: BTCUSDT: E is missing"),
        (lambda i: i.update(p=""), "missing_field", "item 0: BTCUSDT: p is missing"),
        (lambda i: i.update(s=7), "bad_type", "item 0: s must be a string, got int"),
        (lambda i: i.update(r=True), "bad_type", "item 0: BTCUSDT: r must be a number"),
        (lambda i: i.update(T=False), "bad_type", "item 0: BTCUSDT: T must be integer"),
        (lambda i: i.update(p="-1"), "absurd_value", "item 0: BTCUSDT: p is -1"),
        (lambda i: i.update(i="0"), "absurd_value", "item 0: BTCUSDT: i is 0"),
        (lambda i: i.update(r="1.5"), "absurd_value", "item 0: BTCUSDT: r is 1.5"),
        (lambda i: i.update(r="nan"), "absurd_value", "item 0: BTCUSDT: r is nan"),
    ],
)
def test_bad_mark_item_is_rejected_rest_of_batch_survives(
    parser: BinanceParser, mutate: Any, reason: str, detail: str
) -> None:
    result = parse(parser, mark_batch(mutate))
    (reject,) = result.rejects
    assert (reject.reason, reject.channel) == (reason, "markPrice")
    assert detail in reject.detail
    assert [e.symbol for e in result.events] == ["XAUUSDT"] * 3
    assert result.filtered == 1


def test_non_object_item_in_batch(parser: BinanceParser) -> None:
    doc = fixture_doc("binance_markPrice_derived_arr_combined.json")
    doc["data"].insert(0, 42)
    result = parse(parser, doc)
    (reject,) = result.rejects
    assert (reject.reason, reject.channel) == ("bad_type", "markPrice")
    assert reject.detail == "item 0: a int, expected an event object"
    assert len(result.events) == 6


def test_crossed_book_is_absurd(parser: BinanceParser) -> None:
    doc = fixture_doc("binance_bookTicker_combined.json")
    doc["data"]["b"] = "7.6130"
    (reject,) = parse(parser, doc).rejects
    assert (reject.reason, reject.channel) == ("absurd_value", "bookTicker")
    assert reject.detail == "SUSHIUSDT: crossed book: bid b=7.613 > ask a=7.612"


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ('{"e":"forceOrder"', "not UTF-8 JSON"),
        (b'{"s":"\xff\xfe"}', "not UTF-8 JSON"),
        ('{"s":"\ud800"}', "not UTF-8 JSON"),
        ('{"p": NaN}', "not UTF-8 JSON"),
        ("", "not UTF-8 JSON"),
        ("42", "top level is a int"),
        ('"ping"', "top level is a str"),
        ("null", "top level is a NoneType"),
        ('{"stream": 5, "data": {}}', "stream must be a string, got int"),
        ('{"stream": "btcusdt@aggTrade", "data": 5}', "is a int, expected object/list"),
    ],
)
def test_malformed(parser: BinanceParser, raw: str | bytes, detail: str) -> None:
    result = parser.parse(raw, RECV)
    (reject,) = result.rejects
    assert reject.reason == "malformed_json"
    assert detail in reject.detail
    assert result.events == []


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ({"foo": 1}, "no known frame type; keys foo"),
        ({"e": "kline", "s": "BTCUSDT"}, "event type e='kline'"),
        ({"e": 7}, "event type e='7'"),
        ({"stream": "btcusdt@depth", "data": {}}, "unknown stream 'btcusdt@depth'"),
        ([{"s": "BTCUSDT"}], "no event type e"),
    ],
)
def test_unknown_message(parser: BinanceParser, frame: Any, detail: str) -> None:
    result = parse(parser, frame)
    (reject,) = result.rejects
    assert reject.reason == "unknown_message"
    assert detail in reject.detail


def test_item_without_e_is_read_by_its_stream(parser: BinanceParser) -> None:
    doc = fixture_doc("binance_aggTrade_combined.json")
    del doc["data"]["e"]
    assert only_events(parse(parser, doc)) == [CTK_TRADE]


def test_oversize(parser: BinanceParser) -> None:
    pad = "x" * MAX_FRAME_BYTES
    (reject,) = parser.parse('{"pad":"' + pad + '"}', RECV).rejects
    assert reject.reason == "oversize"
    (reject,) = parser.parse(('{"pad":"' + pad + '"}').encode(), RECV).rejects
    assert reject.reason == "oversize"
    # 600k two-byte characters: fewer characters than the limit, more bytes
    wide = '{"e":"aggTrade","pad":"' + "é" * 600_000 + '"}'
    assert len(wide) < MAX_FRAME_BYTES < len(wide.encode())
    assert parser.parse(wide, RECV).rejects[0].reason == "oversize"
    under = fixture("binance_aggTrade.json").replace('{"e"', '{"pad":"' + "é" * 400_000 + '","e"')
    assert 800_000 < len(under.encode()) < MAX_FRAME_BYTES  # under the limit: parsed normally
    assert only_events(parser.parse(under, RECV)) == [CTK_TRADE]


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instruments", "message"),
    [
        ([Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto")], "is for venue 'okx'"),
        ([BTC, BTC], "listed twice"),
        ([Instrument("binance", "BTCUSDT", "BTC", "crypto", contract_size=0.0)], "contract_size"),
        ([Instrument("binance", "BTCUSDT", "BTC", "crypto", funding_interval_hours=48.0)], "24"),
    ],
)
def test_bad_instruments_are_refused(instruments: list[Instrument], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BinanceParser(instruments)


@pytest.mark.parametrize(
    ("stream", "channel"),
    [
        ("!forceOrder@arr", "forceOrder"),
        ("btcusdt@forceOrder", "forceOrder"),
        ("!markPrice@arr@1s", "markPrice"),
        ("xauusdt@markPrice@1s", "markPrice"),
        ("btcusdt@aggTrade", "aggTrade"),
        ("btcusdt@bookTicker", "bookTicker"),
        ("!bookTicker", "bookTicker"),
        ("btcusdt@trade", None),
        ("btcusdt", None),
        ("", None),
    ],
)
def test_stream_channel(stream: str, channel: str | None) -> None:
    assert stream_channel(stream) == channel
