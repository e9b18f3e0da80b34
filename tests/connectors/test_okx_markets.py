"""instruments_from_markets on ccxt-shaped OKX markets: contract sizes, order, and clear errors
for unlisted symbols, inverse swaps, non-swaps, rebase contracts and the SPX6900 trap.

Markets are built offline with ccxt's own ``okx().parse_market`` from raw
``/api/v5/public/instruments`` rows, so their shape is what ``load_markets()`` returns."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from connectors.base import Instrument
from connectors.okx.markets import MarketError, instruments_from_markets
from streams.config import load_universe, parse_universe

_OKX = ccxt.okx()


def raw_swap(base: str, ct_val: str, **extra: str) -> dict[str, str]:
    """A raw OKX instrument row of a USDT-margined linear swap."""
    row = {
        "instId": f"{base}-USDT-SWAP", "instType": "SWAP", "instFamily": f"{base}-USDT",
        "uly": f"{base}-USDT", "ctType": "linear", "ctVal": ct_val, "ctValCcy": base,
        "ctMult": "1", "settleCcy": "USDT", "state": "live", "lever": "50", "tickSz": "0.1",
        "lotSz": "0.01", "minSz": "0.01", "listTime": "1573557408000", "instCategory": "1",
        "baseCcy": "", "quoteCcy": "", "expTime": "", "alias": "", "optType": "", "stk": "",
        "ruleType": "normal",
    }  # fmt: skip
    row.update(extra)
    return row


def markets(*rows: dict[str, str]) -> dict[str, dict[str, Any]]:
    parsed = [_OKX.parse_market(row) for row in rows]
    return {m["symbol"]: m for m in parsed}


# OKX ctVal (BTC 0.01, ETH 0.1, SOL 1, XRP 100 per contract; XAU 0.001 per third-party configs)
DEFAULT_ROWS = (
    raw_swap("BTC", "0.01"),
    raw_swap("ETH", "0.1"),
    raw_swap("SOL", "1"),
    raw_swap("XRP", "100"),
    raw_swap("XAU", "0.001", instCategory="4"),
    raw_swap("SPX", "1"),  # SPX6900, listed by OKX but not mapped by the default universe
)


def universe(okx_symbols: dict[str, tuple[str, str]]) -> Any:
    doc = {
        "assets": {
            name: {"class": cls, "symbols": {"okx": symbol}}
            for name, (cls, symbol) in okx_symbols.items()
        }
    }
    return parse_universe(doc, "test universe")


def test_default_universe() -> None:
    got = instruments_from_markets(markets(*DEFAULT_ROWS), load_universe())
    assert got == [
        Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", 0.01, 8.0),
        Instrument("okx", "ETH-USDT-SWAP", "ETH", "crypto", 0.1, 8.0),
        Instrument("okx", "SOL-USDT-SWAP", "SOL", "crypto", 1.0, 8.0),
        Instrument("okx", "XRP-USDT-SWAP", "XRP", "crypto", 100.0, 8.0),
        Instrument("okx", "XAU-USDT-SWAP", "GOLD", "metal", 0.001, 8.0),
    ]  # SPX and NDX have no okx symbol in the default universe


def test_the_contract_size_is_taken_from_the_market_not_assumed() -> None:
    u = universe({"BTC": ("crypto", "BTC-USDT-SWAP")})
    (inst,) = instruments_from_markets(markets(raw_swap("BTC", "0.001")), u)
    assert inst.contract_size == 0.001


def test_ct_val_is_the_fallback_when_contract_size_is_missing() -> None:
    market = dict(markets(raw_swap("ETH", "0.1"))["ETH/USDT:USDT"], contractSize=None)
    u = universe({"ETH": ("crypto", "ETH-USDT-SWAP")})
    (inst,) = instruments_from_markets({"ETH/USDT:USDT": market}, u)
    assert inst.contract_size == 0.1


@pytest.mark.parametrize("bad", [None, "", "0", "-1", "nan", "abc"])
def test_no_usable_contract_size(bad: str | None) -> None:
    market = markets(raw_swap("ETH", "0.1"))["ETH/USDT:USDT"]
    market = dict(market, contractSize=None, info=dict(market["info"], ctVal=bad))
    u = universe({"ETH": ("crypto", "ETH-USDT-SWAP")})
    with pytest.raises(MarketError, match=r"'ETH-USDT-SWAP' \(universe asset ETH\).*contract size"):
        instruments_from_markets({"ETH/USDT:USDT": market}, u)


def test_unlisted_symbol_names_it() -> None:
    rows = [r for r in DEFAULT_ROWS if r["instId"] != "XAU-USDT-SWAP"]
    with pytest.raises(MarketError, match=r"'XAU-USDT-SWAP' \(universe asset GOLD\) is not listed"):
        instruments_from_markets(markets(*rows), load_universe())


def test_inverse_swap_is_refused() -> None:
    inverse = raw_swap(
        "BTC", "100", instId="BTC-USD-SWAP", instFamily="BTC-USD", uly="BTC-USD",
        ctType="inverse", ctValCcy="USD", settleCcy="BTC",
    )  # fmt: skip
    u = universe({"BTC": ("crypto", "BTC-USD-SWAP")})
    with pytest.raises(MarketError, match=r"'BTC-USD-SWAP'.*inverse.*100 USD, not base units"):
        instruments_from_markets(markets(inverse), u)


def test_inverse_is_refused_even_when_only_the_unified_flag_says_so() -> None:
    market = markets(raw_swap("BTC", "0.01"))["BTC/USDT:USDT"]
    market = dict(market, linear=False, inverse=True, info={})
    u = universe({"BTC": ("crypto", "BTC-USDT-SWAP")})
    with pytest.raises(MarketError, match="inverse"):
        instruments_from_markets({"x": market}, u)


def test_contract_value_not_in_the_base_currency_is_refused() -> None:
    u = universe({"BTC": ("crypto", "BTC-USDT-SWAP")})
    with pytest.raises(MarketError, match="contract value is in USDT, not the base currency BTC"):
        instruments_from_markets(markets(raw_swap("BTC", "10", ctValCcy="USDT")), u)


def test_spot_is_refused() -> None:
    spot = {
        "instId": "BTC-USDT", "instType": "SPOT", "baseCcy": "BTC", "quoteCcy": "USDT",
        "state": "live", "tickSz": "0.1", "lotSz": "0.00000001", "minSz": "0.00001",
        "listTime": "1548133413000", "instCategory": "1",
    }  # fmt: skip
    u = universe({"BTC": ("crypto", "BTC-USDT")})
    with pytest.raises(MarketError, match=r"'BTC-USDT'.*not a perpetual swap \(type 'spot'\)"):
        instruments_from_markets(markets(spot), u)


def test_rebase_contract_is_refused() -> None:
    u = universe({"MUU": ("equity", "MUU-USDT-SWAP")})
    row = raw_swap("MUU", "1", ruleType="rebase_contract", instCategory="3")
    with pytest.raises(MarketError, match="rebase"):
        instruments_from_markets(markets(row), u)


def test_contract_multiplier_other_than_one_is_refused() -> None:
    u = universe({"BTC": ("crypto", "BTC-USDT-SWAP")})
    with pytest.raises(MarketError, match="ctMult='10'"):
        instruments_from_markets(markets(raw_swap("BTC", "0.01", ctMult="10")), u)


def test_spx6900_is_not_the_sp500() -> None:
    u = universe({"SPX": ("equity", "SPX-USDT-SWAP")})
    with pytest.raises(MarketError, match="SPX6900 meme coin, not the S&P 500"):
        instruments_from_markets(markets(*DEFAULT_ROWS), u)


def test_stock_perp_and_tokenized_gold_are_accepted() -> None:
    u = universe({"TSLA": ("equity", "TSLA-USDT-SWAP"), "GOLD": ("metal", "XAUT-USDT-SWAP")})
    rows = (raw_swap("TSLA", "0.1", instCategory="3"), raw_swap("XAUT", "0.001"))
    got = instruments_from_markets(markets(*rows), u)
    assert got == [
        Instrument("okx", "TSLA-USDT-SWAP", "TSLA", "equity", 0.1, 8.0),
        Instrument("okx", "XAUT-USDT-SWAP", "GOLD", "metal", 0.001, 8.0),
    ]


def test_universe_without_okx_symbols_gives_nothing() -> None:
    doc = {"assets": {"BTC": {"class": "crypto", "symbols": {"binance": "BTCUSDT"}}}}
    assert instruments_from_markets(markets(*DEFAULT_ROWS), parse_universe(doc, "t")) == []
