"""Every encoder's output validates against the committed JSON Schema; bad input is refused."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest

from streams.events import (
    SCHEMA_NAMES,
    BarEvent,
    DeadLetter,
    DecodeError,
    Funding,
    GapMarker,
    Liquidation,
    PriceTick,
    SignalEvent,
    committed_schema,
    decode,
    encode,
    json_schema,
)
from streams.topics import TOPICS

T0 = 1_762_250_400_000_000_000  # 2025-11-04T10:00:00Z

COMMON = {"asset_class": "crypto", "ts_event_ns": T0, "ts_recv_ns": T0 + 35_000_000}

SAMPLES: list[Any] = [
    PriceTick(
        venue="binance", symbol="BTCUSDT", asset="BTC", price=101_234.5, kind="trade", **COMMON
    ),
    PriceTick(
        venue="bybit",
        symbol="XAUUSDT",
        asset="GOLD",
        price=3_990.1,
        kind="mark",
        **{**COMMON, "asset_class": "metal"},
    ),
    Liquidation(
        venue="binance",
        symbol="ETHUSDT",
        asset="ETH",
        liquidated_side="long",
        price=3_300.0,
        qty_base=2.5,
        notional_usd=8_250.0,
        completeness="sampled",
        **COMMON,
    ),
    Liquidation(
        venue="bybit",
        symbol="SOLUSDT",
        asset="SOL",
        liquidated_side="short",
        price=160.2,
        qty_base=100.0,
        notional_usd=16_020.0,
        completeness="complete",
        **COMMON,
    ),
    Funding(
        venue="okx",
        symbol="BTC-USDT-SWAP",
        asset="BTC",
        rate=0.0001,
        interval_hours=8.0,
        rate_annualized=0.1095,
        next_funding_ts_ns=T0 + 3600 * 10**9,
        **COMMON,
    ),
    Funding(
        venue="bybit",
        symbol="SPYUSDT",
        asset="SPX",
        rate=-0.0002,
        interval_hours=4.0,
        rate_annualized=-0.438,
        next_funding_ts_ns=T0,
        mark_price=671.2,
        open_interest_usd=12_500_000.0,
        **{**COMMON, "asset_class": "equity"},
    ),
    BarEvent(
        asset="BTC",
        asset_class="crypto",
        bar_start_ns=T0,
        interval_s=60,
        close=101_000.0,
        n_ticks=0,
        stale=True,
    ),
    SignalEvent(
        id="cosell.start:1762250400000000000",
        type="cosell.start",
        ts_event_ns=T0,
        ts_emit_ns=T0 + 1,
        subject="market",
        data={"score": 0.82, "assets": ["BTC", "ETH"], "returns": {"BTC": -0.031}},
    ),
    DeadLetter(
        venue="okx",
        channel="liquidation-orders",
        ts_recv_ns=T0,
        reason="sz is not a number: 'abc'",
        raw='{"arg":{}}',
    ),
    GapMarker(
        venue="bybit",
        channel="allLiquidation",
        from_ns=T0,
        to_ns=T0 + 4 * 10**9,
        reason="disconnect",
        ts_recv_ns=T0 + 4 * 10**9,
    ),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_encoded_event_validates_against_committed_schema(event: Any) -> None:
    schema = committed_schema(SCHEMA_NAMES[type(event)])
    payload = json.loads(encode(event))
    jsonschema.validate(payload, schema, cls=jsonschema.Draft202012Validator)
    assert decode(type(event), encode(event)) == event


@pytest.mark.parametrize("event_type", list(SCHEMA_NAMES), ids=lambda t: t.__name__)
def test_committed_schema_matches_the_code(event_type: type[Any]) -> None:
    # Regenerate with `make schemas` (README); the contract changes only
    # on purpose, and then with a new topic version.
    assert committed_schema(SCHEMA_NAMES[event_type]) == json.loads(
        json.dumps(json_schema(event_type))
    )


def test_every_topic_names_a_committed_schema() -> None:
    for t in TOPICS:
        assert committed_schema(t.schema)["additionalProperties"] is False, t.name


def _price(**changes: Any) -> bytes:
    body = orjson.loads(encode(SAMPLES[0]))
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "Invalid JSON"),
        (b"[]", "(payload)"),
        (_price(price=-1.0), "price: Input should be greater than 0"),
        (_price(price=0), "price: Input should be greater than 0"),
        (
            _price(price=...).replace(b"}", b',"price":NaN}'),
            "price: Input should be a finite number",
        ),
        (_price(price="101234.5"), "price: Input should be a valid number"),
        (_price(kind="last"), "kind: Input should be 'trade', 'mark', 'index' or 'mid'"),
        (_price(asset_class="commodity"), "asset_class: Input should be"),
        (_price(ts_event_ns=-5), "ts_event_ns: Input should be greater than or equal to 0"),
        (_price(ts_event_ns=1.5e18), "ts_event_ns: Input should be a valid integer"),
        (_price(symbol=...), "symbol: Field required"),
        (_price(extra_field=1), "extra_field: Unexpected keyword argument"),
        (_price(venue=""), "venue: String should have at least 1 character"),
    ],
)
def test_decode_rejects_malformed_price_with_named_field(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(PriceTick, payload)
    assert message in str(info.value)
    assert str(info.value).startswith("invalid PriceTick:")


def test_decode_rejects_nan_literal_and_wrong_side_in_liquidation() -> None:
    body = orjson.loads(encode(SAMPLES[2]))
    with pytest.raises(DecodeError, match="liquidated_side: Input should be 'long' or 'short'"):
        decode(Liquidation, orjson.dumps({**body, "liquidated_side": "SELL"}))
    raw = orjson.dumps(body).replace(b'"qty_base":2.5', b'"qty_base":Infinity')
    with pytest.raises(DecodeError, match="qty_base: Input should be a finite number"):
        decode(Liquidation, raw)
    with pytest.raises(DecodeError, match="interval_hours: Input should be greater than 0"):
        decode(Funding, orjson.dumps({**orjson.loads(encode(SAMPLES[4])), "interval_hours": 0}))


def test_encoding_refuses_nan_instead_of_emitting_invalid_json() -> None:
    bad = PriceTick(venue="x", symbol="y", asset="Z", price=float("nan"), kind="mark", **COMMON)
    # orjson writes NaN as null; the decoder then refuses the event, naming the field.
    with pytest.raises(DecodeError, match="price"):
        decode(PriceTick, encode(bad))
