"""Binance USD-M futures: liquidations (``!forceOrder@arr``), mark/index/funding
(``!markPrice@arr@1s``) and trade prices (``<symbol>@aggTrade``; optional ``@bookTicker`` mids).

- :mod:`~connectors.binance.schemas`: the wire frames, Binance's field names, meaning and unit.
- :mod:`~connectors.binance.parse`: :class:`BinanceParser`, pure frame → canonical events.
- :mod:`~connectors.binance.client`: :func:`connection_specs` (URLs after the 2026 split).
- :mod:`~connectors.binance.markets`: :func:`instruments_from_markets` from ccxt markets.
"""

from connectors.binance.client import connection_specs
from connectors.binance.markets import (
    MarketError,
    funding_intervals_from_funding_info,
    instruments_from_markets,
)
from connectors.binance.parse import BinanceParser

__all__ = [
    "BinanceParser",
    "MarketError",
    "connection_specs",
    "funding_intervals_from_funding_info",
    "instruments_from_markets",
]
