"""Build the universe's OKX :class:`~connectors.base.Instrument` list from ccxt's markets.

Input: the dict ``ccxt.okx().load_markets()`` returns (ccxt 4.5.x unified market dicts keyed by
ccxt symbol, e.g. ``"BTC/USDT:USDT"``), whose ``id`` is OKX's ``instId`` (``BTC-USDT-SWAP``), whose
``contractSize`` is ``ctVal``, and whose ``info`` is the raw ``/api/v5/public/instruments`` row
(``ctVal``, ``ctValCcy``, ``ctType``, ``instCategory``, ...). No network here: the caller loads
the markets (or a test writes them by hand).

Only **linear perpetual swaps** are accepted: their ``ctVal`` is in the base currency, so
``sz × ctVal`` is a base quantity (``BTC-USDT-SWAP`` 0.01 BTC, ``ETH-USDT-SWAP`` 0.1 ETH,
``XAU-USDT-SWAP`` 0.001 XAU — the last per third-party configs measured from
``/public/instruments``; the value used is always the one loaded). Inverse swaps
(``BTC-USD-SWAP``: ``ctType`` inverse, ``ctVal`` 100 **USD**) are refused with an error.

Symbol trap: ``SPX-USDT-SWAP`` on OKX is **SPX6900, a meme coin** (listed 2025-07-17), not the
S&P 500. The default universe maps no S&P 500 proxy on OKX; an ``equity`` asset mapped to an
instrument whose ``info['instCategory']`` says crypto (``"1"``) is refused. (``instCategory``:
``1`` crypto, ``3`` stocks, ``4`` commodities — agreed by two third-party clients, not yet seen
in OKX's own docs; the check only fires when the field is present. A ``metal`` asset may use
tokenized gold such as ``XAUT-USDT-SWAP``, a crypto-category instrument, so it is not checked.)

Funding interval: OKX instruments carry no funding-interval field, so every instrument gets
OKX's default 8 h (USDT swaps and stock perps settle at 00:00/08:00/16:00 UTC); the parser
prefers the interval each ``funding-rate`` frame states (``nextFundingTime − fundingTime``),
which also catches instruments moved to 1-4 h cycles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from connectors.base import Instrument
from connectors.base import MarketError as BaseMarketError
from streams.config import Universe

VENUE = "okx"
DEFAULT_FUNDING_INTERVAL_HOURS = 8.0
CRYPTO_CATEGORY = "1"  # info['instCategory']: 1 crypto, 3 stocks, 4 commodities


class MarketError(BaseMarketError):
    """A universe symbol has no usable OKX instrument; the message names it and what to do."""


def instruments_from_markets(
    markets: Mapping[str, Mapping[str, Any]], universe: Universe
) -> list[Instrument]:
    """The universe's OKX instruments, in universe order, with contract sizes from ccxt.

    Parameters
    ----------
    markets : Mapping[str, Mapping[str, Any]]
        ``ccxt.okx().load_markets()``: ccxt symbol → unified market dict.
    universe : Universe
        The watched assets; those with an ``okx`` symbol are looked up by ``instId``.

    Returns
    -------
    list[Instrument]
        ``contract_size`` = ``contractSize`` (``ctVal``, base units per contract),
        ``funding_interval_hours`` = 8.0 (OKX's default; see the module notes).

    Raises
    ------
    MarketError
        A universe symbol OKX does not list, or one that is not a linear perpetual swap in
        base units (inverse swaps, spot, futures, rebase contracts), or whose contract size
        is missing, or an ``equity`` asset mapped to a crypto-category instrument (the
        ``SPX-USDT-SWAP`` = SPX6900 trap).

    Examples
    --------
    >>> from streams.config import Asset, Universe
    >>> btc = {"id": "BTC-USDT-SWAP", "symbol": "BTC/USDT:USDT", "baseId": "BTC",
    ...        "swap": True, "linear": True, "contractSize": 0.01,
    ...        "info": {"instId": "BTC-USDT-SWAP", "ctType": "linear", "ctVal": "0.01",
    ...                 "ctValCcy": "BTC", "instCategory": "1"}}
    >>> universe = Universe((Asset("BTC", "crypto", "24/7", {"okx": "BTC-USDT-SWAP"}),))
    >>> instruments_from_markets({"BTC/USDT:USDT": btc}, universe)
    [Instrument(venue='okx', symbol='BTC-USDT-SWAP', asset='BTC', asset_class='crypto', \
contract_size=0.01, funding_interval_hours=8.0)]
    """
    by_id = {str(m.get("id")): m for m in markets.values()}
    instruments: list[Instrument] = []
    for asset in universe.assets:
        inst_id = asset.symbols.get(VENUE)
        if inst_id is None:
            continue
        where = f"OKX {inst_id!r} (universe asset {asset.name})"
        market = by_id.get(inst_id)
        if market is None:
            raise MarketError(
                f"{where} is not listed by OKX: check the instId (e.g. BTC-USDT-SWAP) in "
                f"{universe.source}, or remove the okx symbol of {asset.name}"
            )
        info = market.get("info")
        info = info if isinstance(info, Mapping) else {}
        _check_linear_swap(where, market, info)
        _check_category(where, asset.asset_class, info)
        instruments.append(
            Instrument(
                venue=VENUE,
                symbol=inst_id,
                asset=asset.name,
                asset_class=asset.asset_class,
                contract_size=_contract_size(where, market, info),
                funding_interval_hours=DEFAULT_FUNDING_INTERVAL_HOURS,
            )
        )
    return instruments


def _check_linear_swap(where: str, market: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    if market.get("swap") is not True and info.get("instType") != "SWAP":
        raise MarketError(
            f"{where} is not a perpetual swap (type {market.get('type')!r}): "
            "map the asset to its USDT-margined swap, e.g. BTC-USDT-SWAP"
        )
    if info.get("ctType") == "inverse" or market.get("inverse") is True:
        raise MarketError(
            f"{where} is an inverse (coin-margined) swap: its contracts are worth "
            f"{info.get('ctVal', '?')} {info.get('ctValCcy', 'USD')}, not base units; "
            "use the USDT-margined linear swap, e.g. BTC-USDT-SWAP"
        )
    if market.get("linear") is not True and info.get("ctType") != "linear":
        raise MarketError(f"{where} is not marked linear: cannot convert contracts to base units")
    ct_val_ccy = info.get("ctValCcy")
    base = market.get("baseId") or market.get("base")
    if ct_val_ccy and base and ct_val_ccy != base:
        raise MarketError(
            f"{where}: contract value is in {ct_val_ccy}, not the base currency {base}; "
            "sizes would not be base units"
        )
    if info.get("ruleType") == "rebase_contract" or info.get("state") == "rebase":
        raise MarketError(
            f"{where} is a rebase (leveraged-ETF) contract: sizes and prices reset at each "
            "rebase, so it cannot serve as a price proxy"
        )
    ct_mult = info.get("ctMult")
    if ct_mult not in (None, "", "1") and _as_float(ct_mult) != 1.0:
        raise MarketError(f"{where}: contract multiplier ctMult={ct_mult!r} is not supported")


def _check_category(where: str, asset_class: str, info: Mapping[str, Any]) -> None:
    # Narrow on purpose: a metal asset may legitimately use tokenized gold (XAUT-USDT-SWAP,
    # a crypto-category instrument); an equity index on a crypto coin is the SPX6900 trap.
    if asset_class == "equity" and str(info.get("instCategory", "")) == CRYPTO_CATEGORY:
        raise MarketError(
            f"{where} is a crypto instrument for OKX (instCategory {CRYPTO_CATEGORY}) but the "
            "universe says equity. Tickers collide: SPX-USDT-SWAP on OKX is the SPX6900 meme "
            "coin, not the S&P 500; map equity assets to OKX stock perps (instCategory 3)"
        )


def _contract_size(where: str, market: Mapping[str, Any], info: Mapping[str, Any]) -> float:
    size = _as_float(market.get("contractSize"))
    if size is None:
        size = _as_float(info.get("ctVal"))
    if size is None or not math.isfinite(size) or size <= 0:
        raise MarketError(
            f"{where} has no usable contract size (contractSize={market.get('contractSize')!r},"
            f" ctVal={info.get('ctVal')!r}): reload the markets"
        )
    return size


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
