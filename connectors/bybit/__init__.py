"""Bybit v5 public linear (USDT/USDC perpetuals): liquidations, prices and funding.

- :mod:`connectors.bybit.schemas`: the wire frames, fields named as Bybit names them.
- :mod:`connectors.bybit.parse`: :class:`~connectors.bybit.parse.BybitParser`, pure.
- :mod:`connectors.bybit.client`: :func:`~connectors.bybit.client.connection_specs`.
- :mod:`connectors.bybit.markets`: Instruments from ccxt's ``load_markets()``.
"""

from connectors.bybit.client import connection_specs
from connectors.bybit.markets import instruments_from_markets
from connectors.bybit.parse import BybitParser

__all__ = ["BybitParser", "connection_specs", "instruments_from_markets"]
