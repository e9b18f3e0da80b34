"""OKX v5 public WebSocket: the connection the supervisor opens for a universe. No I/O here.

One connection to ``wss://ws.okx.com:8443/ws/v5/public`` carries everything:

- ``liquidation-orders`` with ``instType=SWAP``: ONE subscription for every swap on OKX (the
  parser filters to the universe on ``data[].instId``);
- ``funding-rate``, ``mark-price`` and ``trades`` per ``instId``.

OKX counts every subscribe/unsubscribe/login request against **480 per hour per connection**,
so all args go in as few ``subscribe`` requests as possible (:data:`MAX_ARGS_PER_REQUEST` each).
OKX answers each arg with its own ack (``{"event":"subscribe","arg":{...}}``), hence
``subscribe_ack_expected`` = the number of args.

Keepalive (OKX docs, "Connect"): the server cuts a connection with no subscription, or with
no data pushed, for 30 s (close code 4004 "No data received in 30s"). The client sends the
text ``ping`` when idle for :data:`PING_IDLE_S` (< 30 s) and gets the text ``pong``. OKX has no
documented maximum connection lifetime; before a service upgrade it sends a ``notice`` event
(code 64008) and then closes, which the supervisor handles as an ordinary reconnect.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from connectors.base import ConnectionSpec, Instrument, Keepalive
from connectors.okx.parse import VENUE, OkxParser
from connectors.okx.schemas import OkxArg, OkxSubscribeRequest

WS_BASE_URL = "wss://ws.okx.com:8443"
PUBLIC_PATH = "/ws/v5/public"
PING_IDLE_S = 20.0  # OKX cuts after 30 s without traffic; ccxt pings every 18 s
STALE_AFTER_S = 30.0  # mark-price pushes each instrument at least every 10 s
MAX_ARGS_PER_REQUEST = 100  # far below OKX's 64 KB request limit (~70 bytes per arg)
PER_INSTRUMENT_CHANNELS = ("funding-rate", "mark-price", "trades")


def connection_specs(
    instruments: Sequence[Instrument], ws_base_url: str | None = None
) -> list[ConnectionSpec]:
    """The OKX connection(s) that stream the universe's instruments.

    Parameters
    ----------
    instruments : Sequence[Instrument]
        The universe's OKX instruments (``venue == "okx"``, USDT-margined ``*-SWAP``); an
        empty sequence needs no connection.
    ws_base_url : str or None
        Scheme, host and port to connect to (default ``wss://ws.okx.com:8443``); the path
        ``/ws/v5/public`` is appended. Tests pass the fake server's ``ws://127.0.0.1:<port>``.

    Returns
    -------
    list[ConnectionSpec]
        One spec: the public URL, the subscribe requests (JSON text), the text-ping
        keepalive, ``stale_after_s`` = 30 s (each instrument's mark price arrives at least every
        10 s), no ``max_lifetime_s``, one ack expected per subscription arg.

    Raises
    ------
    ValueError
        An instrument of another venue, or not a perpetual swap (``-SWAP``).

    Examples
    --------
    >>> from connectors.base import Instrument
    >>> (spec,) = connection_specs([Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", 0.01)])
    >>> spec.url
    'wss://ws.okx.com:8443/ws/v5/public'
    >>> import json
    >>> request = json.loads(spec.subscribe[0])
    >>> request["id"], request["op"], request["args"][0]
    ('1', 'subscribe', {'channel': 'liquidation-orders', 'instType': 'SWAP'})
    >>> [(a["channel"], a["instId"]) for a in request["args"][1:]]  # doctest: +NORMALIZE_WHITESPACE
    [('funding-rate', 'BTC-USDT-SWAP'), ('mark-price', 'BTC-USDT-SWAP'),
     ('trades', 'BTC-USDT-SWAP')]
    >>> spec.keepalive, spec.subscribe_ack_expected
    (Keepalive(kind='text_ping', interval_s=20.0, payload='ping'), 4)
    """
    for inst in instruments:
        if inst.venue != VENUE:
            raise ValueError(f"{inst.symbol!r} is a {inst.venue!r} instrument, not an OKX one")
        if not inst.symbol.endswith("-SWAP"):
            raise ValueError(
                f"{inst.symbol!r} is not an OKX perpetual swap: this connector subscribes "
                "liquidation-orders for instType SWAP only; use e.g. BTC-USDT-SWAP"
            )
    if not instruments:
        return []
    args: list[OkxArg] = [{"channel": "liquidation-orders", "instType": "SWAP"}]
    symbols = list(dict.fromkeys(inst.symbol for inst in instruments))
    for channel in PER_INSTRUMENT_CHANNELS:
        args.extend({"channel": channel, "instId": symbol} for symbol in symbols)
    requests = tuple(
        _request(n, args[start : start + MAX_ARGS_PER_REQUEST])
        for n, start in enumerate(range(0, len(args), MAX_ARGS_PER_REQUEST), start=1)
    )
    frozen = tuple(instruments)
    base = (ws_base_url or WS_BASE_URL).rstrip("/")
    return [
        ConnectionSpec(
            name="okx-public",
            venue=VENUE,
            url=base + PUBLIC_PATH,
            channels=("liquidation-orders", *PER_INSTRUMENT_CHANNELS),
            subscribe=requests,
            keepalive=Keepalive(kind="text_ping", interval_s=PING_IDLE_S, payload="ping"),
            parser_factory=lambda: OkxParser(frozen),
            stale_after_s=STALE_AFTER_S,
            max_lifetime_s=None,
            subscribe_ack_expected=len(args),
        )
    ]


def _request(n: int, args: list[OkxArg]) -> str:
    request: OkxSubscribeRequest = {"id": str(n), "op": "subscribe", "args": args}
    return orjson.dumps(request).decode()
