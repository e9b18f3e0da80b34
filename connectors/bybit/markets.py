"""Bybit Instruments for a universe, from ccxt's ``load_markets()`` structure (no I/O here).

ccxt 4.5.x lists Bybit spot and derivative markets under unified symbols (``BTC/USDT`` spot,
``BTC/USDT:USDT`` perpetual, ``BTC/USDT:USDT-251226`` dated future): spot ``BTCUSDT`` and the
linear perpetual ``BTCUSDT`` share the same ``id``, so the universe's symbol is matched against
the ``id`` of **linear** markets only, perpetuals first. ``contractSize`` is 1 for linear
contracts (sizes are in base coin). ``info`` is the raw ``/v5/market/instruments-info`` row,
whose ``fundingInterval`` is in **minutes** (480 = 8 h).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from connectors.base import Instrument
from connectors.base import MarketError as BaseMarketError
from connectors.bybit.parse import VENUE
from streams.config import ConfigError, Universe

DEFAULT_FUNDING_INTERVAL_HOURS = 8.0  # Bybit's standard cycle, used when info has no interval


class BybitMarketError(BaseMarketError, ConfigError):
    """A universe symbol is not a Bybit linear market, or its metadata is unusable."""


def instruments_from_markets(
    markets: Mapping[str, Mapping[str, Any]], universe: Universe
) -> list[Instrument]:
    """Build the universe's Bybit Instruments (universe order) from ccxt markets.

    Parameters
    ----------
    markets
        ``ccxt.bybit().load_markets()`` (unified symbol → market dict).
    universe
        The watched assets; those with a ``bybit`` symbol become Instruments.

    Returns
    -------
    list of Instrument
        ``funding_interval_hours`` = ``info["fundingInterval"] / 60`` (minutes in the raw
        instrument row), or 8 h when the row has none.

    Raises
    ------
    BybitMarketError
        A universe symbol is not listed as a Bybit linear market, or its contract size or
        funding interval is not a positive number.

    Examples
    --------
    >>> from streams.config import parse_universe
    >>> universe = parse_universe(
    ...     {"assets": {"SPX": {"class": "equity", "symbols": {"bybit": "SPYUSDT"}}}}, "doc")
    >>> markets = {"SPY/USDT:USDT": {"id": "SPYUSDT", "symbol": "SPY/USDT:USDT", "linear": True,
    ...     "swap": True, "contractSize": 1.0, "info": {"fundingInterval": 240}}}
    >>> instruments_from_markets(markets, universe)
    [Instrument(venue='bybit', symbol='SPYUSDT', asset='SPX', asset_class='equity', \
contract_size=1.0, funding_interval_hours=4.0)]
    """
    linear: dict[str, Mapping[str, Any]] = {}
    for market in markets.values():
        market_id = market.get("id")
        if not isinstance(market_id, str) or market.get("linear") is not True:
            continue
        if market_id not in linear or (market.get("swap") and not linear[market_id].get("swap")):
            linear[market_id] = market
    instruments = []
    for asset in universe.assets:
        symbol = asset.symbols.get(VENUE)
        if symbol is None:
            continue
        found = linear.get(symbol)
        if found is None:
            raise BybitMarketError(
                f"{universe.source}: assets.{asset.name}.symbols.bybit: {symbol!r} is not a "
                "Bybit linear market (delisted or renamed? check "
                "/v5/market/instruments-info?category=linear and fix the universe)"
            )
        instruments.append(
            Instrument(
                venue=VENUE,
                symbol=symbol,
                asset=asset.name,
                asset_class=asset.asset_class,
                contract_size=_contract_size(symbol, found),
                funding_interval_hours=_funding_interval_hours(symbol, found),
            )
        )
    return instruments


def _contract_size(symbol: str, market: Mapping[str, Any]) -> float:
    raw = market.get("contractSize")
    if raw is None:
        return 1.0  # linear contracts are sized in base coin
    size = _as_float(raw)
    if size is None or size <= 0:
        raise BybitMarketError(f"Bybit {symbol}: contractSize {raw!r} is not a number > 0")
    return size


def _funding_interval_hours(symbol: str, market: Mapping[str, Any]) -> float:
    info = market.get("info")
    raw = info.get("fundingInterval") if isinstance(info, Mapping) else None
    if raw is None or raw == "":
        return DEFAULT_FUNDING_INTERVAL_HOURS
    minutes = _as_float(raw)
    if minutes is None or not 0 < minutes <= 24 * 60:
        raise BybitMarketError(
            f"Bybit {symbol}: info.fundingInterval {raw!r} is not 1..1440 minutes "
            "(a dated future has 0: the universe needs the perpetual)"
        )
    return minutes / 60.0


def _as_float(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
