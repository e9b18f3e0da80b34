"""BybitParser against verbatim Bybit frames: every field of every event, and every reject."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Instrument, ParseResult, Reject
from connectors.bybit.parse import BUG_PREFIX, MAX_FRAME_BYTES, BybitParser
from streams.events import Funding, Liquidation, PriceTick, decode, encode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
RECV_NS = 1_760_400_000_123_456_789

BTC = Instrument("bybit", "BTCUSDT", "BTC", "crypto", funding_interval_hours=4.0)
ROSE = Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0)
SPY = Instrument("bybit", "SPYUSDT", "SPX", "equity", funding_interval_hours=4.0)
BTC_FUTURE = Instrument("bybit", "BTC-26DEC25", "BTC", "crypto")
UNIVERSE = (BTC, ROSE, SPY, BTC_FUTURE)


def frame(name: str) -> dict[str, Any]:
    """A fixture file as a dict (copy it freely: each call reads the file again)."""
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def parse(msg: dict[str, Any] | str | bytes, parser: BybitParser | None = None) -> ParseResult:
    """Parse ``msg`` (a dict is sent as compact JSON) and check the events are schema-valid."""
    raw = json.dumps(msg) if isinstance(msg, dict) else msg
    result = (parser or BybitParser(UNIVERSE)).parse(raw, RECV_NS)
    for event in result.events:
        event_type: Any = type(event)
        assert decode(event_type, encode(event)) == event
    assert not any(r.detail.startswith(BUG_PREFIX) for r in result.rejects)
    return result


def liquidation(**fields: Any) -> Liquidation:
    base: dict[str, Any] = {
        "venue": "bybit",
        "symbol": "ROSEUSDT",
        "asset": "ROSE",
        "asset_class": "crypto",
        "ts_recv_ns": RECV_NS,
        "completeness": "complete",
    }
    return Liquidation(**(base | fields))


def btc_event(cls: type[Any], **fields: Any) -> Any:
    base = {"venue": "bybit", "symbol": "BTCUSDT", "asset": "BTC", "asset_class": "crypto"}
    return cls(**base, ts_recv_ns=RECV_NS, **fields)


# -- allLiquidation ---------------------------------------------------------------------------


def test_all_liquidation_docs_frame_sell_is_a_short_liquidated() -> None:
    result = parse(frame("bybit_allLiquidation.json"))
    assert result.events == [
        liquidation(
            ts_event_ns=1_739_502_302_929_000_000,  # item T, not the frame's ts (…303204)
            liquidated_side="short",  # S=Sell is the POSITION side on Bybit
            price=0.04499,  # bankruptcy price p
            qty_base=20000.0,
            notional_usd=20000.0 * 0.04499,
        )
    ]
    assert (result.rejects, result.control, result.filtered) == ([], None, 0)


def test_all_liquidation_buy_is_a_long_liquidated() -> None:
    result = parse(frame("bybit_allLiquidation_derived_buy.json"))
    assert result.events == [
        liquidation(
            ts_event_ns=1_739_502_302_929_000_000,
            liquidated_side="long",
            price=0.04499,
            qty_base=20000.0,
            notional_usd=20000.0 * 0.04499,
        )
    ]


def test_all_liquidation_tardis_frame() -> None:
    pippin = Instrument("bybit", "PIPPINUSDT", "PIPPIN", "crypto")
    result = parse(frame("bybit_allLiquidation_tardis.json"), BybitParser([pippin]))
    assert result.events == [
        liquidation(
            symbol="PIPPINUSDT",
            asset="PIPPIN",
            ts_event_ns=1_740_480_207_110_000_000,
            liquidated_side="short",
            price=0.02456,
            qty_base=2846.0,
            notional_usd=2846.0 * 0.02456,
        )
    ]


def test_all_liquidation_batch_yields_every_item_and_filters_foreign_symbols() -> None:
    result = parse(frame("bybit_allLiquidation_derived_batch.json"))
    assert result.events == [
        liquidation(
            ts_event_ns=1_739_502_302_929_000_000,
            liquidated_side="short",
            price=0.04499,
            qty_base=20000.0,
            notional_usd=20000.0 * 0.04499,
        ),
        liquidation(
            ts_event_ns=1_739_502_303_101_000_000,
            liquidated_side="long",
            price=0.04501,
            qty_base=1500.0,
            notional_usd=1500.0 * 0.04501,
        ),
        liquidation(
            ts_event_ns=1_739_502_303_150_000_000,
            liquidated_side="short",
            price=0.04499,
            qty_base=250.5,
            notional_usd=250.5 * 0.04499,
        ),
    ]
    assert result.filtered == 1  # the PIPPINUSDT item
    assert result.rejects == []


def test_contract_size_converts_to_base_units() -> None:
    rose = Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", contract_size=0.001)
    [event] = parse(frame("bybit_allLiquidation.json"), BybitParser([rose])).events
    assert isinstance(event, Liquidation)
    assert (event.qty_base, event.notional_usd) == (20.0, 20.0 * 0.04499)


def test_deprecated_liquidation_is_sampled() -> None:
    result = parse(frame("bybit_liquidation_deprecated.json"))
    assert result.events == [
        btc_event(
            Liquidation,
            ts_event_ns=1_703_485_237_953_000_000,  # data.updatedTime
            liquidated_side="short",
            price=43511.70,
            qty_base=0.003,
            notional_usd=0.003 * 43511.70,
            completeness="sampled",
        )
    ]


def test_deprecated_liquidation_accepts_update_time_and_buy() -> None:
    msg = frame("bybit_liquidation_deprecated.json")
    msg["data"]["updateTime"] = msg["data"].pop("updatedTime") + 5
    msg["data"]["side"] = "Buy"
    [event] = parse(msg).events
    assert isinstance(event, Liquidation)
    assert (event.ts_event_ns, event.liquidated_side) == (1_703_485_237_958_000_000, "long")


def test_unknown_extra_fields_are_tolerated() -> None:
    msg = frame("bybit_allLiquidation.json")
    msg["data"][0] |= {"L": "PlusTick", "extra": {"nested": [1, 2]}, "BT": False}
    msg["cs"] = 42
    assert parse(msg).events == parse(frame("bybit_allLiquidation.json")).events
    ticker = frame("bybit_tickers_docs.json")
    ticker["data"] |= {"newField": "1.5", "preOpenPrice": ""}
    ticker["id"] = "x"
    assert parse(ticker).events == parse(frame("bybit_tickers_docs.json")).events


# -- liquidation rejects: one bad item never sinks the batch ----------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("p", None, "missing_field"),  # None = delete the field
        ("v", "", "missing_field"),
        ("s", "", "missing_field"),
        ("v", [20000], "bad_type"),
        ("v", "20k", "bad_type"),
        ("p", True, "bad_type"),
        ("S", "Long", "bad_type"),
        ("T", "1739502302929.5", "bad_type"),
        ("T", "²", "bad_type"),  # str.isdigit() accepts it, int() does not
        ("p", "NaN", "absurd_value"),
        ("p", "-0.04499", "absurd_value"),
        ("p", "inf", "absurd_value"),
        ("v", "0", "absurd_value"),
        ("v", "-5", "absurd_value"),
        ("T", 0, "absurd_value"),
        ("T", 1e17, "absurd_value"),
        ("v", "1e200", "absurd_value"),  # 1e200 × 1e200 overflows the notional
    ],
)
def test_bad_item_is_rejected_and_the_rest_of_the_batch_survives(
    field: str, value: Any, reason: str
) -> None:
    msg = frame("bybit_allLiquidation_derived_batch.json")
    bad = msg["data"][1]
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    if (field, value) == ("v", "1e200"):
        bad["p"] = "1e200"
    result = parse(msg)
    assert [r.reason for r in result.rejects] == [reason]
    assert result.rejects[0].channel == "allLiquidation"
    assert result.rejects[0].detail.startswith("data[1]: ")
    assert field in result.rejects[0].detail
    assert [e.ts_event_ns for e in result.events] == [
        1_739_502_302_929_000_000,
        1_739_502_303_150_000_000,
    ]
    assert result.filtered == 1


def test_item_that_is_not_an_object_is_rejected() -> None:
    msg = frame("bybit_allLiquidation.json")
    msg["data"].insert(0, 7)
    result = parse(msg)
    assert [(r.reason, r.detail[:8]) for r in result.rejects] == [("bad_type", "data[0]:")]
    assert len(result.events) == 1


@pytest.mark.parametrize(("data", "reason"), [(None, "missing_field"), ({}, "bad_type")])
def test_all_liquidation_data_must_be_an_array(data: Any, reason: str) -> None:
    msg = frame("bybit_allLiquidation.json")
    msg["data"] = data
    result = parse(msg)
    assert [(r.reason, r.channel) for r in result.rejects] == [(reason, "allLiquidation")]
    assert result.events == []


@pytest.mark.parametrize(("data", "reason"), [(None, "missing_field"), ([1], "bad_type")])
def test_deprecated_liquidation_data_must_be_an_object(data: Any, reason: str) -> None:
    msg = frame("bybit_liquidation_deprecated.json")
    msg["data"] = data
    result = parse(msg)
    assert [(r.reason, r.channel) for r in result.rejects] == [(reason, "liquidation")]


# -- frame-level rejects and control ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"topic": "allLiquidation.ROSEUSDT", "data": [', "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),  # invalid UTF-8
        ('{"ts": NaN}', "malformed_json"),
        ("[1, 2]", "malformed_json"),
        ("", "malformed_json"),
        ('{"hello": "world"}', "unknown_message"),
        ('{"topic": 5, "data": []}', "bad_type"),
        (json.dumps(frame("bybit_publicTrade.json")), "unknown_message"),
        ('{"op": "subscribe", "ret_msg": ""}', "unknown_message"),
        ("x" * (MAX_FRAME_BYTES + 1), "oversize"),
        (b" " * (MAX_FRAME_BYTES + 1), "oversize"),
        ("é" * (MAX_FRAME_BYTES // 2 + 1), "oversize"),  # 2 UTF-8 bytes per character
    ],
)
def test_frame_rejects(raw: str | bytes, reason: str) -> None:
    result = parse(raw)
    assert [r.reason for r in result.rejects] == [reason]
    assert result.events == []


def test_a_large_frame_under_the_limit_is_parsed() -> None:
    msg = frame("bybit_allLiquidation.json")
    msg["padding"] = "x" * (MAX_FRAME_BYTES - 1000)
    raw = json.dumps(msg)
    assert len(raw) < MAX_FRAME_BYTES
    assert len(parse(raw).events) == 1


def test_subscribe_ack_and_pong_are_control() -> None:
    ack = parse(frame("bybit_subscribe_ack.json"))
    pong = parse(frame("bybit_pong.json"))
    assert (ack.control, ack.events, ack.rejects) == ("ack", [], [])
    assert (pong.control, pong.events, pong.rejects) == ("pong", [], [])


def test_subscribe_failure_is_a_venue_error() -> None:
    msg = frame("bybit_subscribe_ack.json")
    msg |= {"success": False, "ret_msg": "error:handler not found,topic:tickers.btc"}
    result = parse(msg)
    assert result.control == "error"
    assert result.rejects == [
        Reject(
            "venue_error",
            "subscribe failed: error:handler not found,topic:tickers.btc",
            "control",
        )
    ]


# -- tickers ----------------------------------------------------------------------------------


def test_tickers_snapshot_2023_capture() -> None:
    ts = 1_680_673_821_770_000_000  # frame ts: the ticker has no per-field exchange time
    result = parse(frame("bybit_tickers.json"))
    assert result.events == [
        btc_event(PriceTick, ts_event_ns=ts, price=28552.81, kind="mark"),
        btc_event(PriceTick, ts_event_ns=ts, price=28550.70, kind="trade"),
        btc_event(
            Funding,
            ts_event_ns=ts,
            rate=0.0001,
            interval_hours=4.0,  # no fundingIntervalHour in 2023: the instrument's
            rate_annualized=0.0001 * (24 / 4.0) * 365,
            next_funding_ts_ns=1_680_681_600_000_000_000,
            mark_price=28552.81,
            open_interest_usd=1506861070.82 / 2,  # both sides summed → one side
        ),
    ]
    assert result.rejects == []


def test_tickers_docs_snapshot_interval_from_the_frame_wins() -> None:
    ts = 1_760_325_052_630_000_000
    result = parse(frame("bybit_tickers_docs.json"))
    assert result.events == [
        btc_event(PriceTick, ts_event_ns=ts, price=66666.60, kind="mark"),
        btc_event(PriceTick, ts_event_ns=ts, price=66666.60, kind="trade"),
        btc_event(
            Funding,
            ts_event_ns=ts,
            rate=-0.005,
            interval_hours=8.0,  # fundingIntervalHour "8" beats the instrument's 4 h
            rate_annualized=-0.005 * 3 * 365,
            next_funding_ts_ns=1_760_342_400_000_000_000,
            mark_price=66666.60,
            open_interest_usd=32824881841.75 / 2,
        ),
    ]


def test_single_side_open_interest_is_preferred() -> None:
    msg = frame("bybit_tickers_docs.json")
    msg["data"]["singleOpenInterestValue"] = "16412440920.80"
    [_, _, funding] = parse(msg).events
    assert isinstance(funding, Funding)
    assert funding.open_interest_usd == 16412440920.80


def test_delta_merges_into_the_snapshot() -> None:
    parser = BybitParser(UNIVERSE)
    parse(frame("bybit_tickers.json"), parser)
    result = parse(frame("bybit_tickers_derived_delta_linear.json"), parser)
    # Only fundingRate (of the fields we read) is in the delta: no price tick; the Funding
    # takes nextFundingTime, markPrice and openInterestValue from the snapshot.
    assert result.events == [
        btc_event(
            Funding,
            ts_event_ns=1_680_673_822_776_000_000,
            rate=0.0001,
            interval_hours=4.0,
            rate_annualized=0.0001 * 6 * 365,
            next_funding_ts_ns=1_680_681_600_000_000_000,
            mark_price=28552.81,
            open_interest_usd=1506861070.82 / 2,
        )
    ]
    assert result.rejects == []


def delta(**data: Any) -> dict[str, Any]:
    msg = frame("bybit_tickers_derived_delta_linear.json")
    msg["data"] = {"symbol": "BTCUSDT", **data}
    return msg


def test_price_deltas_emit_ticks_and_later_funding_sees_them() -> None:
    parser = BybitParser(UNIVERSE)
    parse(frame("bybit_tickers.json"), parser)
    ts = 1_680_673_822_776_000_000
    result = parse(delta(markPrice="28560.00", lastPrice="28561.5", bid1Price="1"), parser)
    assert result.events == [
        btc_event(PriceTick, ts_event_ns=ts, price=28560.00, kind="mark"),
        btc_event(PriceTick, ts_event_ns=ts, price=28561.5, kind="trade"),
    ]
    assert parse(delta(bid1Price="28560.10", ask1Size="3"), parser).events == []
    [funding] = parse(
        delta(openInterestValue="1500000000", fundingIntervalHour="1", fundingRate="-0.0002"),
        parser,
    ).events
    assert funding == btc_event(
        Funding,
        ts_event_ns=ts,
        rate=-0.0002,
        interval_hours=1.0,
        rate_annualized=-0.0002 * 24 * 365,
        next_funding_ts_ns=1_680_681_600_000_000_000,
        mark_price=28560.00,
        open_interest_usd=750000000.0,
    )


def test_delta_before_snapshot_is_rejected_then_snapshot_recovers() -> None:
    parser = BybitParser(UNIVERSE)
    result = parse(frame("bybit_tickers_derived_delta_linear.json"), parser)
    assert result.events == []
    [reject] = result.rejects
    assert (reject.reason, reject.channel) == ("missing_field", "tickers")
    assert "before any snapshot" in reject.detail
    assert len(parse(frame("bybit_tickers.json"), parser).events) == 3
    assert len(parse(frame("bybit_tickers_derived_delta_linear.json"), parser).events) == 1


def test_state_is_per_symbol() -> None:
    parser = BybitParser(UNIVERSE)
    parse(frame("bybit_tickers.json"), parser)
    msg = delta(markPrice="500.1")
    msg["data"]["symbol"] = "SPYUSDT"
    assert [r.reason for r in parse(msg, parser).rejects] == ["missing_field"]


def test_a_new_snapshot_replaces_the_state() -> None:
    parser = BybitParser(UNIVERSE)
    parse(frame("bybit_tickers.json"), parser)
    msg = frame("bybit_tickers.json")
    del msg["data"]["openInterestValue"], msg["data"]["markPrice"]
    [trade, funding] = parse(msg, parser).events
    assert isinstance(trade, PriceTick)
    assert isinstance(funding, Funding)
    assert (funding.mark_price, funding.open_interest_usd) == (None, None)


def test_dated_future_has_prices_but_no_funding() -> None:
    ts = 1_760_409_119_857_000_000
    result = parse(frame("bybit_tickers_docs_futures.json"))
    base: dict[str, Any] = {
        "venue": "bybit",
        "symbol": "BTC-26DEC25",
        "asset": "BTC",
        "asset_class": "crypto",
    }
    assert result.events == [
        PriceTick(**base, ts_event_ns=ts, ts_recv_ns=RECV_NS, price=121144.63, kind="mark"),
        PriceTick(**base, ts_event_ns=ts, ts_recv_ns=RECV_NS, price=109401.50, kind="trade"),
    ]
    assert result.rejects == []


def test_empty_strings_mean_no_value() -> None:
    msg = frame("bybit_tickers_docs.json")
    msg["data"] |= {"markPrice": "", "singleOpenInterestValue": "", "openInterestValue": ""}
    [trade, funding] = parse(msg).events
    assert isinstance(trade, PriceTick)
    assert trade.kind == "trade"
    assert isinstance(funding, Funding)
    assert (funding.mark_price, funding.open_interest_usd) == (None, None)


def test_no_funding_interval_anywhere_is_rejected_but_prices_survive() -> None:
    no_interval = Instrument("bybit", "BTCUSDT", "BTC", "crypto")
    result = parse(frame("bybit_tickers.json"), BybitParser([no_interval]))
    assert [type(e) for e in result.events] == [PriceTick, PriceTick]
    assert [(r.reason, r.channel) for r in result.rejects] == [("missing_field", "tickers")]
    assert "fundingIntervalHour" in result.rejects[0].detail


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("markPrice", "0", "absurd_value"),
        ("markPrice", "abc", "bad_type"),
        ("fundingRate", "NaN", "absurd_value"),
        ("fundingRate", {"x": 1}, "bad_type"),
        ("nextFundingTime", "soon", "bad_type"),
        ("nextFundingTime", "0", "absurd_value"),
        ("fundingIntervalHour", "48", "absurd_value"),
        ("openInterestValue", "-1", "absurd_value"),
    ],
)
def test_a_bad_ticker_field_is_rejected_and_kept_out_of_the_state(
    field: str, value: Any, reason: str
) -> None:
    parser = BybitParser(UNIVERSE)
    parse(frame("bybit_tickers.json"), parser)
    result = parse(delta(**{"lastPrice": "28600", field: value}), parser)
    assert [(r.reason, r.channel) for r in result.rejects] == [(reason, "tickers")]
    assert field in result.rejects[0].detail
    assert "BTCUSDT" in result.rejects[0].detail
    ts = 1_680_673_822_776_000_000
    assert result.events == [btc_event(PriceTick, ts_event_ns=ts, price=28600.0, kind="trade")]
    # The state kept the snapshot's value: the next Funding is built from it.
    [funding] = parse(delta(fundingRate="0.0002"), parser).events
    assert isinstance(funding, Funding)
    assert funding.mark_price == 28552.81
    assert funding.next_funding_ts_ns == 1_680_681_600_000_000_000
    assert funding.interval_hours == 4.0
    assert funding.open_interest_usd == 1506861070.82 / 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "update"}, "bad_type"),
        ({"ts": None}, "missing_field"),
        ({"ts": "yesterday"}, "bad_type"),
        ({"data": None}, "missing_field"),
        ({"data": ["BTCUSDT"]}, "bad_type"),
        ({"data": {"lastPrice": "1"}}, "missing_field"),
    ],
)
def test_ticker_frame_rejects(change: dict[str, Any], reason: str) -> None:
    msg = frame("bybit_tickers.json") | change
    result = parse(msg)
    assert [(r.reason, r.channel) for r in result.rejects] == [(reason, "tickers")]
    assert result.events == []


def test_ticker_without_ts_still_updates_the_state() -> None:
    parser = BybitParser(UNIVERSE)
    msg = frame("bybit_tickers.json")
    del msg["ts"]
    assert parse(msg, parser).events == []
    assert len(parse(frame("bybit_tickers_derived_delta_linear.json"), parser).events) == 1


def test_out_of_universe_symbols_are_filtered_and_counted() -> None:
    parser = BybitParser([SPY])
    for name in (
        "bybit_tickers.json",
        "bybit_allLiquidation.json",
        "bybit_liquidation_deprecated.json",
    ):
        result = parse(frame(name), parser)
        assert (result.events, result.rejects, result.filtered) == ([], [], 1)


# -- never raises -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "-1", "NaN", "1e400", "Buy", "Sell", "1739502302929", "²"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("bybit_*.json"))


def _leaf_paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [path] + [p for k, v in obj.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(obj, list):
        return [path] + [p for i, v in enumerate(obj) for p in _leaf_paths(v, (*path, i))]
    return [path]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(FIXTURE_NAMES), pick=st.integers(0, 10_000), value=json_values)
def test_mutated_fixtures_never_raise(name: str, pick: int, value: Any) -> None:
    parser = BybitParser(UNIVERSE)
    parse(frame("bybit_tickers.json"), parser)  # state, so deltas get merged
    msg = frame(name)
    paths = _leaf_paths(msg)
    path = paths[pick % len(paths)]
    if not path:
        msg = value
    else:
        target = msg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    parse(json.dumps(msg), parser)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200) | json_values.map(json.dumps))
def test_random_frames_never_raise(raw: str | bytes) -> None:
    parse(raw)  # the helper asserts: no exception, no safety-net reject, schema-valid events
