"""Supervised connections against a local fake venue: reconnect, resubscribe, gaps, staleness,
garbage, scheduled rollover. The claim here is about WebSocket handling, so the sink is an
in-memory list; producing to the real broker is tested in test_sink.py and the venue tests."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable

import orjson
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection

from connectors.base import ConnectionSpec, Instrument, Keepalive, ParseResult, Reject
from connectors.fields import FieldError, ms_to_ns, positive, text
from connectors.metrics import ConnectorMetrics
from connectors.runner import FrameRouter
from connectors.supervisor import Backoff, Supervisor
from streams.events import DeadLetter, GapMarker, PriceTick, decode
from tests.connectors.fake_exchange import FakeExchange

BTC = Instrument(venue="toy", symbol="BTCUSDT", asset="BTC", asset_class="crypto")


class ToyParser:
    """A minimal venue: {"s":..., "p":..., "T":...} price frames, {"op":"pong"} pongs."""

    venue = "toy"

    def parse(self, raw: str | bytes, ts_recv_ns: int) -> ParseResult:
        result = ParseResult()
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            result.rejects.append(Reject("malformed_json", str(exc), "prices"))
            return result
        if msg.get("op") in ("pong", "subscribed"):
            result.control = "pong" if msg["op"] == "pong" else "ack"
            return result
        try:
            result.events.append(
                PriceTick(
                    venue="toy",
                    symbol=text(msg, "s"),
                    asset="BTC",
                    asset_class="crypto",
                    ts_event_ns=ms_to_ns(msg, "T"),
                    ts_recv_ns=ts_recv_ns,
                    price=positive(msg, "p"),
                    kind="trade",
                )
            )
        except FieldError as exc:
            result.rejects.append(Reject(exc.reason, exc.detail, "prices"))
        return result


class FakeToy(FakeExchange):
    def handle_text(self, ws: ServerConnection, text: str) -> Iterable[str]:
        msg = json.loads(text)
        if msg.get("op") == "ping":
            return [json.dumps({"op": "pong"})] if self.answer_pings else []
        self.add_subscriptions(msg["args"])
        return [json.dumps({"op": "subscribed"})]


class ListSink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []

    async def put(self, topic: str, key: bytes, value: bytes) -> bool:
        self.messages.append((topic, key, value))
        return True

    def of(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.messages if t == topic]


def spec(url: str, **overrides: object) -> ConnectionSpec:
    base: dict[str, object] = {
        "name": "toy-prices",
        "venue": "toy",
        "url": url,
        "channels": ("prices",),
        "subscribe": (json.dumps({"op": "subscribe", "args": ["prices.BTCUSDT"]}),),
        "keepalive": Keepalive("json_ping", 0.2, json.dumps({"op": "ping"})),
        "parser_factory": ToyParser,
        "stale_after_s": 1.0,
    }
    base.update(overrides)
    return ConnectionSpec(**base)  # type: ignore[arg-type]


def frame(i: int, price: float = 100.0) -> str:
    return json.dumps({"s": "BTCUSDT", "p": str(price + i), "T": 1_760_000_000_000 + i})


async def _start(fake: FakeExchange, s: ConnectionSpec, sink: ListSink):
    metrics = ConnectorMetrics.create(CollectorRegistry())
    router = FrameRouter(sink, metrics)
    sup = Supervisor(
        s,
        router.on_frame,
        router.on_gap,
        metrics,
        backoff=Backoff(0.05, 0.2),
        rng=random.Random(1),
        lifetime_margin_s=0.5,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop))
    return sup, stop, task, metrics


async def _eventually(cond, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.02)


async def test_drop_reconnects_resubscribes_and_marks_the_gap() -> None:
    fake, sink = FakeToy(), ListSink()
    url = await fake.start()
    _sup, stop, task, metrics = await _start(fake, spec(url), sink)
    try:
        await fake.wait_subscribed({"prices.BTCUSDT"})
        for i in range(3):
            await fake.broadcast(frame(i))
        await _eventually(lambda: len(sink.of("ticks.price.v1")) == 3)
        await fake.drop_all()
        await fake.wait_subscribed({"prices.BTCUSDT"})  # resubscribed on the new connection
        await fake.broadcast(frame(3))
        await _eventually(lambda: len(sink.of("ticks.gap.v1")) == 1)
        await _eventually(lambda: len(sink.of("ticks.price.v1")) == 4)
    finally:
        stop.set()
        await task
        await fake.stop()
    prices = [decode(PriceTick, v) for v in sink.of("ticks.price.v1")]
    assert [p.price for p in prices] == [100.0, 101.0, 102.0, 103.0]
    assert [p.ts_event_ns for p in prices] == [(1_760_000_000_000 + i) * 10**6 for i in range(4)]
    gap = decode(GapMarker, sink.of("ticks.gap.v1")[0])
    assert (gap.venue, gap.channel, gap.reason) == ("toy", "prices", "disconnect")
    assert gap.from_ns == prices[2].ts_recv_ns
    assert gap.to_ns == prices[3].ts_recv_ns
    assert fake.connects == 2
    assert metrics.reconnects.labels("toy", "toy-prices", "disconnect")._value.get() == 1


async def test_server_that_stops_answering_pings_is_detected_as_stale() -> None:
    fake, sink = FakeToy(), ListSink()
    url = await fake.start()
    _sup, stop, task, metrics = await _start(fake, spec(url), sink)
    try:
        await fake.wait_subscribed({"prices.BTCUSDT"})
        await fake.broadcast(frame(0))
        await _eventually(lambda: len(sink.of("ticks.price.v1")) == 1)
        fake.answer_pings = False  # silence: no data, no pongs
        await _eventually(lambda: fake.connects == 2, timeout_s=5)
        fake.answer_pings = True
        await fake.wait_subscribed({"prices.BTCUSDT"})
        await fake.broadcast(frame(1))
        await _eventually(lambda: len(sink.of("ticks.gap.v1")) == 1)
    finally:
        stop.set()
        await task
        await fake.stop()
    assert decode(GapMarker, sink.of("ticks.gap.v1")[0]).reason == "stale"
    assert metrics.reconnects.labels("toy", "toy-prices", "stale")._value.get() >= 1
    # pings were really sent by the client while the venue answered
    assert sum('"ping"' in m for m in fake.received) >= 2


async def test_garbage_is_dead_lettered_and_the_connection_survives() -> None:
    fake, sink = FakeToy(), ListSink()
    url = await fake.start()
    _sup, stop, task, _ = await _start(fake, spec(url), sink)
    try:
        await fake.wait_subscribed({"prices.BTCUSDT"})
        await fake.broadcast("{not json")
        await fake.broadcast(json.dumps({"s": "BTCUSDT", "p": "-5", "T": 1_760_000_000_000}))
        await fake.broadcast(b"\xff\xfe binary junk")
        await fake.broadcast(frame(7))
        await _eventually(lambda: len(sink.of("ticks.price.v1")) == 1)
        await _eventually(lambda: len(sink.of("ticks.deadletter.v1")) == 3)
    finally:
        stop.set()
        await task
        await fake.stop()
    letters = [decode(DeadLetter, v) for v in sink.of("ticks.deadletter.v1")]
    assert [letter.reason.split(":")[0] for letter in letters] == [
        "malformed_json",
        "absurd_value",
        "malformed_json",
    ]
    assert letters[0].raw == "{not json"
    assert "p is -5, must be a finite number > 0" in letters[1].reason
    assert letters[2].raw.endswith("binary junk")
    assert fake.connects == 1


async def test_scheduled_rollover_overlaps_without_a_gap() -> None:
    fake, sink = FakeToy(), ListSink()
    url = await fake.start()
    s = spec(url, max_lifetime_s=1.0, stale_after_s=5.0)
    _sup, stop, task, metrics = await _start(fake, s, sink)
    try:
        await fake.wait_subscribed({"prices.BTCUSDT"})
        i = 0
        while fake.connects < 2 or len(fake.connections) != 1:
            await fake.broadcast(frame(i))
            i += 1
            await asyncio.sleep(0.05)
        for _ in range(3):
            await fake.broadcast(frame(i))
            i += 1
        n = i
        await _eventually(
            lambda: (
                {decode(PriceTick, v).price for v in sink.of("ticks.price.v1")}
                >= {100.0 + k for k in range(n)}
            )
        )
    finally:
        stop.set()
        await task
        await fake.stop()
    assert sink.of("ticks.gap.v1") == []
    assert metrics.reconnects.labels("toy", "toy-prices", "lifetime")._value.get() >= 1


def test_backoff_is_capped_full_jitter() -> None:
    b = Backoff(base_s=0.5, cap_s=8.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        bound = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [b.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > 0.8 * bound  # the whole range is used, not a fixed step


class SlamAfterFirstFrame(FakeToy):
    """A venue that sends one price frame on subscribe and then closes the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.opened_at: list[float] = []

    def handle_text(self, ws: ServerConnection, text: str) -> Iterable[str]:
        replies = list(super().handle_text(ws, text))
        if json.loads(text).get("op") == "subscribe":
            self.opened_at.append(asyncio.get_running_loop().time())
            replies.append(frame(len(self.opened_at)))
            asyncio.get_running_loop().call_later(0.01, ws.transport.abort)
        return replies


async def test_a_venue_closing_every_connection_is_redialled_at_most_once_a_second() -> None:
    """Backoff resets after data, so without a floor this venue was redialled ~85 times a
    second (measured): more than venues allow (OKX: 3 connection requests/s per IP)."""
    fake, sink = SlamAfterFirstFrame(), ListSink()
    url = await fake.start()
    _sup, stop, task, _metrics = await _start(fake, spec(url), sink)
    try:
        await _eventually(lambda: len(fake.opened_at) >= 4, timeout_s=10)
    finally:
        stop.set()
        await task
        await fake.stop()
    spacing = [b - a for a, b in zip(fake.opened_at, fake.opened_at[1:], strict=False)]
    assert min(spacing) >= 0.95, spacing  # 1 s floor (asyncio timer slack aside)
    assert max(spacing) < 2.0, spacing  # and no more: data came, so no backoff either
    assert len(sink.of("ticks.price.v1")) == len(fake.opened_at)  # each session's frame kept
