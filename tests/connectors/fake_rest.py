"""A local fake of the venues' REST kline endpoints, for ccxt's ``fetch_ohlcv``.

Serves, from one table of candles per venue symbol, what each venue answers (shapes from the
venues' API docs):

- Binance USD-M ``GET /fapi/v1/klines?symbol&interval&startTime&endTime&limit``: an array of
  arrays ``[open time, open, high, low, close, volume, close time, quote volume, trades,
  taker buy base, taker buy quote, "0"]``, oldest first, the *earliest* ``limit`` rows in
  ``[startTime, endTime]``.
- Bybit v5 ``GET /v5/market/kline?category&symbol&interval&start&end&limit``:
  ``{"retCode":0,"result":{"list":[[start, open, high, low, close, volume, turnover], ...]}}``,
  newest first, the *latest* ``limit`` rows in ``[start, end]``.
- OKX v5 ``GET /api/v5/market/candles`` and ``/history-candles?instId&bar&before&after&limit``:
  ``{"code":"0","data":[[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm], ...]}``, newest
  first, the latest ``limit`` rows with ``before < ts < after`` (both exclusive). ``vol``
  (contracts) and ``volCcy`` (base units, what ccxt reads for swaps) both carry the volume.

Every number travels as a string, as the venues send them. A request whose interval is not the
table's gets the venue's error answer (so a wrong timeframe mapping fails loudly), and
``fail_next`` answers the next N requests with a failure (``fail_status`` 503: REST down; 429:
the venue's own rate-limit answer — Binance HTTP 429 code -1003, Bybit HTTP 200 retCode 10006,
OKX HTTP 429 code 50011). Every request's path and query are kept in :attr:`FakeRest.requests`.

Usage (inside an asyncio test)::

    fake = FakeRest({"BTCUSDT": rows}, interval_ms=60_000)
    url = await fake.start()            # http://127.0.0.1:<port>
    connectors.markets._point_at(exchange, url)
    ...
    await fake.stop()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

BINANCE_INTERVALS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
BYBIT_INTERVALS = {"1": 60_000, "3": 180_000, "5": 300_000, "15": 900_000, "60": 3_600_000}
OKX_INTERVALS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1H": 3_600_000}


@dataclass(frozen=True, slots=True)
class Row:
    """One candle as the fake serves it; prices are strings, as on the wire (``"NaN"`` allowed)."""

    open_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str = "10"


def rows(start_ms: int, closes: Sequence[float | str], interval_ms: int = 60_000) -> list[Row]:
    """Consecutive candles from ``start_ms`` with the given closes (open = high = low = close)."""
    return [
        Row(start_ms + n * interval_ms, str(c), str(c), str(c), str(c))
        for n, c in enumerate(closes)
    ]


class FakeRest:
    """Binance, Bybit and OKX kline endpoints over one candle table (see the module docstring)."""

    def __init__(
        self, table: Mapping[str, Sequence[Row]], interval_ms: int = 60_000, max_limit: int = 1000
    ) -> None:
        self.table = {symbol: sorted(rs, key=lambda r: r.open_ms) for symbol, rs in table.items()}
        self.interval_ms = interval_ms
        self.max_limit = max_limit
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.fail_next = 0
        self.fail_status = 503
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on 127.0.0.1 (any free port); return the ``http://`` base URL."""
        app = web.Application()
        app.router.add_get("/fapi/v1/klines", self._binance)
        app.router.add_get("/v5/market/kline", self._bybit)
        app.router.add_get("/api/v5/market/candles", self._okx)
        app.router.add_get("/api/v5/market/history-candles", self._okx)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _select(
        self, symbol: str, lo_ms: int, hi_ms: int, limit: int, newest: bool
    ) -> list[Row] | None:
        """Rows of ``symbol`` with ``lo <= open <= hi``: the first or the last ``limit``."""
        if symbol not in self.table:
            return None
        inside = [r for r in self.table[symbol] if lo_ms <= r.open_ms <= hi_ms]
        limit = max(1, min(limit, self.max_limit))
        return inside[-limit:] if newest else inside[:limit]

    def _record(self, request: web.Request) -> web.Response | None:
        """Keep the request; answer it with the planned failure, if any."""
        self.requests.append((request.path, dict(request.query)))
        if self.fail_next <= 0:
            return None
        self.fail_next -= 1
        if self.fail_status != 429:
            return web.Response(status=self.fail_status, text="Service Unavailable")
        if request.path.startswith("/fapi"):  # Binance: HTTP 429, code -1003
            return web.json_response({"code": -1003, "msg": "Too many requests."}, status=429)
        if request.path.startswith("/v5"):  # Bybit: HTTP 200, retCode 10006
            return web.json_response({"retCode": 10006, "retMsg": "Too many visits!"})
        return web.json_response(  # OKX: HTTP 429, code 50011
            {"code": "50011", "msg": "Too Many Requests", "data": []}, status=429
        )

    async def _binance(self, request: web.Request) -> web.Response:
        failed = self._record(request)
        if failed is not None:
            return failed
        q = request.query
        if BINANCE_INTERVALS.get(q.get("interval", "")) != self.interval_ms:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        selected = self._select(
            q.get("symbol", ""),
            int(q.get("startTime", 0)),
            int(q.get("endTime", 2**62)),
            int(q.get("limit", 500)),
            newest="startTime" not in q,
        )
        if selected is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        body = [
            [r.open_ms, r.open, r.high, r.low, r.close, r.volume, r.open_ms + self.interval_ms - 1,
             "0", 1, "0", "0", "0"]
            for r in selected
        ]  # fmt: skip
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def _bybit(self, request: web.Request) -> web.Response:
        failed = self._record(request)
        if failed is not None:
            return failed
        q = request.query
        if BYBIT_INTERVALS.get(q.get("interval", "")) != self.interval_ms:
            return web.json_response({"retCode": 10001, "retMsg": "Invalid period!", "result": {}})
        selected = self._select(
            q.get("symbol", ""),
            int(q.get("start", 0)),
            int(q.get("end", 2**62)),
            int(q.get("limit", 200)),
            newest=True,
        )
        if selected is None:
            return web.json_response({"retCode": 10001, "retMsg": "Not supported symbols"})
        listed = [
            [str(r.open_ms), r.open, r.high, r.low, r.close, r.volume, "0"]
            for r in reversed(selected)
        ]
        return web.json_response(
            {
                "retCode": 0,
                "retMsg": "OK",
                "result": {"category": q.get("category"), "symbol": q["symbol"], "list": listed},
                "retExtInfo": {},
                "time": 1_760_000_000_000,
            }
        )

    async def _okx(self, request: web.Request) -> web.Response:
        failed = self._record(request)
        if failed is not None:
            return failed
        q = request.query
        if OKX_INTERVALS.get(q.get("bar", "")) != self.interval_ms:
            return web.json_response({"code": "51000", "msg": "Parameter bar error", "data": []})
        selected = self._select(
            q.get("instId", ""),
            int(q.get("before", -1)) + 1,  # exclusive bounds
            int(q.get("after", 2**62)) - 1,
            int(q.get("limit", 100)),
            newest=True,
        )
        if selected is None:
            return web.json_response({"code": "51001", "msg": "Instrument ID does not exist"})
        data = [
            [str(r.open_ms), r.open, r.high, r.low, r.close, r.volume, r.volume, "0", "1"]
            for r in reversed(selected)
        ]
        return web.json_response({"code": "0", "msg": "", "data": data})
