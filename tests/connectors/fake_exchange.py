"""A local fake exchange WebSocket server: the shared mechanics behind every venue's fake.

Each venue subclass implements its own protocol in :meth:`FakeExchange.handle_text` (subscribe
acks, JSON or text pings); this base serves recorded frames to subscribed connections, and can
misbehave on purpose: drop every connection, stop answering pings, send garbage.

Usage (inside an asyncio test)::

    fake = FakeBybit()
    url = await fake.start()           # ws://127.0.0.1:<port>
    ...                                # point the connector at url
    await fake.wait_subscribed({"allLiquidation.BTCUSDT"})
    await fake.broadcast(frame_text)   # to every open connection
    await fake.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class FakeExchange:
    """Base fake venue. Subclasses override :meth:`handle_text` (and maybe :meth:`on_connect`)."""

    #: seconds between protocol ping frames the server sends (None = never; Binance: 180 s)
    server_ping_interval_s: float | None = None

    def __init__(self) -> None:
        self._server: Server | None = None
        self.connections: set[ServerConnection] = set()
        self.subscriptions: set[str] = set()
        self.paths: list[str] = []
        self.received: list[str] = []
        self.connects = 0
        self.answer_pings = True
        self._subscribed = asyncio.Condition()

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (``port`` 0 = any free port); return the ``ws://`` base URL."""
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            ping_interval=self.server_ping_interval_s,
            ping_timeout=None,
            max_size=2**22,
        )
        sock = next(iter(self._server.sockets))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connects += 1
        self.paths.append(ws.request.path if ws.request else "")
        self.connections.add(ws)
        try:
            await self.on_connect(ws)
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                self.received.append(text)
                for reply in self.handle_text(ws, text):
                    await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)

    async def on_connect(self, ws: ServerConnection) -> None:
        """Hook: a client connected (Binance: subscribe streams from the URL path)."""

    def handle_text(self, ws: ServerConnection, text: str) -> Iterable[str]:
        """Answer one client message; record subscriptions with :meth:`add_subscriptions`."""
        raise NotImplementedError

    def add_subscriptions(self, topics: Iterable[str]) -> None:
        """Record topics as subscribed and wake :meth:`wait_subscribed`."""
        self.subscriptions.update(topics)

        async def _notify() -> None:
            async with self._subscribed:
                self._subscribed.notify_all()

        asyncio.get_running_loop().create_task(_notify())

    async def wait_subscribed(self, topics: Iterable[str], timeout_s: float = 15.0) -> None:
        """Wait until every topic in ``topics`` has been subscribed (on any connection)."""
        wanted = set(topics)
        async with asyncio.timeout(timeout_s), self._subscribed:
            await self._subscribed.wait_for(lambda: wanted <= self.subscriptions)

    async def wait_connections(self, n: int, timeout_s: float = 15.0) -> None:
        """Wait until ``n`` connections are open."""
        async with asyncio.timeout(timeout_s):
            while len(self.connections) < n:
                await asyncio.sleep(0.02)

    async def broadcast(self, frame: str | bytes) -> int:
        """Send ``frame`` to every open connection; return how many got it."""
        sent = 0
        for ws in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)
                sent += 1
        return sent

    async def drop_all(self, code: int = 1006) -> None:
        """Cut every connection abruptly (as a venue restart or a network fault would)."""
        self.subscriptions.clear()
        for ws in list(self.connections):
            ws.transport.abort() if code == 1006 else await ws.close(code)
        self.connections.clear()
