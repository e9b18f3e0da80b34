"""instruments_from_markets: Bybit Instruments from ccxt market dicts (no network)."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from connectors.base import Instrument
from connectors.bybit.markets import BybitMarketError, instruments_from_markets
from streams.config import ConfigError, load_universe, parse_universe


def raw_row(symbol: str, base: str, **extra: Any) -> dict[str, Any]:
    """An ``/v5/market/instruments-info?category=linear`` row (the shape in ccxt's comments)."""
    row = {
        "symbol": symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": base,
        "quoteCoin": "USDT",
        "launchTime": "1585526400000",
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.50", "maxPrice": "999999.00", "tickSize": "0.50"},
        "lotSizeFilter": {"maxOrderQty": "100.000", "minOrderQty": "0.001", "qtyStep": "0.001"},
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": "USDT",
    }
    return row | extra


def ccxt_markets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What ccxt 4.5's bybit builds from ``rows``, keyed by unified symbol (offline)."""
    exchange = ccxt.bybit()

    def instruments_info(params: dict[str, Any] | None = None) -> dict[str, Any]:
        listed = [] if (params or {}).get("status") == "PreLaunch" else rows
        return {"retCode": 0, "result": {"category": "linear", "list": listed}}

    exchange.publicGetV5MarketInstrumentsInfo = instruments_info
    markets = exchange.fetch_future_markets({"category": "linear"})
    return {m["symbol"]: m for m in markets}


DEFAULT_ROWS = [
    raw_row("BTCUSDT", "BTC"),
    raw_row("ETHUSDT", "ETH"),
    raw_row("SOLUSDT", "SOL"),
    raw_row("XRPUSDT", "XRP", fundingInterval=240),
    raw_row("XAUUSDT", "XAU", fundingInterval=240, symbolType="commodity"),
    raw_row("SPYUSDT", "SPY", fundingInterval=60, symbolType="stock"),
    raw_row("QQQUSDT", "QQQ", symbolType="stock"),
]
SPOT_BTC = {"id": "BTCUSDT", "symbol": "BTC/USDT", "spot": True, "linear": None, "info": {}}


def test_default_universe_from_ccxt_markets() -> None:
    markets = ccxt_markets(DEFAULT_ROWS) | {"BTC/USDT": SPOT_BTC}
    assert instruments_from_markets(markets, load_universe()) == [
        Instrument("bybit", "BTCUSDT", "BTC", "crypto", 1.0, 8.0),
        Instrument("bybit", "ETHUSDT", "ETH", "crypto", 1.0, 8.0),
        Instrument("bybit", "SOLUSDT", "SOL", "crypto", 1.0, 8.0),
        Instrument("bybit", "XRPUSDT", "XRP", "crypto", 1.0, 4.0),
        Instrument("bybit", "XAUUSDT", "GOLD", "metal", 1.0, 4.0),
        Instrument("bybit", "SPYUSDT", "SPX", "equity", 1.0, 1.0),
        Instrument("bybit", "QQQUSDT", "NDX", "equity", 1.0, 8.0),
    ]


def universe(symbol: str = "SPYUSDT") -> Any:
    doc = {"assets": {"SPX": {"class": "equity", "symbols": {"bybit": symbol, "okx": "X"}}}}
    return parse_universe(doc, "test.toml")


def test_perpetual_is_preferred_over_spot_and_dated_future() -> None:
    future = raw_row(
        "SPYUSDT",
        "SPY",
        contractType="LinearFutures",
        deliveryTime="1767081600000",
        fundingInterval=0,
    )
    dated = next(iter(ccxt_markets([future]).values()))
    assert dated["swap"] is False  # ccxt calls it a future; same id only in this test
    markets = {"SPY/USDT:USDT-X": dated} | ccxt_markets([raw_row("SPYUSDT", "SPY")])
    [instrument] = instruments_from_markets(markets, universe())
    assert instrument.funding_interval_hours == 8.0
    markets = ccxt_markets([raw_row("SPYUSDT", "SPY")]) | {"SPY/USDT:USDT-X": dated}
    assert instruments_from_markets(markets, universe()) == [instrument]


@pytest.mark.parametrize(
    ("interval", "hours"), [(480, 8.0), ("120", 2.0), (60, 1.0), (None, 8.0), ("", 8.0)]
)
def test_funding_interval_minutes_to_hours(interval: Any, hours: float) -> None:
    row = raw_row("SPYUSDT", "SPY", fundingInterval=interval)
    if interval is None:
        del row["fundingInterval"]  # absent: Bybit's default 8 h
    [instrument] = instruments_from_markets(ccxt_markets([row]), universe())
    assert instrument.funding_interval_hours == hours


@pytest.mark.parametrize("interval", [0, -60, "8h", 1441, True])
def test_unusable_funding_interval_raises(interval: Any) -> None:
    markets = ccxt_markets([raw_row("SPYUSDT", "SPY")])
    markets["SPY/USDT:USDT"]["info"]["fundingInterval"] = interval
    with pytest.raises(BybitMarketError, match=r"SPYUSDT: info\.fundingInterval"):
        instruments_from_markets(markets, universe())


@pytest.mark.parametrize("size", [0, -1.0, "abc", float("nan")])
def test_unusable_contract_size_raises(size: Any) -> None:
    markets = ccxt_markets([raw_row("SPYUSDT", "SPY")])
    markets["SPY/USDT:USDT"]["contractSize"] = size
    with pytest.raises(BybitMarketError, match="SPYUSDT: contractSize"):
        instruments_from_markets(markets, universe())


def test_missing_contract_size_is_one() -> None:
    markets = ccxt_markets([raw_row("SPYUSDT", "SPY")])
    markets["SPY/USDT:USDT"]["contractSize"] = None
    [instrument] = instruments_from_markets(markets, universe())
    assert instrument.contract_size == 1.0


@pytest.mark.parametrize(
    "markets",
    [
        {},
        {"SPY/USDT": {"id": "SPYUSDT", "symbol": "SPY/USDT", "spot": True, "info": {}}},
        {"SPY/USD:SPY": {"id": "SPYUSDT", "linear": False, "inverse": True, "info": {}}},
    ],
    ids=["absent", "spot-only", "inverse-only"],
)
def test_symbol_not_listed_as_linear_names_it(markets: dict[str, Any]) -> None:
    with pytest.raises(BybitMarketError) as excinfo:
        instruments_from_markets(markets, universe())
    message = str(excinfo.value)
    assert "test.toml: assets.SPX.symbols.bybit: 'SPYUSDT' is not a Bybit linear market" in message
    assert isinstance(excinfo.value, ConfigError)


def test_assets_without_a_bybit_symbol_are_skipped() -> None:
    doc = {"assets": {"NDX": {"class": "equity", "symbols": {"hyperliquid": "xyz:XYZ100"}}}}
    assert instruments_from_markets({}, parse_universe(doc, "t")) == []
