"""Helpers of the exchange fault cases (``test_exchange_faults.py``).

- :class:`TrackingBybit` / :class:`TrackingOkx`: the venue fakes, knowing per connection what it
  subscribed, when it opened, subscribed and closed, what it sent us, and whether the venue
  has gone silent on it (``dead``: no data, no pongs, no acks).
- :class:`BybitFeed` / :class:`OkxFeed`: a scripted venue. Each call produces one update with a
  unique timestamp, writes it to every live connection subscribed to its topic, and returns a
  :class:`Frame` listing the canonical events it must become (values taken from the wire text,
  not from the parser). An update no live connection got is *lost at the venue*.
- :class:`ConnectorProcess`: ``python -m streams connect`` as a real process; RSS from
  ``/proc/<pid>/status`` and the metrics it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.connectors.fake_bybit import TOPIC_RE, FakeBybit
from tests.connectors.fake_exchange import FakeExchange
from tests.connectors.fake_okx import PUBLIC_CHANNELS, FakeOkx
from tests.connectors.test_bybit_markets import ccxt_markets, raw_row
from tests.connectors.test_okx_markets import markets as okx_markets
from tests.connectors.test_okx_markets import raw_swap

NS_PER_MS = 1_000_000


@dataclass(slots=True)
class ConnLog:
    """One server-side connection as the venue saw it (monotonic times)."""

    opened: float
    topics: set[str] = field(default_factory=set)
    subscribed: float | None = None
    closed: float | None = None
    dead: bool = False
    received: list[tuple[float, str]] = field(default_factory=list)
    snapshots: set[str] = field(default_factory=set)  # Bybit tickers: symbols snapshotted


class _Tracking(FakeExchange):
    """Per-connection bookkeeping on top of a venue fake (a mixin: list it first)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conns: dict[ServerConnection, ConnLog] = {}
        self.history: list[ConnLog] = []

    def accepted(self, text: str) -> list[str]:
        """Topics a client request subscribes (venue-specific)."""
        raise NotImplementedError

    async def on_connect(self, ws: ServerConnection) -> None:
        log = ConnLog(time.monotonic())
        self.conns[ws] = log
        self.history.append(log)
        await super().on_connect(ws)

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            await super()._handler(ws)
        finally:
            log = self.conns.pop(ws, None)
            if log is not None:
                log.closed = time.monotonic()

    def handle_text(self, ws: ServerConnection, text: str) -> Iterator[str]:
        log = self.conns.get(ws)
        if log is not None:
            log.received.append((time.monotonic(), text))
            if log.dead:
                return iter(())  # a half-dead link: nothing comes back
        replies = list(super().handle_text(ws, text))
        topics = self.accepted(text)
        if log is not None and topics:
            log.topics.update(topics)
            log.subscribed = time.monotonic()
        return iter(replies)

    def live(self, topic: str) -> list[tuple[ServerConnection, ConnLog]]:
        """Open, healthy connections subscribed to ``topic``."""
        return [
            (ws, log)
            for ws, log in self.conns.items()
            if topic in log.topics and not log.dead and ws in self.connections
        ]

    def current(self) -> ConnLog:
        """The newest connection."""
        return self.history[-1]


class TrackingBybit(_Tracking, FakeBybit):
    """:class:`FakeBybit` with per-connection bookkeeping."""

    def accepted(self, text: str) -> list[str]:
        msg = json.loads(text) if text.startswith("{") else {}
        if msg.get("op") != "subscribe" or not isinstance(msg.get("args"), list):
            return []
        return [a for a in msg["args"] if isinstance(a, str) and TOPIC_RE.match(a)]


class TrackingOkx(_Tracking, FakeOkx):
    """:class:`FakeOkx` with per-connection bookkeeping."""

    def accepted(self, text: str) -> list[str]:
        msg = json.loads(text) if text.startswith("{") else {}
        if msg.get("op") != "subscribe" or not isinstance(msg.get("args"), list):
            return []
        return [
            FakeOkx.topic(a)
            for a in msg["args"]
            if isinstance(a, dict) and a.get("channel") in PUBLIC_CHANNELS
        ]


@dataclass(frozen=True, slots=True)
class Expected:
    """One canonical event a frame must become: topic, dedup key, fields that must match."""

    topic: str
    key: tuple[str, str, int, str]  # venue, symbol, ts_event_ns, kind
    fields: Mapping[str, object]


@dataclass(slots=True)
class Frame:
    """One venue update: when it was produced (wall clock), who got it, what it must become."""

    seq: int
    symbol: str
    topic: str
    wall_ns: int
    mono: float
    delivered: int
    expected: tuple[Expected, ...]


Render = Callable[[ConnLog | None], tuple[str, tuple[Expected, ...]]]
"""A frame's text and events for a receiving connection (None: nobody got it)."""


