"""Supervised WebSocket connections: keepalive, staleness watchdog, reconnect, gap markers.

One :class:`Supervisor` keeps one :class:`~connectors.base.ConnectionSpec` alive for ever:

- connect, send the subscribe messages, then read;
- keepalive per venue rule (JSON or text pings from the client; server pings are answered by
  ``websockets`` itself);
- a staleness watchdog: no frame for ``stale_after_s`` ⇒ the connection is dead even if the
  socket is open (a server that stopped answering pings looks exactly like this);
- reconnect with capped exponential backoff and full jitter (AWS architecture blog, "Exponential
  Backoff And Jitter", 2015: sleep = random(0, min(cap, base·2^attempt)));
- a gap marker for every interval in which data may be missing;
- venues that end connections on a schedule (Binance: 24 h) get an overlapping replacement:
  the new connection is opened before the old one expires and takes over at its first data
  frame, so no gap is opened.

Frames are handed to an ``on_frame`` callback with their receive time; parsing and producing
happen there (see :mod:`connectors.runner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from connectors.base import ConnectionSpec, ParseResult, VenueParser
from connectors.metrics import ConnectorMetrics
from streams.events import GapMarker

log = logging.getLogger("firesale.connectors")

FrameHandler = Callable[[ConnectionSpec, str | bytes, int, ParseResult], Awaitable[None]]
GapHandler = Callable[[GapMarker], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect ``attempt`` (1, 2, ...)."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1)))


class _Session:
    """One open connection with its own parser state."""

    def __init__(self, ws: ClientConnection, parser: VenueParser, opened_ns: int) -> None:
        self.ws = ws
        self.parser = parser
        self.opened_ns = opened_ns
        self.last_frame_mono = time.monotonic()
        self.got_data = False


class Supervisor:
    """Keep one connection spec alive; report every frame and every gap."""

    def __init__(
        self,
        spec: ConnectionSpec,
        on_frame: FrameHandler,
        on_gap: GapHandler,
        metrics: ConnectorMetrics,
        backoff: Backoff | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
        lifetime_margin_s: float = 60.0,
        min_reconnect_interval_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.on_frame = on_frame
        self.on_gap = on_gap
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.clock_ns = clock_ns
        self.rng = rng or random.Random()
        self.lifetime_margin_s = lifetime_margin_s
        # A venue that closes every connection right after its first frame would otherwise be
        # redialled at once, forever (backoff resets after data): OKX allows 3 connection
        # requests/s per IP, Bybit 500 per 5 min (notes/exchanges.md).
        self.min_reconnect_interval_s = min_reconnect_interval_s
        self._last_open_mono = -1e9
        self.last_data_ns: int | None = None
        self._gap_from_ns: int | None = None
        self._gap_reason: str = "disconnect"
        self.connects = 0
        self._labels = (spec.venue, spec.name)
        self._handover: tuple[_Session, str | bytes] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set. Never raises for network trouble; it reconnects."""
        attempt = 0
        while not stop.is_set():
            if self._handover is not None:
                session, first_raw = self._handover
                self._handover = None
                await self._handle(session, first_raw)
            else:
                wait = self._last_open_mono + self.min_reconnect_interval_s - time.monotonic()
                if wait > 0:
                    await _sleep_or_stop(stop, wait)
                    if stop.is_set():
                        break
                self._last_open_mono = time.monotonic()
                try:
                    session = await self._open()
                except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                    attempt += 1
                    delay = self.backoff.delay(attempt, self.rng)
                    log.warning(
                        "%s: connect to %s failed (%s); retry %d in %.1f s",
                        self.spec.name,
                        self.spec.url,
                        exc,
                        attempt,
                        delay,
                    )
                    self._mark_gap_start("disconnect")
                    await _sleep_or_stop(stop, delay)
                    continue
            reason = await self._serve(session, stop)
            if reason in ("stale", "disconnect"):
                attempt = 0 if session.got_data else attempt + 1
                self.metrics.reconnects.labels(*self._labels, reason).inc()
                self._mark_gap_start(reason)
                if attempt:
                    await _sleep_or_stop(stop, self.backoff.delay(attempt, self.rng))

    def resume_after(self, last_data_ns: int) -> None:
        """Open a ``restart`` gap from a previous process's last data (see connectors.restart)."""
        self._gap_from_ns = last_data_ns
        self._gap_reason = "restart"

    def _mark_gap_start(self, reason: str) -> None:
        self.metrics.connection_up.labels(*self._labels).set(0)
        if self._gap_from_ns is None and self.last_data_ns is not None:
            self._gap_from_ns = self.last_data_ns
            self._gap_reason = reason

    async def _open(self) -> _Session:
        ws = await connect(
            self.spec.url,
            open_timeout=10,
            ping_interval=None,  # venue keepalive rules below; the watchdog detects dead peers
            close_timeout=2,
            max_size=2**21,
            max_queue=256,
        )
        session = _Session(ws, self.spec.parser_factory(), self.clock_ns())
        for message in self.spec.subscribe:
            await ws.send(message)
        self.connects += 1
        self.metrics.connection_up.labels(*self._labels).set(1)
        log.info(
            "%s: connected to %s (%d subscribe messages)",
            self.spec.name,
            self.spec.url,
            len(self.spec.subscribe),
        )
        return session

    async def _serve(self, session: _Session, stop: asyncio.Event) -> str:
        """Read ``session`` until it ends; return why: stop, stale, disconnect or lifetime."""
        tasks = {
            asyncio.create_task(self._read(session), name="read"),
            asyncio.create_task(self._watchdog(session), name="watchdog"),
            asyncio.create_task(stop.wait(), name="stop"),
        }
        if self.spec.keepalive.kind != "server_ping":
            tasks.add(asyncio.create_task(self._keepalive(session), name="keepalive"))
        if self.spec.max_lifetime_s is not None:
            tasks.add(asyncio.create_task(self._lifetime(session, stop), name="lifetime"))
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        finished = next(iter(done))
        with contextlib.suppress(Exception):
            await session.ws.close()
        name = finished.get_name()
        if name == "stop":
            return "stop"
        if name == "lifetime":
            return "lifetime"  # run() continues with the replacement in self._handover
        if name == "watchdog":
            log.warning(
                "%s: no frame for %.0f s: reconnecting", self.spec.name, self.spec.stale_after_s
            )
            return "stale"
        exc = finished.exception()
        log.warning("%s: connection lost (%s): reconnecting", self.spec.name, exc or "closed")
        return "disconnect"

    async def _read(self, session: _Session) -> None:
        async for raw in session.ws:
            # Shielded: a cancelled reader (stop, rollover) never abandons a frame half-handled.
            await asyncio.shield(self._handle(session, raw))

    async def _handle(self, session: _Session, raw: str | bytes) -> None:
        ts_recv_ns = self.clock_ns()
        session.last_frame_mono = time.monotonic()
        self.metrics.last_message.labels(*self._labels).set(ts_recv_ns / 1e9)
        result = session.parser.parse(raw, ts_recv_ns)
        is_data = result.control is None
        if is_data and not session.got_data:
            session.got_data = True
            await self._close_gap(ts_recv_ns)
        if is_data:
            self.last_data_ns = ts_recv_ns
        await self.on_frame(self.spec, raw, ts_recv_ns, result)

    async def _close_gap(self, ts_recv_ns: int) -> None:
        if self._gap_from_ns is None:
            return
        reason = self._gap_reason
        for channel in self.spec.channels:
            marker = GapMarker(
                venue=self.spec.venue,
                channel=channel,
                from_ns=self._gap_from_ns,
                to_ns=ts_recv_ns,
                reason=reason,  # type: ignore[arg-type]
                ts_recv_ns=ts_recv_ns,
            )
            self.metrics.gaps.labels(*self._labels).inc()
            await self.on_gap(marker)
        log.warning(
            "%s: gap of %.1f s (%s) marked",
            self.spec.name,
            (ts_recv_ns - self._gap_from_ns) / 1e9,
            reason,
        )
        self._gap_from_ns = None

    async def _watchdog(self, session: _Session) -> None:
        limit = self.spec.stale_after_s
        while True:
            idle = time.monotonic() - session.last_frame_mono
            if idle >= limit:
                return
            await asyncio.sleep(min(1.0, limit - idle))

    async def _keepalive(self, session: _Session) -> None:
        """Client pings: JSON every ``interval_s`` (Bybit) or text when idle that long (OKX)."""
        rule = self.spec.keepalive
        sent = 0
        while True:
            if rule.kind == "text_ping":
                idle = time.monotonic() - session.last_frame_mono
                if idle < rule.interval_s:
                    await asyncio.sleep(rule.interval_s - idle)
                    continue
            else:
                await asyncio.sleep(rule.interval_s)
            sent += 1
            await session.ws.send(rule.payload.replace("{n}", str(sent)))
            if rule.kind == "text_ping":
                await asyncio.sleep(rule.interval_s)

    async def _lifetime(self, old: _Session, stop: asyncio.Event) -> None:
        """Before the venue cuts ``old``, open a replacement; return at its first data frame.

        The old session keeps being read meanwhile (by ``_read``), so nothing is missed; the
        caller then closes it and :meth:`run` continues with the replacement. Frames that both
        connections delivered around the switch may appear twice (at-least-once).
        """
        assert self.spec.max_lifetime_s is not None
        await asyncio.sleep(max(0.0, self.spec.max_lifetime_s - self.lifetime_margin_s))
        while True:
            try:
                new = await self._open()
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                log.warning("%s: replacement connection failed (%s)", self.spec.name, exc)
                await asyncio.sleep(1.0)
                continue
            probe = self.spec.parser_factory()
            try:
                async for raw in new.ws:
                    if probe.parse(raw, self.clock_ns()).control is None:
                        self._handover = (new, raw)
                        self.metrics.reconnects.labels(*self._labels, "lifetime").inc()
                        log.info("%s: rolled over to a fresh connection", self.spec.name)
                        return
            except ConnectionClosed:
                pass
            log.warning("%s: replacement closed before sending data; retrying", self.spec.name)


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
