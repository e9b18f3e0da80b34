"""Binance USD-M futures connections for a universe: URLs, streams, keepalive. No I/O here.

Since the 2026 URL split (announced 2026-03-06, legacy ``/ws`` and ``/stream`` retired
2026-04-23) market streams live under two paths of ``wss://fstream.binance.com``:

- ``/market``: ``!forceOrder@arr`` (all-market liquidations), ``!markPrice@arr@1s`` (mark,
  index and funding of every symbol, each second) and ``<symbol>@aggTrade`` (trade prices);
- ``/public``: ``<symbol>@bookTicker`` (best bid/ask → ``mid`` ticks), off by default.

The streams go in the URL of a **combined-stream** connection (``/market/stream?streams=a/b``),
so every frame arrives wrapped as ``{"stream": ..., "data": ...}``, nothing has to be sent
after connecting, and a reconnect resubscribes by itself. Trade prices come from ``aggTrade``:
one frame per taker order, a few per second on the majors, enough for 1-60 s bars.
``bookTicker`` sends every change of the best bid/ask (hundreds per second on BTCUSDT) and is
opt-in (``book_ticker=True``) for thin markets (``XAUUSDT`` at weekends) where trades are rare.

Keepalive: the server sends a ping frame every 3 min and drops the connection without a pong
within 10 min; ``websockets`` answers pings itself. Binance ends every connection after 24 h.

>>> btc = Instrument(venue="binance", symbol="BTCUSDT", asset="BTC", asset_class="crypto")
>>> for spec in connection_specs([btc], book_ticker=True):
...     print(spec.url)
wss://fstream.binance.com/market/stream?streams=!forceOrder@arr/!markPrice@arr@1s/btcusdt@aggTrade
wss://fstream.binance.com/public/stream?streams=btcusdt@bookTicker
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from connectors.base import ConnectionSpec, Instrument, Keepalive, VenueParser
from connectors.binance.parse import VENUE, BinanceParser, stream_channel

PRODUCTION_WS_BASE_URL = "wss://fstream.binance.com"
MARKET_PATH = "/market"
PUBLIC_PATH = "/public"
ALL_MARKET_STREAMS = ("!forceOrder@arr", "!markPrice@arr@1s")
MAX_STREAMS_PER_CONNECTION = 200
"""Binance allows 1024 streams per connection; ccxt caps itself at 200, and so does firesale
(it also keeps the URL short)."""
SERVER_PING_INTERVAL_S = 180.0
MAX_LIFETIME_S = 24 * 3600.0
MARKET_STALE_AFTER_S = 10.0
"""``!markPrice@arr@1s`` sends a frame every second: ten silent seconds mean a dead feed."""
PUBLIC_STALE_AFTER_S = 30.0
"""bookTicker of a quiet book can pause; 30 s without any change means a dead feed."""


def stream_name(symbol: str, channel: str) -> str:
    """A per-symbol stream name: lower-case symbol, camel-case channel.

    Examples
    --------
    >>> stream_name("XAUUSDT", "aggTrade")
    'xauusdt@aggTrade'
    """
    return f"{symbol.lower()}@{channel}"


def subscribe_message(streams: Sequence[str], request_id: int) -> str:
    """A ``SUBSCRIBE`` request, for adding streams to an open connection.

    Binance answers ``{"result": null, "id": <request_id>}``; ``request_id`` must be an
    unsigned integer. At most 10 messages per second may be sent on a connection.

    Examples
    --------
    >>> subscribe_message(["btcusdt@aggTrade"], 7)
    '{"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 7}'
    """
    if request_id < 0:
        raise ValueError(f"request_id is {request_id}: Binance needs an unsigned integer")
    return json.dumps({"method": "SUBSCRIBE", "params": list(streams), "id": request_id})


def connection_specs(
    instruments: Sequence[Instrument],
    ws_base_url: str | None = None,
    *,
    book_ticker: bool = False,
) -> list[ConnectionSpec]:
    """The connections that stream ``instruments`` (liquidations, mark/funding, prices).

    Parameters
    ----------
    instruments
        The universe's Binance instruments
        (:func:`connectors.binance.markets.instruments_from_markets`).
    ws_base_url
        Scheme and host, without a path: ``wss://fstream.binance.com`` by default; tests pass
        the fake server's ``ws://127.0.0.1:<port>``.
    book_ticker
        Also open ``/public`` connection(s) with ``<symbol>@bookTicker`` (``mid`` ticks).

    Returns
    -------
    list of ConnectionSpec
        ``binance-market-<n>`` (the all-market streams ride on the first one) and, with
        ``book_ticker``, ``binance-public-<n>``; at most :data:`MAX_STREAMS_PER_CONNECTION`
        streams each. ``channels`` are the stream families (``forceOrder``, ``markPrice``,
        ``aggTrade``, ``bookTicker``): the same names the parser's rejects carry. Empty when
        ``instruments`` is empty.

    Raises
    ------
    ValueError
        ``ws_base_url`` is not ``ws://`` or ``wss://``, or carries a path (e.g. the retired
        legacy ``wss://fstream.binance.com/ws``).

    Examples
    --------
    >>> btc = Instrument(venue="binance", symbol="BTCUSDT", asset="BTC", asset_class="crypto")
    >>> (spec,) = connection_specs([btc], "ws://127.0.0.1:8765")
    >>> spec.name, spec.channels, spec.subscribe, spec.keepalive.kind, spec.max_lifetime_s
    ('binance-market-0', ('forceOrder', 'markPrice', 'aggTrade'), (), 'server_ping', 86400.0)
    """
    base = _check_base(PRODUCTION_WS_BASE_URL if ws_base_url is None else ws_base_url)
    if not instruments:
        return []
    frozen = tuple(instruments)

    def parser_factory() -> VenueParser:
        return BinanceParser(frozen)

    symbols = [i.symbol for i in frozen]
    plan: list[tuple[str, str, list[str], float]] = []
    market = [*ALL_MARKET_STREAMS, *(stream_name(s, "aggTrade") for s in symbols)]
    for n, chunk in enumerate(_chunks(market)):
        plan.append((f"binance-market-{n}", MARKET_PATH, chunk, MARKET_STALE_AFTER_S))
    if book_ticker:
        public = [stream_name(s, "bookTicker") for s in symbols]
        for n, chunk in enumerate(_chunks(public)):
            plan.append((f"binance-public-{n}", PUBLIC_PATH, chunk, PUBLIC_STALE_AFTER_S))
    return [
        ConnectionSpec(
            name=name,
            venue=VENUE,
            url=f"{base}{path}/stream?streams={'/'.join(streams)}",
            channels=_channels(streams),
            subscribe=(),
            keepalive=Keepalive(kind="server_ping", interval_s=SERVER_PING_INTERVAL_S),
            parser_factory=parser_factory,
            stale_after_s=stale_after_s,
            max_lifetime_s=MAX_LIFETIME_S,
            subscribe_ack_expected=0,
        )
        for name, path, streams, stale_after_s in plan
    ]


def _check_base(url: str) -> str:
    base = url.rstrip("/")
    scheme, sep, rest = base.partition("://")
    if not sep or scheme not in ("ws", "wss") or not rest:
        raise ValueError(f"ws_base_url {url!r} must look like wss://host[:port]")
    if "/" in rest:
        raise ValueError(
            f"ws_base_url {url!r} has a path: pass only scheme and host (e.g. "
            f"{PRODUCTION_WS_BASE_URL}); the /market and /public paths are added here, and the "
            "legacy /ws and /stream paths were retired on 2026-04-23"
        )
    return base


def _chunks(streams: list[str]) -> list[list[str]]:
    size = MAX_STREAMS_PER_CONNECTION
    return [streams[i : i + size] for i in range(0, len(streams), size)]


def _channels(streams: list[str]) -> tuple[str, ...]:
    families: list[str] = []
    for stream in streams:
        family = stream_channel(stream)
        if family is not None and family not in families:
            families.append(family)
    return tuple(families)
