"""OKX v5 connector: liquidations, funding, mark and trade prices from the public WebSocket.

- :mod:`connectors.okx.schemas`: the wire frames, field names as OKX names them.
- :mod:`connectors.okx.parse`: :class:`OkxParser`, pure frame → canonical events.
- :mod:`connectors.okx.client`: :func:`connection_specs`, the connection the supervisor opens.
- :mod:`connectors.okx.markets`: :func:`instruments_from_markets`, contract sizes from ccxt.
"""

from connectors.okx.client import connection_specs
from connectors.okx.markets import MarketError, instruments_from_markets
from connectors.okx.parse import OkxParser

__all__ = ["MarketError", "OkxParser", "connection_specs", "instruments_from_markets"]
