"""Bybit v5 public linear connections for a universe (specs only; the supervisor does the I/O).

One topic pair per instrument: ``allLiquidation.{symbol}`` (every liquidation; there is no
all-symbols wildcard) and ``tickers.{symbol}`` (last and mark price, funding, open interest).
The deprecated ``liquidation.{symbol}`` is not subscribed: it is a sampled subset of
``allLiquidation`` and would count the same liquidations twice.

Venue rules (``notes/exchanges.md`` §2, Bybit docs "Connect"): the client sends
``{"req_id":…,"op":"ping"}`` every 20 s (without ping or data the server cuts the link after
10 min); the ``args`` of a connection's subscriptions total at most 21,000 characters; Bybit
does not end public connections on a schedule, so there is no ``max_lifetime_s``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from connectors.base import ConnectionSpec, Instrument, Keepalive
from connectors.bybit.parse import VENUE, BybitParser
from connectors.bybit.schemas import SubscribeRequest

PRODUCTION_BASE_URL = "wss://stream.bybit.com"
LINEAR_PATH = "/v5/public/linear"
TOPICS_PER_MESSAGE = 10  # futures have no documented cap; 10 keeps each request small
ARGS_CHARS_PER_CONNECTION = 21_000  # Bybit's limit on the total length of args per connection
PING_INTERVAL_S = 20.0
PING_PAYLOAD = '{"req_id":"{n}","op":"ping"}'  # the supervisor puts the ping count in {n}
# Any frame resets the watchdog: tickers of a listed perp push every 100 ms while anything
# changes, and pongs come every 20 s, so 60 s of silence is three missed pongs.
STALE_AFTER_S = 60.0


def topics_for(instruments: Sequence[Instrument]) -> list[str]:
    """The topics to subscribe, two per instrument, in universe order.

    Examples
    --------
    >>> topics_for([Instrument("bybit", "SPYUSDT", "SPX", "equity")])
    ['allLiquidation.SPYUSDT', 'tickers.SPYUSDT']
    """
    topics: list[str] = []
    for symbol in dict.fromkeys(i.symbol for i in instruments):
        topics += [f"allLiquidation.{symbol}", f"tickers.{symbol}"]
    return topics


def connection_specs(
    instruments: Sequence[Instrument], ws_base_url: str | None = None
) -> list[ConnectionSpec]:
    """The Bybit connections that stream ``instruments``.

    Parameters
    ----------
    instruments
        Bybit linear instruments (from :func:`connectors.bybit.markets.instruments_from_markets`).
    ws_base_url
        ``scheme://host[:port]`` to connect to instead of production (tests: the fake server);
        ``/v5/public/linear`` is appended unless the URL already ends with it.

    Returns
    -------
    list of ConnectionSpec
        Usually one; more when the topics would exceed 21,000 characters of ``args`` on one
        connection. Both topics of a symbol always share a connection. Each spec subscribes in
        messages of at most 10 topics and expects one ack per message.

    Examples
    --------
    >>> specs = connection_specs([Instrument("bybit", "BTCUSDT", "BTC", "crypto")])
    >>> specs[0].url
    'wss://stream.bybit.com/v5/public/linear'
    >>> specs[0].subscribe
    ('{"req_id":"sub-0-0","op":"subscribe","args":["allLiquidation.BTCUSDT","tickers.BTCUSDT"]}',)
    >>> specs[0].keepalive
    Keepalive(kind='json_ping', interval_s=20.0, payload='{"req_id":"{n}","op":"ping"}')
    """
    url = _linear_url(ws_base_url)
    parser_factory = functools.partial(BybitParser, tuple(instruments))
    specs = []
    for index, topics in enumerate(_split_by_args_budget(topics_for(instruments))):
        messages = tuple(
            _subscribe_message(f"sub-{index}-{n}", topics[start : start + TOPICS_PER_MESSAGE])
            for n, start in enumerate(range(0, len(topics), TOPICS_PER_MESSAGE))
        )
        specs.append(
            ConnectionSpec(
                name=f"{VENUE}-linear-{index}",
                venue=VENUE,
                url=url,
                channels=tuple(topics),
                subscribe=messages,
                keepalive=Keepalive("json_ping", PING_INTERVAL_S, PING_PAYLOAD),
                parser_factory=parser_factory,
                stale_after_s=STALE_AFTER_S,
                max_lifetime_s=None,
                subscribe_ack_expected=len(messages),
            )
        )
    return specs


def _linear_url(ws_base_url: str | None) -> str:
    base = (ws_base_url or PRODUCTION_BASE_URL).rstrip("/")
    if not base.startswith(("ws://", "wss://")):
        raise ValueError(f"Bybit WebSocket URL {base!r} must start with ws:// or wss://")
    return base if base.endswith(LINEAR_PATH) else base + LINEAR_PATH


def _split_by_args_budget(topics: list[str]) -> list[list[str]]:
    """Group topics (in pairs: one symbol) so each group's args stay within the char limit.

    Measured as the compact JSON array of all the connection's topics (brackets, quotes and
    commas included), which over-counts Bybit's measure, whatever exactly it is, a little.
    """
    groups: list[list[str]] = [[]]
    used = 1  # "[" + "]" + one comma fewer than topics
    for start in range(0, len(topics), 2):
        pair = topics[start : start + 2]
        cost = sum(len(json.dumps(t)) + 1 for t in pair)
        if groups[-1] and used + cost > ARGS_CHARS_PER_CONNECTION:
            groups.append([])
            used = 1
        groups[-1].extend(pair)
        used += cost
    return [g for g in groups if g]


def _subscribe_message(req_id: str, topics: list[str]) -> str:
    request: SubscribeRequest = {"req_id": req_id, "op": "subscribe", "args": topics}
    return json.dumps(request, separators=(",", ":"))
