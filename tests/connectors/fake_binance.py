"""A fake Binance USD-M market-stream server (post-2026 URL split), for connector tests.

What it mimics (``shared/notes/exchanges.md`` §1):

- paths ``/market`` and ``/public``, each in **ws mode** (``/market/ws/<s1>/<s2>``: raw
  payloads; path segments that are not stream names, such as ccxt's ``/market/ws/0``, are
  ignored) or **stream mode** (``/market/stream?streams=<s1>/<s2>``: frames wrapped as
  ``{"stream":…,"data":…}``); streams can also be added later with ``SUBSCRIBE``;
- the retired legacy paths (``/ws``, ``/stream``, anything else) fail the handshake with
  HTTP 404, so a connector still using them fails loudly;
- ``SUBSCRIBE`` / ``UNSUBSCRIBE`` → ``{"result":null,"id":N}``; ``LIST_SUBSCRIPTIONS`` →
  ``{"result":[…],"id":N}``; ``SET_PROPERTY``/``GET_PROPERTY`` ``combined``; errors in
  Binance's form ``{"code":2,"msg":"Invalid request: …"}`` (bad id, unknown method, unknown
  stream or a stream on the wrong path: ``bookTicker``/``depth``/``trade`` are ``/public``
  only) and ``{"code":3,"msg":"Invalid JSON: …"}``;
- keepalive: the SERVER sends protocol ping frames every ``server_ping_interval_s`` (Binance:
  180 s; small in tests) unless ``send_pings`` is False. The client (``websockets``) answers
  them by itself, so the base class's ``answer_pings`` means nothing here;
- ``max_lifetime_s``: close every connection (1001 "going away") that long after it opened,
  as Binance does after 24 h.

:meth:`FakeBinance.push` sends a payload on one stream to the connections subscribed to it,
wrapped or raw according to each connection's mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.connectors.fake_exchange import FakeExchange

_ALL_MARKET = {
    "!forceOrder@arr": "market",
    "!markPrice@arr": "market",
    "!markPrice@arr@1s": "market",
    "!ticker@arr": "market",
    "!miniTicker@arr": "market",
    "!bookTicker": "public",
}
_PER_SYMBOL = re.compile(
    r"^[a-z0-9_]+@(?:(?P<market>aggTrade|forceOrder|markPrice(?:@1s)?|ticker|miniTicker"
    r"|kline_\w+)|(?P<public>bookTicker|trade|depth(?:5|10|20)?(?:@(?:100|250|500)ms)?))$"
)
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def stream_path(stream: str) -> str | None:
    """``market`` or ``public``: where a stream lives since the split; None if unknown.

    >>> stream_path("btcusdt@aggTrade"), stream_path("btcusdt@bookTicker"), stream_path("x")
    ('market', 'public', None)
    """
    if stream in _ALL_MARKET:
        return _ALL_MARKET[stream]
    match = _PER_SYMBOL.match(stream)
    if match is None:
        return None
    return "market" if match.group("market") else "public"


@dataclass
class _Conn:
    path: str  # "market" or "public"
    combined: bool
    streams: set[str] = field(default_factory=set)


class FakeBinance(FakeExchange):
    """Fake ``fstream.binance.com`` (``/market`` and ``/public`` market streams)."""

    def __init__(
        self,
        *,
        send_pings: bool = True,
        server_ping_interval_s: float = 180.0,
        max_lifetime_s: float | None = None,
    ) -> None:
        super().__init__()
        self.send_pings = send_pings
        self.server_ping_interval_s = server_ping_interval_s if send_pings else None
        self.max_lifetime_s = max_lifetime_s
        self.rejected_paths: list[str] = []
        self._conns: dict[ServerConnection, _Conn] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1; legacy paths get HTTP 404 at the handshake."""
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            ping_interval=self.server_ping_interval_s,
            ping_timeout=None,
            max_size=2**22,
            process_request=self._check_path,
        )
        sock = next(iter(self._server.sockets))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        """Stop the lifetime timers, close every connection and stop listening."""
        for task in list(self._tasks):
            task.cancel()
        await super().stop()

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path).path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] in ("market", "public") and parts[1] in ("ws", "stream"):
            return None
        self.rejected_paths.append(request.path)
        return connection.respond(
            HTTPStatus.NOT_FOUND,
            "Not Found: use /market or /public (legacy /ws and /stream retired 2026-04-23)\n",
        )

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            await super()._handler(ws)
        finally:
            self._conns.pop(ws, None)

    async def on_connect(self, ws: ServerConnection) -> None:
        """Subscribe the streams named in the URL; start the lifetime timer."""
        target = urlsplit(ws.request.path if ws.request else "/")
        parts = target.path.strip("/").split("/")
        conn = _Conn(path=parts[0], combined=parts[1] == "stream")
        self._conns[ws] = conn
        if conn.combined:
            query = parse_qs(target.query).get("streams", [""])[0]
            named = [s for s in query.split("/") if s]
        else:
            named = [unquote(s) for s in parts[2:] if "@" in s or s.startswith("!")]
        for reply in self._subscribe(conn, named, request_id=None):
            await ws.send(reply)
        if self.max_lifetime_s is not None:
            task = asyncio.get_running_loop().create_task(self._expire(ws, self.max_lifetime_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _expire(self, ws: ServerConnection, after_s: float) -> None:
        await asyncio.sleep(after_s)
        with contextlib.suppress(ConnectionClosed):
            await ws.close(1001, "connection lifetime reached")

    def handle_text(self, ws: ServerConnection, text: str) -> Iterable[str]:
        """Answer one request in Binance's format."""
        conn = self._conns[ws]
        try:
            request = json.loads(text)
        except ValueError as exc:
            return [_error(3, f"Invalid JSON: {exc}")]
        if not isinstance(request, dict) or "method" not in request:
            return [_error(2, "Invalid request: missing field method at line 1 column 1")]
        request_id = request.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
            return [_error(2, "Invalid request: request ID must be an unsigned integer")]
        method, params = request["method"], request.get("params", [])
        if method not in _METHODS:
            expected = ", ".join(_METHODS)
            msg = f"Invalid request: unknown variant {method}, expected one of {expected}"
            return [_error(2, msg, request_id)]
        if not isinstance(params, list):
            return [_error(1, "Invalid value type: expected a list", request_id)]
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and not all(isinstance(p, str) for p in params):
            return [_error(1, "Invalid value type: expected a list of strings", request_id)]
        if method == "SUBSCRIBE":
            return self._subscribe(conn, params, request_id)
        if method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            return [_result(None, request_id)]
        if method == "LIST_SUBSCRIPTIONS":
            return [_result(sorted(conn.streams), request_id)]
        if not params or params[0] != "combined":
            return [_error(0, "Unknown property", request_id)]
        if method == "GET_PROPERTY":
            return [_result(conn.combined, request_id)]
        value = params[1] if len(params) > 1 else None
        if not isinstance(value, bool):
            return [_error(1, "Invalid value type: expected Boolean", request_id)]
        conn.combined = value
        return [_result(None, request_id)]

    def _subscribe(self, conn: _Conn, streams: list[str], request_id: int | None) -> list[str]:
        for stream in streams:
            where = stream_path(stream)
            if where != conn.path:
                problem = "unknown stream" if where is None else f"stream served on /{where}"
                return [_error(2, f"Invalid request: {problem}: {stream!r}", request_id)]
        conn.streams.update(streams)
        self.add_subscriptions(streams)
        return [] if request_id is None else [_result(None, request_id)]

    async def push(self, stream: str, data: Any) -> int:
        """Send ``data`` on ``stream`` to its subscribers (wrapped in stream mode); return count."""
        wrapped = json.dumps({"stream": stream, "data": data}, separators=(",", ":"))
        raw = json.dumps(data, separators=(",", ":"))
        sent = 0
        for ws, conn in list(self._conns.items()):
            if stream in conn.streams:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(wrapped if conn.combined else raw)
                    sent += 1
        return sent


def _error(code: int, msg: str, request_id: int | None = None) -> str:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body)


def _result(result: Any, request_id: int) -> str:
    return json.dumps({"result": result, "id": request_id})
