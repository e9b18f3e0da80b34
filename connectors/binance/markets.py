"""Binance USD-M instruments for a universe, from ccxt's ``binanceusdm().load_markets()``.

ccxt 4.5.x unified market dicts give the venue id (``id``, e.g. ``XAUUSDT``), the kind
(``swap``, ``linear``) and ``contractSize`` (1.0 on USD-M linear: sizes are in base units).
TradFi perps such as ``XAUUSDT`` (``contractType=TRADIFI_PERPETUAL`` in ``info``) load as
ordinary linear swaps.

**Funding interval.** Neither ``/fapi/v1/exchangeInfo`` (ccxt's ``info``) nor the mark-price
stream carries a symbol's settlement cycle. The real source is REST
``GET /fapi/v1/fundingInfo``, which lists the symbols whose funding settings were adjusted,
with ``fundingIntervalHours`` (4 h, 1 h...); every symbol it does not list settles every 8 h.
Fetch it at start-up (``binanceusdm().fapiPublicGetFundingInfo()``, or the ``info`` of each
``fetch_funding_intervals()`` entry), turn it into a mapping with
:func:`funding_intervals_from_funding_info` and pass it as ``funding_intervals``. Without it
the interval is ``info["fundingIntervalHours"]`` when a market carries it, else 8 h, which is
wrong for 4 h/1 h symbols (and XAUUSDT moved from 4 h to 8 h on 2026-01-30): annualized rates
would be off by the ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from connectors.base import Instrument
from connectors.base import MarketError as BaseMarketError
from connectors.binance.parse import DEFAULT_FUNDING_INTERVAL_HOURS, VENUE
from streams.config import Universe


class MarketError(BaseMarketError):
    """A universe symbol is not a usable Binance USD-M market; the message names it."""


def funding_intervals_from_funding_info(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Map symbol → funding interval in hours from ``GET /fapi/v1/fundingInfo`` rows.

    Raises
    ------
    MarketError
        A row without a symbol, or with an interval that is not a number in (0, 24].

    Examples
    --------
    >>> funding_intervals_from_funding_info([
    ...     {"symbol": "BLZUSDT", "adjustedFundingRateCap": "0.03000000",
    ...      "adjustedFundingRateFloor": "-0.03000000", "fundingIntervalHours": 4,
    ...      "disclaimer": False}])
    {'BLZUSDT': 4.0}
    """
    intervals: dict[str, float] = {}
    for n, row in enumerate(rows):
        symbol = row.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise MarketError(f"fundingInfo row {n} has no symbol: {dict(row)!r:.120}")
        intervals[symbol] = _hours(row.get("fundingIntervalHours"), f"fundingInfo {symbol}")
    return intervals


def instruments_from_markets(
    markets: Mapping[str, Mapping[str, Any]],
    universe: Universe,
    funding_intervals: Mapping[str, float] | None = None,
) -> list[Instrument]:
    """The universe's Binance instruments, in universe order, from ccxt markets.

    Parameters
    ----------
    markets
        ``ccxt.binanceusdm().load_markets()`` (keyed by unified symbol; values hold ``id``,
        ``swap``, ``linear``, ``contractSize``, ``info``).
    universe
        Assets with a ``binance`` symbol are looked up by venue id.
    funding_intervals
        Symbol → hours, from :func:`funding_intervals_from_funding_info`; it wins over
        ``info["fundingIntervalHours"]`` and the 8 h default.

    Raises
    ------
    MarketError
        A universe symbol is not listed, is listed but not as a USD-M linear perpetual, or has
        a contract size or funding interval that is not a positive number (interval ≤ 24 h).

    Examples
    --------
    >>> from streams.config import Asset, Universe
    >>> universe = Universe(assets=(Asset("GOLD", "metal", "cme_metals", {"binance": "XAUUSDT"}),))
    >>> markets = {"XAU/USDT:USDT": {"id": "XAUUSDT", "swap": True, "linear": True,
    ...                              "contractSize": 1.0, "info": {"symbol": "XAUUSDT"}}}
    >>> instruments_from_markets(markets, universe, {"XAUUSDT": 8})
    [Instrument(venue='binance', symbol='XAUUSDT', asset='GOLD', asset_class='metal', contract_size=1.0, funding_interval_hours=8.0)]
    """  # noqa: E501
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for market in markets.values():
        by_id.setdefault(str(market.get("id")), []).append(market)
    intervals = funding_intervals or {}
    instruments: list[Instrument] = []
    for asset in universe.assets:
        symbol = asset.symbols.get(VENUE)
        if symbol is None:
            continue
        where = f"binance symbol {symbol!r} (asset {asset.name}, {universe.source})"
        candidates = by_id.get(symbol, [])
        perps = [m for m in candidates if m.get("swap") is True and m.get("linear") is True]
        if not perps:
            if candidates:
                kinds = ", ".join(f"{m.get('symbol')} ({m.get('type')})" for m in candidates)
                raise MarketError(
                    f"{where} is listed only as {kinds}, not as a USD-M linear perpetual: "
                    "use the perpetual's id in the universe file"
                )
            raise MarketError(
                f"{where} is not listed by binanceusdm load_markets(): check the symbol in the "
                "universe file, or whether Binance renamed or delisted it"
            )
        market = perps[0]
        size = market.get("contractSize")
        contract_size = 1.0 if size is None else _positive(size, f"{where}: contractSize")
        info = market.get("info") or {}
        if symbol in intervals:
            hours = _hours(intervals[symbol], f"{where}: funding_intervals")
        elif isinstance(info, Mapping) and info.get("fundingIntervalHours") not in (None, ""):
            hours = _hours(info["fundingIntervalHours"], f"{where}: info.fundingIntervalHours")
        else:
            hours = DEFAULT_FUNDING_INTERVAL_HOURS
        instruments.append(
            Instrument(
                venue=VENUE,
                symbol=symbol,
                asset=asset.name,
                asset_class=asset.asset_class,
                contract_size=contract_size,
                funding_interval_hours=hours,
            )
        )
    return instruments


def _positive(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MarketError(f"{where} is {value!r:.40}, not a number") from None
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        raise MarketError(f"{where} is {value!r:.40}: must be a finite number > 0")
    return number


def _hours(value: Any, where: str) -> float:
    hours = _positive(value, where)
    if hours > 24:
        raise MarketError(f"{where} is {hours:g} h: a funding interval is at most 24 h")
    return hours
