"""OkxParser against the recorded OKX frames: every field of every event, both liquidation
polarities, batches, every reject reason, filtering, and fuzzing that the parser never raises.

Expected values are worked out by hand from the frames (written out in the comments)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Instrument, ParseResult
from connectors.okx.parse import MAX_FRAME_BYTES, OkxParser
from streams.events import Funding, Liquidation, PriceTick, decode, encode
from tests.connectors.fake_okx import okx_fixture

TS_RECV = 1_760_000_000_123_456_789

# contract_size values: BTC-USDT-SWAP 0.01 BTC and XAU-USDT-SWAP 0.001 XAU are OKX's ctVal;
# 1000 IOST per IOST-USDT-SWAP contract is a test value (the docs frame's instrument).
IOST = Instrument("okx", "IOST-USDT-SWAP", "IOST", "crypto", contract_size=1000.0)
BTC = Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", contract_size=0.01)
XAU = Instrument("okx", "XAU-USDT-SWAP", "GOLD", "metal", 0.001, funding_interval_hours=8.0)
BTC_INVERSE = Instrument("okx", "BTC-USD-SWAP", "BTC", "crypto", contract_size=100.0)
BTC_XPERP = Instrument("okx", "BTC-USD_UM_XPERP-310404", "BTC", "crypto")
LTC_FUT = Instrument("okx", "LTC-USD-190628", "LTC", "crypto")
BTC_SPOT = Instrument("okx", "BTC-USDT", "BTC", "crypto")
UNI = Instrument("okx", "UNI-USD-SWAP", "UNI", "crypto")
ALL = [IOST, BTC, XAU, BTC_INVERSE, BTC_XPERP, LTC_FUT, BTC_SPOT, UNI]


@pytest.fixture
def parser() -> OkxParser:
    return OkxParser(ALL)


def frame(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(okx_fixture(name))
    return loaded


def parse(parser: OkxParser, msg: dict[str, Any] | str | bytes) -> ParseResult:
    raw = msg if isinstance(msg, str | bytes) else json.dumps(msg)
    return parser.parse(raw, TS_RECV)


def liq(
    inst: Instrument, ts_ms: int, side: str, price: float, qty: float, notional: float
) -> Liquidation:
    return Liquidation(
        venue="okx", symbol=inst.symbol, asset=inst.asset, asset_class=inst.asset_class,
        ts_event_ns=ts_ms * 1_000_000, ts_recv_ns=TS_RECV, liquidated_side=side,  # type: ignore[arg-type]
        price=price, qty_base=qty, notional_usd=notional, completeness="sampled",
    )  # fmt: skip


def assert_liquidations_equal(got: list[Any], want: list[Liquidation]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, Liquidation)
        assert (g.venue, g.symbol, g.asset, g.asset_class) == (
            w.venue,
            w.symbol,
            w.asset,
            w.asset_class,
        )
        assert (g.ts_event_ns, g.ts_recv_ns) == (w.ts_event_ns, w.ts_recv_ns)
        assert (g.liquidated_side, g.completeness) == (w.liquidated_side, w.completeness)
        assert g.price == w.price
        assert g.qty_base == pytest.approx(w.qty_base, rel=1e-12, abs=0)
        assert g.notional_usd == pytest.approx(w.notional_usd, rel=1e-12, abs=0)
        assert decode(Liquidation, encode(g)) == g  # valid against the event schema


# ---------------------------------------------------------------- liquidations


def test_docs_liquidation_is_a_short_liquidated(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_liquidation-orders.json"))
    # posSide short, side buy: a buy order closed a short. 13 contracts × 1000 = 13000 IOST;
    # notional 13000 × 0.007831 = 101.803 USDT
    assert_liquidations_equal(
        res.events, [liq(IOST, 1692266434010, "short", 0.007831, 13000.0, 101.803)]
    )
    assert (res.rejects, res.control, res.filtered) == ([], None, 0)


def test_derived_long_liquidation(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_liquidation-orders_derived_long.json"))
    # posSide long, side sell: a sell order closed a long; same size and price
    assert_liquidations_equal(
        res.events, [liq(IOST, 1692266434010, "long", 0.007831, 13000.0, 101.803)]
    )
    assert (res.rejects, res.filtered) == ([], 0)


def test_batch_reads_every_detail_and_filters_other_instruments(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_liquidation-orders_derived_batch.json"))
    assert_liquidations_equal(
        res.events,
        [
            liq(IOST, 1692266434010, "short", 0.007831, 13000.0, 101.803),
            # net + sell → long; 20 × 1000 = 20000 IOST; 20000 × 0.007831 = 156.62
            liq(IOST, 1692266434510, "long", 0.007831, 20000.0, 156.62),
            # net + buy → short; 5 × 1000 = 5000 IOST; 5000 × 0.007840 = 39.2
            liq(IOST, 1692266435010, "short", 0.00784, 5000.0, 39.2),
            # long + sell; 250 × 0.01 = 2.5 BTC; 2.5 × 29012.3 = 72530.75
            liq(BTC, 1692266434777, "long", 29012.3, 2.5, 72530.75),
        ],
    )
    assert res.filtered == 1  # the DOGE-USDT-SWAP item
    assert res.rejects == []


def test_futures_liquidation_outside_the_universe_is_counted(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_liquidation-orders_futures_tardis.json"))
    assert (res.events, res.rejects, res.filtered) == ([], [], 1)


def test_gold_contract_size(parser: OkxParser) -> None:
    msg = frame("okx_liquidation-orders_derived_long.json")
    msg["data"][0]["instId"] = "XAU-USDT-SWAP"
    msg["data"][0]["details"][0].update(sz="1500", bkPx="4012.5")
    # 1500 contracts × 0.001 XAU = 1.5 XAU; 1.5 × 4012.5 = 6018.75
    res = parse(parser, msg)
    assert_liquidations_equal(res.events, [liq(XAU, 1692266434010, "long", 4012.5, 1.5, 6018.75)])
    assert res.events[0].asset == "GOLD"
    assert res.events[0].asset_class == "metal"


@pytest.mark.parametrize("pos_side", ["net", "", None])
def test_net_or_missing_pos_side_uses_the_order_side(parser: OkxParser, pos_side: Any) -> None:
    for side, want in (("sell", "long"), ("buy", "short")):
        msg = frame("okx_liquidation-orders.json")
        detail = msg["data"][0]["details"][0]
        detail["side"] = side
        if pos_side is None:
            del detail["posSide"]
        else:
            detail["posSide"] = pos_side
        (event,) = parse(parser, msg).events
        assert isinstance(event, Liquidation)
        assert event.liquidated_side == want


def test_unknown_extra_fields_are_tolerated(parser: OkxParser) -> None:
    msg = frame("okx_liquidation-orders.json")
    msg["extra"] = {"nested": [1, 2]}
    msg["arg"]["instFamily"] = "IOST-USDT"
    msg["data"][0]["newField"] = "x"
    msg["data"][0]["details"][0]["fillPx"] = "0.0079"
    msg["data"][0]["details"][0]["bkLoss"] = "12.5"
    res = parse(parser, msg)
    assert res.events == parse(parser, frame("okx_liquidation-orders.json")).events
    assert len(res.events) == 1
    assert res.rejects == []


# ---------------------------------------------------------------- funding


def test_docs_funding(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_funding-rate.json"))
    assert res.events == [
        Funding(
            venue="okx", symbol="BTC-USD-SWAP", asset="BTC", asset_class="crypto",
            ts_event_ns=1700724675402_000_000,  # ts (push time), 07:31:15 UTC
            ts_recv_ns=TS_RECV,
            rate=0.0001875391284828,
            interval_hours=8.0,  # 1700755200000 - 1700726400000 = 28_800_000 ms
            rate_annualized=0.0001875391284828 * 1095,  # × 24/8 × 365 = 0.2053553456886660
            next_funding_ts_ns=1700726400000_000_000,  # fundingTime: 08:00 UTC, the next one
            mark_price=None, open_interest_usd=None,
        )
    ]  # fmt: skip
    (event,) = res.events
    assert isinstance(event, Funding)
    assert event.rate_annualized == pytest.approx(0.205355345688666, rel=1e-12)
    assert (res.rejects, res.filtered) == ([], 0)


def test_xperp_funding(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_funding-rate_xperp_tardis.json"))
    (event,) = res.events
    assert isinstance(event, Funding)
    assert (event.venue, event.symbol, event.asset, event.asset_class) == (
        "okx", "BTC-USD_UM_XPERP-310404", "BTC", "crypto"
    )  # fmt: skip
    assert (event.ts_event_ns, event.ts_recv_ns) == (1785870855692_000_000, TS_RECV)
    assert event.rate == -0.0004270396398519
    assert event.interval_hours == 8.0  # 1785916800000 - 1785888000000 = 28_800_000 ms
    assert event.rate_annualized == pytest.approx(-0.4676084056378305, rel=1e-12)  # × 1095
    assert event.next_funding_ts_ns == 1785888000000_000_000  # fundingTime, after ts
    assert (event.mark_price, event.open_interest_usd) == (None, None)
    assert decode(Funding, encode(event)) == event


def _xau_funding(**fields: str) -> dict[str, Any]:
    msg = frame("okx_funding-rate.json")
    msg["arg"]["instId"] = msg["data"][0]["instId"] = "XAU-USDT-SWAP"
    msg["data"][0].update(fields)
    return msg


def test_funding_interval_from_the_frame_beats_the_instrument(parser: OkxParser) -> None:
    # a 4 h cycle: nextFundingTime = fundingTime + 14_400_000 ms; instrument says 8 h
    (event,) = parse(parser, _xau_funding(nextFundingTime="1700740800000")).events
    assert isinstance(event, Funding)
    assert event.interval_hours == 4.0
    assert event.rate_annualized == pytest.approx(0.0001875391284828 * 6 * 365, rel=1e-12)
    assert (event.asset, event.asset_class) == ("GOLD", "metal")


def test_funding_interval_falls_back_to_the_instrument(parser: OkxParser) -> None:
    (event,) = parse(parser, _xau_funding(nextFundingTime="")).events
    assert isinstance(event, Funding)
    assert event.interval_hours == 8.0
    assert event.next_funding_ts_ns == 1700726400000_000_000


def test_funding_without_any_interval_is_rejected(parser: OkxParser) -> None:
    msg = frame("okx_funding-rate.json")
    del msg["data"][0]["nextFundingTime"]  # and BTC_INVERSE has no funding_interval_hours
    res = parse(parser, msg)
    assert res.events == []
    assert [(r.reason, r.channel) for r in res.rejects] == [("missing_field", "funding-rate")]
    assert "nextFundingTime" in res.rejects[0].detail


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"nextFundingTime": "1700726400000"}, "absurd_value"),  # interval 0
        ({"nextFundingTime": "1700712000000"}, "absurd_value"),  # before fundingTime
        ({"nextFundingTime": "1700899200000"}, "absurd_value"),  # 48 h
        ({"fundingRate": ""}, "missing_field"),
        ({"fundingRate": "abc"}, "bad_type"),
        ({"fundingRate": "NaN"}, "absurd_value"),
        ({"fundingRate": "1e306"}, "absurd_value"),  # annualizes to inf
        ({"fundingTime": "17007264e5"}, "bad_type"),
        ({"ts": "1"}, "absurd_value"),
    ],
)
def test_funding_rejects(parser: OkxParser, fields: dict[str, str], reason: str) -> None:
    res = parse(parser, _xau_funding(**fields))
    assert res.events == []
    assert [(r.reason, r.channel) for r in res.rejects] == [(reason, "funding-rate")]


def test_negative_funding_rate_is_valid(parser: OkxParser) -> None:
    (event,) = parse(parser, _xau_funding(fundingRate="-0.00375")).events
    assert isinstance(event, Funding)
    assert event.rate == -0.00375
    assert event.rate_annualized == pytest.approx(-0.00375 * 1095, rel=1e-12)


# ---------------------------------------------------------------- prices


def test_docs_mark_price(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_mark-price.json"))
    assert res.events == [
        PriceTick(
            venue="okx", symbol="LTC-USD-190628", asset="LTC", asset_class="crypto",
            ts_event_ns=1597026383085_000_000, ts_recv_ns=TS_RECV, price=0.1, kind="mark",
        )
    ]  # fmt: skip
    assert (res.rejects, res.filtered) == ([], 0)


def test_docs_trade(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_trades.json"))
    assert res.events == [
        PriceTick(
            venue="okx", symbol="BTC-USDT", asset="BTC", asset_class="crypto",
            ts_event_ns=1630048897897_000_000, ts_recv_ns=TS_RECV, price=42219.9, kind="trade",
        )
    ]  # fmt: skip


def test_captured_2022_trade(parser: OkxParser) -> None:
    res = parse(parser, frame("okx_trades_2022.json"))
    assert res.events == [
        PriceTick(
            venue="okx", symbol="UNI-USD-SWAP", asset="UNI", asset_class="crypto",
            ts_event_ns=1652459215150_000_000, ts_recv_ns=TS_RECV, price=5.123, kind="trade",
        )
    ]  # fmt: skip


def test_trade_batch_keeps_order_and_survives_a_bad_trade(parser: OkxParser) -> None:
    msg = frame("okx_trades.json")
    first = msg["data"][0]
    msg["data"] = [
        first,
        dict(first, px="-1", tradeId="130639475"),
        dict(first, px="42220.1", ts="1630048897999", tradeId="130639476"),
        dict(first, instId="ETH-USDT"),
    ]
    res = parse(parser, msg)
    assert all(isinstance(e, PriceTick) and e.kind == "trade" for e in res.events)
    assert [(e.price, e.ts_event_ns) for e in res.events if isinstance(e, PriceTick)] == [
        (42219.9, 1630048897897_000_000),
        (42220.1, 1630048897999_000_000),
    ]
    assert [(r.reason, r.channel) for r in res.rejects] == [("absurd_value", "trades")]
    assert res.filtered == 1


# ---------------------------------------------------------------- protocol


def test_subscribe_ack(parser: OkxParser) -> None:
    res = parse(parser, okx_fixture("okx_subscribe_ack.json"))
    assert (res.control, res.events, res.rejects) == ("ack", [], [])


def test_venue_error(parser: OkxParser) -> None:
    res = parse(parser, okx_fixture("okx_error.json"))
    assert res.control == "error"
    assert res.events == []
    assert [r.reason for r in res.rejects] == ["venue_error"]
    assert res.rejects[0].detail.startswith("error 60012: Invalid request")


@pytest.mark.parametrize("raw", ["pong", b"pong"])
def test_pong(parser: OkxParser, raw: str | bytes) -> None:
    res = parser.parse(raw, TS_RECV)
    assert (res.control, res.events, res.rejects) == ("pong", [], [])


def test_notice_and_conn_count_are_info(parser: OkxParser) -> None:
    notice = {
        "event": "notice", "code": "64008", "connId": "a4d3ae55",
        "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
    }  # fmt: skip
    count = {"event": "channel-conn-count", "channel": "liquidation-orders", "connCount": "2"}
    for msg in (notice, count):
        res = parse(parser, msg)
        assert (res.control, res.events, res.rejects) == ("info", [], [])


def test_unsubscribe_ack(parser: OkxParser) -> None:
    res = parse(parser, {"event": "unsubscribe", "arg": {"channel": "trades", "instId": "X"}})
    assert (res.control, res.rejects) == ("ack", [])


# ---------------------------------------------------------------- rejects


def _batch() -> dict[str, Any]:
    return frame("okx_liquidation-orders_derived_batch.json")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("bkPx", None, "missing_field"),  # None = key deleted
        ("bkPx", "", "missing_field"),
        ("sz", "", "missing_field"),
        ("ts", "", "missing_field"),
        ("side", "", "missing_field"),
        ("sz", "abc", "bad_type"),
        ("sz", [13], "bad_type"),
        ("sz", True, "bad_type"),
        ("ts", "1692266434010.5", "bad_type"),
        ("ts", "²", "bad_type"),  # str.isdigit() is True, int() fails
        ("side", "hold", "bad_type"),
        ("side", 1, "bad_type"),
        ("posSide", "both", "bad_type"),
        ("bkPx", "NaN", "absurd_value"),
        ("bkPx", "inf", "absurd_value"),
        ("bkPx", "-0.007831", "absurd_value"),
        ("bkPx", "0", "absurd_value"),
        ("sz", "0", "absurd_value"),
        ("sz", "-13", "absurd_value"),
        ("sz", "1e306", "absurd_value"),  # × 1000 contracts overflows to inf
        ("ts", "1", "absurd_value"),
        ("posSide", "long", "absurd_value"),  # contradicts side buy
    ],
)
def test_one_bad_detail_rejects_only_itself(
    parser: OkxParser, field: str, value: Any, reason: str
) -> None:
    msg = _batch()
    detail = msg["data"][0]["details"][0]  # posSide short, side buy
    if value is None:
        del detail[field]
    else:
        detail[field] = value
    res = parse(parser, msg)
    assert [(r.reason, r.channel) for r in res.rejects] == [(reason, "liquidation-orders")]
    # the other two IOST details and the BTC item survive; DOGE is still filtered
    assert [(e.symbol, e.ts_event_ns // 1_000_000) for e in res.events] == [
        ("IOST-USDT-SWAP", 1692266434510),
        ("IOST-USDT-SWAP", 1692266435010),
        ("BTC-USDT-SWAP", 1692266434777),
    ]
    assert res.filtered == 1


def test_underflowing_notional_is_rejected(parser: OkxParser) -> None:
    msg = _batch()
    msg["data"][1]["details"][0].update(sz="1e-200", bkPx="1e-200")  # BTC: 1e-202 × 1e-200 = 0
    res = parse(parser, msg)
    assert [r.reason for r in res.rejects] == ["absurd_value"]
    assert len(res.events) == 3


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (42, "bad_type"),
        ("IOST-USDT-SWAP", "bad_type"),
        ({"details": []}, "missing_field"),  # no instId
        ({"instId": 7, "details": []}, "bad_type"),
        ({"instId": "BTC-USDT-SWAP"}, "missing_field"),  # no details
        ({"instId": "BTC-USDT-SWAP", "details": []}, "missing_field"),
        ({"instId": "BTC-USDT-SWAP", "details": {"sz": "1"}}, "bad_type"),
        ({"instId": "BTC-USDT-SWAP", "details": [None]}, "bad_type"),
    ],
)
def test_one_bad_item_rejects_only_itself(parser: OkxParser, item: Any, reason: str) -> None:
    msg = _batch()
    msg["data"].insert(1, item)
    res = parse(parser, msg)
    assert [(r.reason, r.channel) for r in res.rejects] == [(reason, "liquidation-orders")]
    assert len(res.events) == 4
    assert res.filtered == 1


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{}", "{", "", "[1, 2", '{"arg": NaN}', b'{"a": "\xed\xa0\x80"}', "\ud800"],
)
def test_malformed_json(parser: OkxParser, raw: str | bytes) -> None:
    res = parser.parse(raw, TS_RECV)
    assert [r.reason for r in res.rejects] == ["malformed_json"]
    assert (res.events, res.control) == ([], None)


@pytest.mark.parametrize("raw", ["[]", "42", '"pong"', "null"])
def test_non_object_top_level_is_malformed(parser: OkxParser, raw: str) -> None:
    assert [r.reason for r in parser.parse(raw, TS_RECV).rejects] == ["malformed_json"]


def test_deeply_nested_json_is_malformed_not_a_crash(parser: OkxParser) -> None:
    assert [r.reason for r in parser.parse("[" * 100_000, TS_RECV).rejects] == ["malformed_json"]


def test_oversize(parser: OkxParser) -> None:
    msg = json.dumps(frame("okx_mark-price.json"))
    exactly = msg + " " * (MAX_FRAME_BYTES - len(msg))  # 1 MiB exactly: still parsed
    assert len(parser.parse(exactly, TS_RECV).events) == 1
    assert len(parser.parse(exactly.encode(), TS_RECV).events) == 1
    over = exactly + " "
    for raw in (over, over.encode()):
        res = parser.parse(raw, TS_RECV)
        assert [r.reason for r in res.rejects] == ["oversize"]
        assert res.events == []
    # under 1 Mi characters, over 1 MiB of UTF-8 (each "é" is two bytes)
    wide = msg + "é" * ((MAX_FRAME_BYTES - len(msg)) // 2 + 1)
    assert len(wide) < MAX_FRAME_BYTES
    assert [r.reason for r in parser.parse(wide, TS_RECV).rejects] == ["oversize"]


@pytest.mark.parametrize(
    "msg",
    [
        {"foo": 1},
        {"arg": {"channel": "books5", "instId": "BTC-USDT-SWAP"}, "data": []},
        {"arg": "mark-price", "data": []},
        {"event": "login", "code": "0"},
        {"event": None},
        {"data": []},
    ],
)
def test_unknown_message(parser: OkxParser, msg: dict[str, Any]) -> None:
    res = parse(parser, msg)
    assert [r.reason for r in res.rejects] == ["unknown_message"]
    assert (res.events, res.control) == ([], None)


def test_data_that_is_not_a_list(parser: OkxParser) -> None:
    msg = frame("okx_mark-price.json")
    msg["data"] = msg["data"][0]
    res = parse(parser, msg)
    assert [(r.reason, r.channel) for r in res.rejects] == [("bad_type", "mark-price")]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("markPx", "", "missing_field"), ("markPx", "0", "absurd_value"), ("ts", 1.5, "bad_type")],
)
def test_mark_price_rejects(parser: OkxParser, field: str, value: Any, reason: str) -> None:
    msg = frame("okx_mark-price.json")
    msg["data"][0][field] = value
    res = parse(parser, msg)
    assert [(r.reason, r.channel) for r in res.rejects] == [(reason, "mark-price")]


def test_integer_timestamps_are_accepted(parser: OkxParser) -> None:
    msg = frame("okx_mark-price.json")
    msg["data"][0]["ts"] = 1597026383085
    (event,) = parse(parser, msg).events
    assert event.ts_event_ns == 1597026383085_000_000


def test_out_of_universe_items_are_counted_per_instrument() -> None:
    parser = OkxParser([BTC])
    res = parse(parser, frame("okx_liquidation-orders_derived_batch.json"))
    assert res.filtered == 2  # IOST (three details, one item) and DOGE
    assert [e.symbol for e in res.events] == ["BTC-USDT-SWAP"]
    assert parse(parser, frame("okx_mark-price.json")).filtered == 1
    assert parse(parser, frame("okx_funding-rate.json")).filtered == 1


# ---------------------------------------------------------------- fuzzing

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
FIXTURES = [
    "okx_liquidation-orders_derived_batch.json",
    "okx_funding-rate.json",
    "okx_mark-price.json",
    "okx_trades.json",
    "okx_subscribe_ack.json",
    "okx_error.json",
]


def _check(res: ParseResult) -> None:
    assert isinstance(res, ParseResult)
    for event in res.events:  # whatever gets through is a valid event
        if isinstance(event, Liquidation):
            assert decode(Liquidation, encode(event)) == event
        elif isinstance(event, Funding):
            assert decode(Funding, encode(event)) == event
        else:
            assert decode(PriceTick, encode(event)) == event


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_never_raise(raw: str | bytes) -> None:
    _check(OkxParser(ALL).parse(raw, TS_RECV))


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_random_json_never_raises(value: Any) -> None:
    _check(OkxParser(ALL).parse(json.dumps(value), TS_RECV))


def _leaf_paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [path] + [p for k, v in obj.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(obj, list):
        return [path] + [p for i, v in enumerate(obj) for p in _leaf_paths(v, (*path, i))]
    return [path]


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(FIXTURES), data=st.data(), value=JSON)
def test_mutated_fixtures_never_raise(name: str, data: st.DataObject, value: Any) -> None:
    msg = frame(name)
    paths = [p for p in _leaf_paths(msg) if p]
    path = data.draw(st.sampled_from(paths))
    target = msg
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = copy.deepcopy(value)
    _check(OkxParser(ALL).parse(json.dumps(msg), TS_RECV))


def test_reject_channel_is_a_bounded_label(parser: OkxParser) -> None:
    error = {"event": "error", "code": "60018", "msg": "x", "arg": {"channel": "evil-" * 50}}
    known = {"event": "error", "code": "60018", "msg": "x", "arg": {"channel": "mark-price"}}
    push = {"arg": {"channel": "evil-" * 50}, "data": []}
    assert [r.channel for r in parse(parser, error).rejects] == ["unknown"]
    assert [r.channel for r in parse(parser, known).rejects] == ["mark-price"]
    assert [r.channel for r in parse(parser, push).rejects] == ["unknown"]
