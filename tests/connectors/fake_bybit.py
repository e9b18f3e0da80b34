"""A fake Bybit v5 public linear server (``/v5/public/linear``) for connector tests.

Speaks the linear protocol as documented (``notes/exchanges.md`` §2): subscribe/unsubscribe
requests are answered ``{"success":true,"ret_msg":"","conn_id":…,"req_id":…,"op":"subscribe"}``;
a JSON ping ``{"req_id":…,"op":"ping"}`` gets ``{"success":true,"ret_msg":"pong",…,"op":"ping"}``
unless ``answer_pings`` is False. A malformed topic (unknown channel, bad symbol syntax) fails the
request with ``success:false`` and ``ret_msg`` ``"error:handler not found,topic:<topic>"`` (the
text live Bybit sent in 2026, sieblyio/bybit-api#561); the well-formed topics of the same
request are still subscribed. Unknown but well-formed symbols are accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from websockets.asyncio.server import ServerConnection

from connectors.bybit.schemas import OpResponse
from tests.connectors.fake_exchange import FakeExchange

ARGS_CHARS_LIMIT = 21_000
_SYMBOL = r"[A-Z0-9]{2,30}(?:-[0-9]{1,2}[A-Z]{3}[0-9]{2})?"  # BTCUSDT, BTC-26DEC25
TOPIC_RE = re.compile(
    rf"^(?:(?:allLiquidation|liquidation|tickers|publicTrade)\.{_SYMBOL}"
    rf"|orderbook\.(?:1|50|200|500|1000)\.{_SYMBOL}"
    rf"|kline\.(?:1|3|5|15|30|60|120|240|360|720|D|W|M)\.{_SYMBOL})$"
)


class FakeBybit(FakeExchange):
    """Fake Bybit linear endpoint: acks subscriptions, answers JSON pings, errors on bad topics."""

    def handle_text(self, ws: ServerConnection, text: str) -> Iterator[str]:
        """Answer one client request."""
        try:
            msg: Any = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            yield _reply(ws, False, "error:request is not a JSON object", "", "")
            return
        op = str(msg.get("op", ""))
        req_id = str(msg.get("req_id", ""))
        if op == "ping":
            if self.answer_pings:
                yield _reply(ws, True, "pong", req_id, op)
            return
        if op not in ("subscribe", "unsubscribe"):
            yield _reply(ws, False, f"error:unknown op {op[:20]}", req_id, op)
            return
        args = msg.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            yield _reply(ws, False, "error:args must be a list of topics", req_id, op)
            return
        if sum(len(a) for a in args) > ARGS_CHARS_LIMIT:
            yield _reply(ws, False, f"error:args exceed {ARGS_CHARS_LIMIT} chars", req_id, op)
            return
        good = [a for a in args if TOPIC_RE.match(a)]
        bad = [a for a in args if not TOPIC_RE.match(a)]
        if op == "subscribe":
            self.add_subscriptions(good)
        else:
            self.subscriptions.difference_update(good)
        if bad:
            yield _reply(ws, False, f"error:handler not found,topic:{','.join(bad)}", req_id, op)
        else:
            yield _reply(ws, True, "", req_id, op)


def _reply(ws: ServerConnection, success: bool, ret_msg: str, req_id: str, op: str) -> str:
    reply: OpResponse = {
        "success": success,
        "ret_msg": ret_msg,
        "conn_id": str(ws.id),
        "req_id": req_id,
        "op": op,
    }
    return json.dumps(reply)