class _Feed:
    def __init__(self, fake: _Tracking, venue: str, assets: Mapping[str, str]) -> None:
        self.fake = fake
        self.venue = venue
        self.assets = assets  # venue symbol → asset name
        self.frames: list[Frame] = []
        self.counts: dict[tuple[str, str], int] = {}
        self._last_ms = 0

    def _stamp(self) -> int:
        """A venue timestamp (ms) unique and increasing across the whole feed."""
        self._last_ms = max(self._last_ms + 1, time.time_ns() // NS_PER_MS)
        return self._last_ms

    def _n(self, kind: str, symbol: str) -> int:
        n = self.counts.get((kind, symbol), 0)
        self.counts[kind, symbol] = n + 1
        return n

    def _event(self, topic: str, symbol: str, ts_ms: int, kind: str, **fields: object) -> Expected:
        base = {"venue": self.venue, "symbol": symbol, "asset": self.assets[symbol]}
        key = (self.venue, symbol, ts_ms * NS_PER_MS, kind)
        return Expected(topic, key, {**base, "asset_class": "crypto", **fields})

    async def _send(self, topic: str, symbol: str, render: Render) -> Frame:
        """Write ``render(log)`` (frame text, expected events) to every live subscriber."""
        wall_ns, mono = time.time_ns(), time.monotonic()
        delivered = 0
        expected: tuple[Expected, ...] = ()
        receivers = self.fake.live(topic)
        for ws, log in receivers:
            text, expected = render(log)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(text)
                delivered += 1
        if not receivers:
            _, expected = render(None)
        frame = Frame(len(self.frames), symbol, topic, wall_ns, mono, delivered, expected)
        self.frames.append(frame)
        return frame


def _price(base: float, n: int, decimals: int) -> str:
    return f"{base * (1 + (n % 997) / 10_000):.{decimals}f}"


class BybitFeed(_Feed):
    """Scripted Bybit v5 linear updates: ``tickers`` (a snapshot first on each connection, then
    deltas) and ``allLiquidation``, shaped like the ``bybit_*.json`` fixtures."""

    NEXT_FUNDING_MS = 1_893_456_000_000  # 2030-01-01T00:00Z
    OI_VALUE = "2000000.50"  # both sides (Bybit docs 2026-10): one side is half of it

    def __init__(self, fake: TrackingBybit, assets: Mapping[str, str], bases: Mapping[str, float]):
        super().__init__(fake, "bybit", assets)
        self.bases = bases

    async def ticker(self, symbol: str) -> Frame:
        n = self._n("ticker", symbol)
        ts_ms = self._stamp()
        mark = _price(self.bases[symbol], n, 4)
        last = _price(self.bases[symbol], n + 1, 4)
        rate = f"0.000{1 + n % 9}"

        def render(log: ConnLog | None) -> tuple[str, tuple[Expected, ...]]:
            snapshot = log is not None and symbol not in log.snapshots
            if log is not None:
                log.snapshots.add(symbol)
            data: dict[str, str] = {"symbol": symbol, "markPrice": mark, "lastPrice": last}
            with_funding = snapshot or n % 4 == 0
            if snapshot:
                data |= {"tickDirection": "PlusTick", "indexPrice": mark, "prevPrice24h": mark,
                         "openInterest": "1000", "openInterestValue": self.OI_VALUE,
                         "nextFundingTime": str(self.NEXT_FUNDING_MS), "fundingIntervalHour": "8",
                         "bid1Price": last, "bid1Size": "2.049", "ask1Price": last}  # fmt: skip
            if with_funding:
                data["fundingRate"] = rate
            frame = {"topic": f"tickers.{symbol}", "type": "snapshot" if snapshot else "delta",
                     "data": data, "cs": 50_193_544_280 + ts_ms, "ts": ts_ms}  # fmt: skip
            events = [
                self._event("ticks.price.v1", symbol, ts_ms, "mark", price=float(mark)),
                self._event("ticks.price.v1", symbol, ts_ms, "trade", price=float(last)),
            ]
            if with_funding:
                events.append(
                    self._event(
                        "ticks.funding.v1",
                        symbol,
                        ts_ms,
                        "funding",
                        rate=float(rate),
                        interval_hours=8.0,
                        rate_annualized=pytest.approx(float(rate) * 3 * 365, rel=1e-12),
                        next_funding_ts_ns=self.NEXT_FUNDING_MS * NS_PER_MS,
                        mark_price=float(mark),
                        open_interest_usd=float(self.OI_VALUE) / 2,
                    )
                )
            return json.dumps(frame), tuple(events)

        return await self._send(f"tickers.{symbol}", symbol, render)

    async def liquidation(self, symbol: str) -> Frame:
        n = self._n("liquidation", symbol)
        ts_ms = self._stamp()
        side = "Buy" if n % 2 else "Sell"  # position side: Buy = a long was liquidated
        qty = f"{(n % 50 + 1) * 1.5:.1f}"
        price = _price(self.bases[symbol], n, 4)
        item = {"T": ts_ms - 250, "s": symbol, "S": side, "v": qty, "p": price}
        text = json.dumps({"topic": f"allLiquidation.{symbol}", "type": "snapshot",
                           "ts": ts_ms, "data": [item]})  # fmt: skip
        event = self._event(
            "ticks.liquidation.v1", symbol, ts_ms - 250, "liquidation",
            liquidated_side="long" if side == "Buy" else "short",
            qty_base=float(qty), price=float(price),
            notional_usd=pytest.approx(float(qty) * float(price), rel=1e-12),
            completeness="complete",
        )  # fmt: skip
        return await self._send(f"allLiquidation.{symbol}", symbol, lambda _log: (text, (event,)))


class OkxFeed(_Feed):
    """Scripted OKX v5 public ``mark-price`` and ``trades`` pushes (``okx_*.json`` shapes)."""

    def __init__(self, fake: TrackingOkx, assets: Mapping[str, str], bases: Mapping[str, float]):
        super().__init__(fake, "okx", assets)
        self.bases = bases

    async def mark(self, inst: str) -> Frame:
        n = self._n("mark", inst)
        ts_ms = self._stamp()
        px = _price(self.bases[inst], n, 2)
        text = json.dumps({"arg": {"channel": "mark-price", "instId": inst},
                           "data": [{"instType": "SWAP", "instId": inst, "markPx": px,
                                     "ts": str(ts_ms)}]})  # fmt: skip
        event = self._event("ticks.price.v1", inst, ts_ms, "mark", price=float(px))
        return await self._send(f"mark-price:{inst}", inst, lambda _log: (text, (event,)))

    async def trade(self, inst: str) -> Frame:
        n = self._n("trade", inst)
        ts_ms = self._stamp()
        px = _price(self.bases[inst], n + 3, 1)
        trade = {"instId": inst, "tradeId": str(130_639_474 + n), "px": px, "sz": "0.12",
                 "side": "buy" if n % 2 else "sell", "ts": str(ts_ms), "count": "1",
                 "source": "0", "seqId": 1234 + n}  # fmt: skip
        text = json.dumps({"arg": {"channel": "trades", "instId": inst}, "data": [trade]})
        event = self._event("ticks.price.v1", inst, ts_ms, "trade", price=float(px))
        return await self._send(f"trades:{inst}", inst, lambda _log: (text, (event,)))


def write_universe(
    root: Path, bybit: Sequence[str] = (), okx: Sequence[str] = ()
) -> tuple[Path, Path]:
    """A crypto universe of base coins on Bybit and/or OKX, with ccxt markets cached offline.

    Returns (universe file, cache dir). OKX contract values are OKX's (BTC 0.01, ETH 0.1 ...).
    """
    lines = []
    for base in dict.fromkeys([*bybit, *okx]):
        symbols = []
        if base in bybit:
            symbols.append(f'bybit = "{base}USDT"')
        if base in okx:
            symbols.append(f'okx = "{base}-USDT-SWAP"')
        lines.append(f'[assets.{base}]\nclass = "crypto"\nsymbols = {{ {", ".join(symbols)} }}\n')
    universe = root / "universe.toml"
    universe.write_text("\n".join(lines))
    cache = root / "cache" / "markets"
    cache.mkdir(parents=True)
    if bybit:
        rows = [raw_row(f"{b}USDT", b) for b in bybit]
        (cache / "bybit.json").write_text(json.dumps(ccxt_markets(rows), default=str))
    if okx:
        ct_val = {"BTC": "0.01", "ETH": "0.1", "SOL": "1", "XRP": "100"}
        swaps = okx_markets(*(raw_swap(b, ct_val.get(b, "1")) for b in okx))
        (cache / "okx.json").write_text(json.dumps(swaps, default=str))
    return universe, root / "cache"


class ConnectorProcess:
    """``python -m streams connect --no-backfill`` in its own process, output to a file."""

    def __init__(self, venues: str, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.metrics_port = int(env["FIRESALE_METRICS_PORT"])
        self._out = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "connect", "--venues", venues, "--no-backfill"],
            env={**os.environ, **env}, stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        """Resident set size (``VmRSS``, kB) from ``/proc/<pid>/status``."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of the process's ``/metrics``, keyed (name, labels)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text: str = resp.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it hangs. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = await asyncio.to_thread(self.proc.wait, 10)
        self._out.close()
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def metric(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when the labelled child was never touched)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


class RssSampler:
    """``VmRSS`` of a process every ``interval_s`` while running."""

    def __init__(self, proc: ConnectorProcess, interval_s: float = 0.5) -> None:
        self.proc = proc
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (monotonic s, kB)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.proc.alive():
            self.samples.append((time.monotonic(), self.proc.rss_kb()))
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[tuple[float, int]]:
        return [(t, kb) for t, kb in self.samples if start <= t <= end]


def slope_kb_per_s(samples: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return cov / var
