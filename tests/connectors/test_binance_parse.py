"""BinanceParser on the recorded fixtures: every field of every event, control frames, tolerance.

Expected values are computed by hand from the frames (the arithmetic is written out).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from connectors.base import Instrument
from connectors.binance.parse import BinanceParser
from streams.events import Funding, Liquidation, PriceTick
from tests.connectors.binance_cases import (
    BTC,
    BTC_LONG_LIQ,
    BTC_MARK_DOCS,
    CTK_TRADE,
    ETH_SHORT_LIQ,
    RECV,
    XAU,
    fixture,
    fixture_doc,
    make_parser,
    mark_events,
    only_events,
    parse,
)


@pytest.fixture
def parser() -> BinanceParser:
    return make_parser()


def test_force_order_sell_is_a_long_liquidation(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_forceOrder.json"))
    assert only_events(result) == [BTC_LONG_LIQ]
    assert result.filtered == 0
    liq = result.events[0]
    assert isinstance(liq, Liquidation)
    assert liq.notional_usd == pytest.approx(138.74, abs=1e-9)


def test_force_order_buy_is_a_short_liquidation(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_forceOrder_derived_buy.json"))
    expected = copy.copy(BTC_LONG_LIQ)
    object.__setattr__(expected, "liquidated_side", "short")
    assert only_events(result) == [expected]


def test_force_order_uses_accumulated_qty_and_average_price(parser: BinanceParser) -> None:
    # q=0.020 (order), l=0.004 (last fill), z=0.014 (filled total); p=9910 (limit), ap=9915.3
    result = parse(parser, fixture("binance_forceOrder_derived_partial.json"))
    (liq,) = only_events(result)
    assert liq == Liquidation(
        venue="binance",
        symbol="BTCUSDT",
        asset="BTC",
        asset_class="crypto",
        ts_event_ns=1_568_014_460_893_000_000,
        ts_recv_ns=RECV,
        liquidated_side="long",
        price=9915.3,
        qty_base=0.014,
        notional_usd=0.014 * 9915.3,
        completeness="sampled",
    )
    assert liq.notional_usd == pytest.approx(138.8142, abs=1e-9)


def test_force_order_time_is_trade_time_not_event_time(parser: BinanceParser) -> None:
    doc = fixture_doc("binance_forceOrder.json")
    doc["E"] = 1_568_014_461_500  # pushed 607 ms after the fill
    (liq,) = only_events(parse(parser, doc))
    assert liq.ts_event_ns == 1_568_014_460_893_000_000


def test_force_order_combined_single_object(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_forceOrder_derived_combined.json"))
    assert only_events(result) == [BTC_LONG_LIQ]


def test_force_order_combined_array_batch_filters_other_symbols(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_forceOrder_derived_arr_combined.json"))
    assert only_events(result) == [BTC_LONG_LIQ, ETH_SHORT_LIQ]
    assert result.filtered == 1  # DOGEUSDT


def test_force_order_contract_size_is_applied() -> None:
    sized = Instrument(
        venue="binance", symbol="BTCUSDT", asset="BTC", asset_class="crypto", contract_size=10.0
    )
    (liq,) = only_events(parse(BinanceParser([sized]), fixture("binance_forceOrder.json")))
    assert liq.qty_base == pytest.approx(0.14, abs=1e-12)  # 0.014 * 10
    assert liq.notional_usd == pytest.approx(1387.4, abs=1e-9)  # 0.14 * 9910


def test_unfilled_force_order_is_rejected_not_a_zero_event(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_forceOrder_derived_unfilled.json"))
    assert result.events == []
    (reject,) = result.rejects
    assert reject.reason == "absurd_value"
    assert reject.channel == "forceOrder"
    assert "BTCUSDT: o.z is 0 (X=EXPIRED)" in reject.detail


# --- mark price and funding -----------------------------------------------------------------


def test_mark_price_raw(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_markPrice.json"))
    assert only_events(result) == BTC_MARK_DOCS
    funding = result.events[2]
    assert isinstance(funding, Funding)
    assert funding.rate_annualized == pytest.approx(0.41792865, abs=1e-12)


def test_mark_price_combined(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_markPrice_combined.json"))
    expected = mark_events(
        BTC,
        e_ms=1_597_536_008_000,
        mark=11857.56,
        index=11851.86949091,
        rate=0.00015640,
        annualized=0.00015640 * 3 * 365,
        next_ms=1_597_564_800_000,
    )
    assert only_events(result) == expected
    funding = result.events[2]
    assert isinstance(funding, Funding)
    assert funding.rate_annualized == pytest.approx(0.171258, abs=1e-12)


def test_mark_price_array_uses_each_instruments_interval(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_markPrice_derived_arr_combined.json"))
    xau = mark_events(
        XAU,
        e_ms=1_562_305_380_000,
        mark=11794.15,
        index=11784.62659091,
        rate=-0.000125,
        annualized=-0.000125 * 6 * 365,  # 4 h interval: 6 settlements a day
        next_ms=1_562_306_400_000,
    )
    assert only_events(result) == BTC_MARK_DOCS + xau
    funding = result.events[5]
    assert isinstance(funding, Funding)
    assert funding.rate_annualized == pytest.approx(-0.27375, abs=1e-12)
    assert result.filtered == 1  # DOGEUSDT


def test_mark_price_raw_array(parser: BinanceParser) -> None:
    items = fixture_doc("binance_markPrice_derived_arr_combined.json")["data"]
    result = parse(parser, items)  # a /ws connection sends the bare list
    assert [e.symbol for e in only_events(result)] == ["BTCUSDT"] * 3 + ["XAUUSDT"] * 3
    assert result.filtered == 1


def test_delivery_style_mark_price_has_no_funding(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_markPrice_derived_delivery.json"))
    assert only_events(result) == BTC_MARK_DOCS[:2]  # mark and index, no Funding


def test_mark_price_without_index_or_with_empty_index(parser: BinanceParser) -> None:
    doc = fixture_doc("binance_markPrice.json")
    doc["i"] = ""
    assert only_events(parse(parser, doc)) == [BTC_MARK_DOCS[0], BTC_MARK_DOCS[2]]
    del doc["i"]
    assert only_events(parse(parser, doc)) == [BTC_MARK_DOCS[0], BTC_MARK_DOCS[2]]


# --- trades and book ticker -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["binance_aggTrade.json", "binance_aggTrade_combined.json"])
def test_agg_trade(parser: BinanceParser, name: str) -> None:
    assert only_events(parse(parser, fixture(name))) == [CTK_TRADE]


def test_book_ticker_mid(parser: BinanceParser) -> None:
    (tick,) = only_events(parse(parser, fixture("binance_bookTicker_combined.json")))
    assert tick == PriceTick(
        venue="binance",
        symbol="SUSHIUSDT",
        asset="SUSHI",
        asset_class="crypto",
        ts_event_ns=1_626_992_741_012_000_000,  # T, not E (…017)
        ts_recv_ns=RECV,
        price=(7.6110 + 7.6120) / 2,
        kind="mid",
    )
    assert tick.price == pytest.approx(7.6115, abs=1e-12)


def test_raw_book_ticker(parser: BinanceParser) -> None:
    data = fixture_doc("binance_bookTicker_combined.json")["data"]
    (tick,) = only_events(parse(parser, data))
    assert (tick.symbol, tick.kind, tick.ts_event_ns) == ("SUSHIUSDT", "mid", 1626992741012000000)


# --- control frames -------------------------------------------------------------------------


def test_subscribe_ack(parser: BinanceParser) -> None:
    result = parse(parser, fixture("binance_subscribe_response.json"))
    assert (result.control, result.events, result.rejects) == ("ack", [], [])


def test_list_subscriptions_is_info(parser: BinanceParser) -> None:
    result = parse(parser, {"result": ["btcusdt@aggTrade"], "id": 3})
    assert (result.control, result.events, result.rejects) == ("info", [], [])


@pytest.mark.parametrize(
    "frame",
    [
        {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
        {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}},
    ],
)
def test_venue_error(parser: BinanceParser, frame: dict[str, Any]) -> None:
    result = parse(parser, frame)
    assert result.control == "error"
    assert result.events == []
    (reject,) = result.rejects
    assert (reject.reason, reject.channel) == ("venue_error", "control")
    assert reject.detail == "code=2 msg=Invalid request: request ID must be an unsigned integer"


# --- tolerance ------------------------------------------------------------------------------


def test_unknown_extra_fields_are_ignored(parser: BinanceParser) -> None:
    doc = fixture_doc("binance_forceOrder_derived_combined.json")
    doc["extra"] = {"nested": [1, None]}
    doc["data"]["zz"] = "new"
    doc["data"]["o"]["nq"] = "0.001"
    assert only_events(parse(parser, doc)) == [BTC_LONG_LIQ]
    mark = fixture_doc("binance_markPrice.json")
    mark.update(ap="11790.0", st=1)
    assert only_events(parse(parser, mark)) == BTC_MARK_DOCS


def test_bytes_input(parser: BinanceParser) -> None:
    raw = fixture("binance_forceOrder.json").encode()
    assert only_events(parser.parse(raw, RECV)) == [BTC_LONG_LIQ]


def test_out_of_universe_items_are_filtered_not_rejected() -> None:
    parser = BinanceParser([BTC])
    result = parse(parser, fixture("binance_aggTrade.json"))
    assert (result.events, result.rejects, result.filtered) == ([], [], 1)
    broken = fixture_doc("binance_aggTrade.json")
    broken["p"] = "NaN"  # not read for a symbol outside the universe
    assert parse(parser, broken).filtered == 1
