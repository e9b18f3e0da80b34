"""instruments_from_markets on ccxt markets built offline from hand-written exchangeInfo rows."""

from __future__ import annotations

import math
from typing import Any

import ccxt
import pytest

from connectors.base import Instrument
from connectors.binance.markets import (
    MarketError,
    funding_intervals_from_funding_info,
    instruments_from_markets,
)
from connectors.binance.parse import BinanceParser
from streams.config import Asset, Universe, load_universe

PERPETUAL_DELIVERY_MS = 4_133_404_800_000  # what Binance puts in deliveryDate of perpetuals


def exchange_info_row(symbol: str, base: str, contract_type: str = "PERPETUAL") -> dict[str, Any]:
    """A /fapi/v1/exchangeInfo symbol row (fields as Binance sends them, trimmed)."""
    underlying = "COMMODITY" if contract_type == "TRADIFI_PERPETUAL" else "COIN"
    return {
        "symbol": symbol,
        "pair": symbol.split("_")[0],
        "contractType": contract_type,
        "deliveryDate": PERPETUAL_DELIVERY_MS if "PERPETUAL" in contract_type else 1766736000000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "underlyingType": underlying,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01",
                "maxPrice": "1000000",
                "tickSize": "0.01",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        ],
    }


@pytest.fixture(scope="module")
def markets() -> dict[str, dict[str, Any]]:
    """What binanceusdm().load_markets() returns (keyed by unified symbol), without network."""
    exchange = ccxt.binanceusdm()
    rows = [
        exchange_info_row("BTCUSDT", "BTC"),
        exchange_info_row("BTCUSDT_261225", "BTC", "CURRENT_QUARTER"),
        exchange_info_row("ETHUSDT", "ETH"),
        exchange_info_row("SOLUSDT", "SOL"),
        exchange_info_row("XRPUSDT", "XRP"),
        exchange_info_row("XAUUSDT", "XAU", "TRADIFI_PERPETUAL"),
        exchange_info_row("DOGEUSDT", "DOGE"),
    ]
    parsed = [exchange.parse_market(row) for row in rows]
    return {m["symbol"]: m for m in parsed}


def binance(symbol: str, asset: str, cls: Any = "crypto", hours: float = 8.0) -> Instrument:
    return Instrument(
        "binance", symbol, asset, cls, contract_size=1.0, funding_interval_hours=hours
    )


def test_ccxt_structure_is_what_we_assume(markets: dict[str, dict[str, Any]]) -> None:
    xau = markets["XAU/USDT:USDT"]
    got = (xau["id"], xau["swap"], xau["linear"], xau["contractSize"])
    assert got == ("XAUUSDT", True, True, 1.0)
    (dated,) = [m for m in markets.values() if m["id"] == "BTCUSDT_261225"]
    assert (dated["swap"], dated["future"]) == (False, True)


def test_perpetual_is_picked_when_spot_shares_its_id(markets: dict[str, dict[str, Any]]) -> None:
    """ccxt.binance() (spot + futures) lists spot BTCUSDT and the perp under the same id."""
    spot = {"id": "BTCUSDT", "symbol": "BTC/USDT", "type": "spot", "swap": False,
            "linear": None, "contractSize": None, "info": {}}  # fmt: skip
    mixed = {"BTC/USDT": spot, **markets}
    universe = Universe(assets=(Asset("BTC", "crypto", "24/7", {"binance": "BTCUSDT"}),))
    assert instruments_from_markets(mixed, universe) == [binance("BTCUSDT", "BTC")]


def test_default_universe(markets: dict[str, dict[str, Any]]) -> None:
    instruments = instruments_from_markets(markets, load_universe())
    assert instruments == [
        binance("BTCUSDT", "BTC"),
        binance("ETHUSDT", "ETH"),
        binance("SOLUSDT", "SOL"),
        binance("XRPUSDT", "XRP"),
        binance("XAUUSDT", "GOLD", "metal"),
    ]  # SPX and NDX have no Binance symbol in the default universe
    BinanceParser(instruments)  # the parser accepts what markets builds


