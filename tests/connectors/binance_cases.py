"""Shared cases of the Binance parser tests: instruments, fixture loading, expected events.

Expected values are computed by hand from the fixture frames (the arithmetic is written out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connectors.base import Instrument, ParseResult
from connectors.binance.parse import BinanceParser
from streams.events import Funding, Liquidation, PriceTick

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
RECV = 1_700_000_000_123_456_789

BTC = Instrument(venue="binance", symbol="BTCUSDT", asset="BTC", asset_class="crypto")
ETH = Instrument(venue="binance", symbol="ETHUSDT", asset="ETH", asset_class="crypto")
XAU = Instrument(
    venue="binance",
    symbol="XAUUSDT",
    asset="GOLD",
    asset_class="metal",
    funding_interval_hours=4.0,
)
CTK = Instrument(venue="binance", symbol="CTKUSDT", asset="CTK", asset_class="crypto")
SUSHI = Instrument(venue="binance", symbol="SUSHIUSDT", asset="SUSHI", asset_class="crypto")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture_doc(name: str) -> Any:
    return json.loads(fixture(name))


def make_parser() -> BinanceParser:
    return BinanceParser([BTC, ETH, XAU, CTK, SUSHI])


def parse(parser: BinanceParser, frame: Any) -> ParseResult:
    raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
    return parser.parse(raw, RECV)


def only_events(result: ParseResult) -> list[Any]:
    assert result.rejects == []
    assert result.control is None
    return result.events


BTC_LONG_LIQ = Liquidation(
    venue="binance",
    symbol="BTCUSDT",
    asset="BTC",
    asset_class="crypto",
    ts_event_ns=1_568_014_460_893_000_000,  # o.T
    ts_recv_ns=RECV,
    liquidated_side="long",  # o.S = SELL: the order sold a long position
    price=9910.0,  # o.ap
    qty_base=0.014,  # o.z
    notional_usd=0.014 * 9910,  # z * ap = 138.74
    completeness="sampled",
)
ETH_SHORT_LIQ = Liquidation(
    venue="binance",
    symbol="ETHUSDT",
    asset="ETH",
    asset_class="crypto",
    ts_event_ns=1_568_014_460_893_000_000,
    ts_recv_ns=RECV,
    liquidated_side="short",  # o.S = BUY
    price=9910.0,
    qty_base=0.014,
    notional_usd=0.014 * 9910,
    completeness="sampled",
)


def mark_events(
    inst: Instrument,
    e_ms: int,
    mark: float,
    index: float | None,
    rate: float | None,
    annualized: float | None,
    next_ms: int | None,
) -> list[Any]:
    common: dict[str, Any] = {
        "venue": "binance",
        "symbol": inst.symbol,
        "asset": inst.asset,
        "asset_class": inst.asset_class,
        "ts_event_ns": e_ms * 1_000_000,
        "ts_recv_ns": RECV,
    }
    events: list[Any] = [PriceTick(**common, price=mark, kind="mark")]
    if index is not None:
        events.append(PriceTick(**common, price=index, kind="index"))
    if rate is not None:
        assert annualized is not None
        assert next_ms is not None
        events.append(
            Funding(
                **common,
                rate=rate,
                interval_hours=inst.funding_interval_hours or 8.0,
                rate_annualized=annualized,
                next_funding_ts_ns=next_ms * 1_000_000,
                mark_price=mark,
                open_interest_usd=None,
            )
        )
    return events


BTC_MARK_DOCS = mark_events(
    BTC,
    e_ms=1_562_305_380_000,
    mark=11794.15,
    index=11784.62659091,
    rate=0.00038167,
    annualized=0.00038167 * 3 * 365,  # 8 h: 3 settlements a day
    next_ms=1_562_306_400_000,
)

CTK_TRADE = PriceTick(
    venue="binance",
    symbol="CTKUSDT",
    asset="CTK",
    asset_class="crypto",
    ts_event_ns=1_626_992_741_421_000_000,  # T (trade time), not E (…575)
    ts_recv_ns=RECV,
    price=1.011,
    kind="trade",
)
