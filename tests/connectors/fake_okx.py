"""A fake OKX v5 public WebSocket server speaking OKX's protocol (see ``connectors/okx``).

- ``{"id":..,"op":"subscribe","args":[...]}`` → one ack per arg,
  ``{"id":..,"event":"subscribe","arg":{...},"connId":..}``; topics are recorded as
  ``"<channel>:<instId or instType>"`` (:meth:`FakeOkx.topic`).
- An unknown channel → ``{"event":"error","code":"60018","msg":"Wrong URL or channel: ..."}``;
  a request that is not JSON or lacks ``op``/``args`` → ``60012 Invalid request``.
- The text ``ping`` → the text ``pong`` (unless ``answer_pings`` is False).
- Like OKX, a connection that has not subscribed within ``subscribe_timeout_s`` (30 s by
  default; tests shorten it) is closed with code 4004 "No data received in 30s".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection

from tests.connectors.fake_exchange import FakeExchange

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "exchanges"
PUBLIC_CHANNELS = frozenset({"liquidation-orders", "funding-rate", "mark-price", "trades"})
IDLE_CLOSE_CODE = 4004
IDLE_CLOSE_REASON = "No data received in 30s"


def okx_fixture(name: str) -> str:
    """The text of ``tests/fixtures/exchanges/<name>`` (the one fixture loader of OKX tests)."""
    return (FIXTURES / name).read_text()


class FakeOkx(FakeExchange):
    """Fake ``wss://ws.okx.com:8443/ws/v5/public`` (any path is accepted).

    Examples
    --------
    >>> FakeOkx.topic({"channel": "mark-price", "instId": "BTC-USDT-SWAP"})
    'mark-price:BTC-USDT-SWAP'
    >>> FakeOkx.topic({"channel": "liquidation-orders", "instType": "SWAP"})
    'liquidation-orders:SWAP'
    """

    def __init__(self, subscribe_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.subscribe_timeout_s = subscribe_timeout_s
        self.idle_closes = 0
        self._subscribed_conns: set[ServerConnection] = set()
        self._timers: set[asyncio.Task[None]] = set()

    @staticmethod
    def topic(arg: Mapping[str, Any]) -> str:
        """The recorded name of one subscription arg."""
        key = arg.get("instId") or arg.get("instType") or arg.get("instFamily") or ""
        return f"{arg.get('channel')}:{key}"

    async def on_connect(self, ws: ServerConnection) -> None:
        """Start the no-subscription timer of this connection."""
        task = asyncio.get_running_loop().create_task(self._close_if_unsubscribed(ws))
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _close_if_unsubscribed(self, ws: ServerConnection) -> None:
        await asyncio.sleep(self.subscribe_timeout_s)
        if ws not in self._subscribed_conns:
            self.idle_closes += 1
            await ws.close(IDLE_CLOSE_CODE, IDLE_CLOSE_REASON)

    async def stop(self) -> None:
        """Cancel the idle timers, then close everything."""
        for task in list(self._timers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().stop()

    def handle_text(self, ws: ServerConnection, text: str) -> Iterable[str]:
        """Answer ``ping`` and subscribe/unsubscribe requests as OKX does."""
        if text == "ping":
            return ["pong"] if self.answer_pings else []
        conn_id = f"{id(ws) & 0xFFFFFFFF:08x}"
        try:
            request = json.loads(text)
        except ValueError:
            return [self._error("60012", f"Invalid request: {text[:200]}", None, conn_id)]
        if not isinstance(request, dict):
            return [self._error("60012", f"Invalid request: {text[:200]}", None, conn_id)]
        req_id = request.get("id")
        op, args = request.get("op"), request.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            return [self._error("60012", f"Invalid request: {text[:200]}", req_id, conn_id)]
        replies: list[str] = []
        accepted: list[str] = []
        for arg in args:
            if not isinstance(arg, dict) or arg.get("channel") not in PUBLIC_CHANNELS:
                body = json.dumps(arg, separators=(",", ":"))
                msg = f"Wrong URL or channel:{body} doesn't exist. Please use the correct URL"
                replies.append(self._error("60018", msg, req_id, conn_id))
                continue
            ack: dict[str, Any] = {"event": op, "arg": arg, "connId": conn_id}
            if req_id is not None:
                ack = {"id": req_id, **ack}
            replies.append(json.dumps(ack, separators=(",", ":")))
            accepted.append(self.topic(arg))
        if op == "subscribe" and accepted:
            self._subscribed_conns.add(ws)
            self.add_subscriptions(accepted)
        elif op == "unsubscribe":
            self.subscriptions.difference_update(accepted)
        return replies

    @staticmethod
    def _error(code: str, msg: str, req_id: Any, conn_id: str) -> str:
        error: dict[str, Any] = {"event": "error", "code": code, "msg": msg, "connId": conn_id}
        if req_id is not None:
            error = {"id": req_id, **error}
        return json.dumps(error, separators=(",", ":"))