def test_funding_intervals_from_funding_info_win(markets: dict[str, dict[str, Any]]) -> None:
    rows = [  # GET /fapi/v1/fundingInfo rows (ccxt's docstring example, symbols changed)
        {
            "symbol": "SOLUSDT",
            "adjustedFundingRateCap": "0.03000000",
            "adjustedFundingRateFloor": "-0.03000000",
            "fundingIntervalHours": 4,
            "disclaimer": False,
        },
        {
            "symbol": "XRPUSDT",
            "adjustedFundingRateCap": "0.02000000",
            "adjustedFundingRateFloor": "-0.02000000",
            "fundingIntervalHours": "1",
            "disclaimer": False,
        },
        {"symbol": "BLZUSDT", "fundingIntervalHours": 4},
    ]
    intervals = funding_intervals_from_funding_info(rows)
    assert intervals == {"SOLUSDT": 4.0, "XRPUSDT": 1.0, "BLZUSDT": 4.0}
    by_symbol = {i.symbol: i for i in instruments_from_markets(markets, load_universe(), intervals)}
    assert by_symbol["SOLUSDT"].funding_interval_hours == 4.0
    assert by_symbol["XRPUSDT"].funding_interval_hours == 1.0
    assert by_symbol["BTCUSDT"].funding_interval_hours == 8.0  # not listed: Binance's default


def test_info_funding_interval_is_used_when_no_mapping(markets: dict[str, dict[str, Any]]) -> None:
    patched = dict(markets)
    xau = dict(markets["XAU/USDT:USDT"])
    xau["info"] = {**xau["info"], "fundingIntervalHours": 4}
    patched["XAU/USDT:USDT"] = xau
    universe = Universe(assets=(Asset("GOLD", "metal", "cme_metals", {"binance": "XAUUSDT"}),))
    (inst,) = instruments_from_markets(patched, universe)
    assert inst.funding_interval_hours == 4.0
    (inst,) = instruments_from_markets(patched, universe, {"XAUUSDT": 8})
    assert inst.funding_interval_hours == 8.0  # fundingInfo beats info


def gold(symbol: str = "XAUUSDT") -> Universe:
    return Universe(
        assets=(Asset("GOLD", "metal", "cme_metals", {"binance": symbol, "bybit": "XAUUSDT"}),),
        source="test.toml",
    )


def test_missing_symbol_is_named(markets: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(MarketError, match=r"'XAUTUSDT' \(asset GOLD, test.toml\) is not listed"):
        instruments_from_markets(markets, gold("XAUTUSDT"))


def test_spot_only_listing_is_refused() -> None:
    spot = {"XAU/USDT": {"id": "XAUUSDT", "symbol": "XAU/USDT", "type": "spot", "swap": False,
                         "linear": None, "contractSize": None, "info": {}}}  # fmt: skip
    with pytest.raises(MarketError, match=r"listed only as XAU/USDT \(spot\), not as a USD-M"):
        instruments_from_markets(spot, gold())


def market(**changes: Any) -> dict[str, dict[str, Any]]:
    base = {"id": "XAUUSDT", "symbol": "XAU/USDT:USDT", "type": "swap", "swap": True,
            "linear": True, "contractSize": 1.0, "info": {"symbol": "XAUUSDT"}}  # fmt: skip
    return {"XAU/USDT:USDT": {**base, **changes}}


def test_missing_contract_size_means_base_units() -> None:
    (inst,) = instruments_from_markets(market(contractSize=None, info=None), gold())
    assert inst == binance("XAUUSDT", "GOLD", "metal")


def test_contract_size_is_carried() -> None:
    (inst,) = instruments_from_markets(market(contractSize="0.5"), gold())
    assert inst.contract_size == 0.5


@pytest.mark.parametrize("size", [0, -1, math.nan, math.inf, "abc", True])
def test_bad_contract_size(size: Any) -> None:
    with pytest.raises(MarketError, match="contractSize"):
        instruments_from_markets(market(contractSize=size), gold())


@pytest.mark.parametrize("hours", [0, -4, 25, math.nan, "x", True, None])
def test_bad_funding_interval(hours: Any) -> None:
    with pytest.raises(MarketError, match="funding_intervals"):
        instruments_from_markets(market(), gold(), {"XAUUSDT": hours})
    with pytest.raises(MarketError, match="fundingInfo XAUUSDT"):
        funding_intervals_from_funding_info([{"symbol": "XAUUSDT", "fundingIntervalHours": hours}])


def test_funding_info_row_without_symbol() -> None:
    with pytest.raises(MarketError, match="fundingInfo row 1 has no symbol"):
        funding_intervals_from_funding_info(
            [{"symbol": "A", "fundingIntervalHours": 4}, {"fundingIntervalHours": 4}]
        )


def test_universe_without_binance_symbols() -> None:
    universe = Universe(assets=(Asset("SPX", "equity", "cme_equity", {"bybit": "SPYUSDT"}),))
    assert instruments_from_markets({}, universe) == []
