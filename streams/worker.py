"""The faust stream worker: thin agents around the two stages, plus their recovery.

Agents (concurrency 1 — faust #606: higher concurrency can commit past in-flight messages)
decode a record with our strict decoder (raw bytes, not faust's codecs), call a stage and send
what it returns. No faust windowed tables (event-time bugs #427/#428/#250): bars are built with
our own watermark.

Layout and scaling: ``ticks.price.v1`` (3 partitions) feeds the tick stage, one bar builder per
partition, spread over the workers of the consumer group. ``bars.v1``, ``ticks.liquidation.v1``,
``ticks.funding.v1`` and ``ticks.gap.v1`` have one partition each; faust's assignor gives
co-partitioned topics (same partition count) to the same worker, so exactly one worker holds the
whole market stage.

Recovery (at-least-once, idempotent outputs): faust commits an offset only after flushing the
producer, so what came before a committed offset was published. A worker taking a partition
over rebuilds the state behind the committed offset before it processes anything:

- tick stage: the newest checkpoint of the partition (``worker.state.v1``, written after every
  bar close once the bars are flushed), then the records between it and the committed offset;
- market stage: the four input logs from ``recovery_lookback_s`` ago up to their committed
  offsets, replayed without publishing.

Outputs carry deterministic ids and keys, so a redelivered input produces a duplicate that
consumers drop, never a different answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from aiokafka import TopicPartition

from streams.config import Settings, Universe
from streams.events import BarEvent, DecodeError, Funding, GapMarker, Liquidation, PriceTick, decode
from streams.kafka_security import faust_credentials
from streams.market_stage import INPUT_TOPICS, MarketStage
from streams.metrics import PipelineMetrics
from streams.recovery import STATE_TOPIC, LogReader, checkpoint_key, committed_offsets, merged
from streams.tick_stage import Out, TickStage

log = logging.getLogger("firesale.worker")

APP_ID = "firesale"
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.005
PRICES = "ticks.price.v1"
OUTPUT_TOPICS = (
    "bars.v1",
    "signals.correlation.v1",
    "signals.cosell.v1",
    "signals.liquidation.v1",
    "signals.funding.v1",
    STATE_TOPIC,
)
DECODERS: dict[str, type[Any]] = {
    "bars.v1": BarEvent,
    "ticks.liquidation.v1": Liquidation,
    "ticks.funding.v1": Funding,
    "ticks.gap.v1": GapMarker,
}


class WorkerState:
    """The stages of one worker process and what it knows about its partitions."""

    def __init__(
        self,
        settings: Settings,
        universe: Universe,
        bootstrap: str,
        metrics: PipelineMetrics,
        app_id: str,
        clock_ns: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.universe = universe
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.app_id = app_id
        self.clock_ns = clock_ns
        self.ticks = TickStage(
            universe, settings.bar_interval_s, metrics, grace_s=settings.bar_grace_s
        )
        self.market = self._new_market()
        self.market_ready = False
        self.position: dict[tuple[str, int], int] = {}  # next offset to process
        self.highwater: Callable[[str, int], int | None] = lambda topic, partition: None
        self.fetch_answered: dict[int, bool] = {}  # price partition -> broker answered lately
        self.to_restore: set[int] = set()  # price partitions assigned, not restored yet
        self.lock = asyncio.Lock()

    def _new_market(self) -> MarketStage:
        return MarketStage(
            self.universe,
            self.settings.bar_interval_s,
            self.metrics,
            at_head=self.at_head,
            max_wait_s=self.settings.side_input_wait_s,
            dropout_wait_s=self.settings.bar_wait_s,
        )

    def at_head(self, topic: str) -> bool:
        """Whether this worker has processed everything its consumer knows of ``topic``/0."""
        hw = self.highwater(topic, 0)
        pos = self.position.get((topic, 0))
        return hw is not None and pos is not None and pos >= hw

    def revoke(self, tps: set[tuple[str, int]]) -> None:
        """Drop the state of partitions another worker owns now."""
        for topic, partition in tps:
            self.position.pop((topic, partition), None)
            if topic == PRICES:
                self.ticks.drop(partition)
                self.to_restore.discard(partition)
            elif topic in INPUT_TOPICS and self.market_ready:
                self.market = self._new_market()
                self.market_ready = False

    # -- rebuilding -----------------------------------------------------------------------------

    async def ensure_tick_partition(
        self, partition: int, offset: int, checkpoints: Mapping[bytes, bytes] | None = None
    ) -> None:
        """Before the first record of a price partition: restore its bar builder.

        ``checkpoints`` (the newest value per key of ``worker.state.v1``) saves re-reading
        that topic when several partitions are restored at once.
        """
        if self.ticks.holds(partition):
            return
        async with self.lock:
            if self.ticks.holds(partition):
                return
            started = time.monotonic()
            tp = TopicPartition(PRICES, partition)
            async with LogReader(self.bootstrap) as reader:
                if checkpoints is None:
                    checkpoints = await reader.latest_by_key(STATE_TOPIC)
                blob = checkpoints.get(checkpoint_key(self.app_id, PRICES, partition))
                start: int | None = None
                if blob is not None:
                    try:
                        start = self.ticks.restore(partition, blob) + 1
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning(
                            "%s: checkpoint unusable (%s): rebuilding from the log", tp, exc
                        )
                if start is None:
                    # No checkpoint: re-read a few bars' worth of the log before the offset.
                    self.ticks.start(partition)
                    span_ms = (3 * self.settings.bar_interval_s + 60) * 1000
                    since = self.clock_ns() // 1_000_000 - span_ms if offset > 0 else None
                    start = await reader.start_offset(tp, since) if offset > 0 else offset
                n = 0
                async for rec in reader.read({tp: (start, offset)}):
                    n += 1
                    try:
                        tick = decode(PriceTick, rec.value)
                    except DecodeError:
                        continue
                    self.ticks.on_price(
                        partition, rec.offset, tick, self.clock_ns(), rec.timestamp * 1_000_000
                    )
            self.metrics.replayed.labels(PRICES).inc(n)
            log.info(
                "%s: bar builder restored (%s), %d records re-read up to offset %d in %.2f s",
                tp,
                "checkpoint" if blob is not None else "log",
                n,
                offset,
                time.monotonic() - started,
            )

    async def ensure_market(self) -> None:
        """Before the first market input: rebuild the market stage up to the committed offsets."""
        if self.market_ready:
            return
        async with self.lock:
            if self.market_ready:
                return
            started = time.monotonic()
            tps = [TopicPartition(t, 0) for t in INPUT_TOPICS]
            committed = await committed_offsets(self.bootstrap, self.app_id, tps)
            lookback = self.settings.recovery_lookback_s
            since = self.clock_ns() // 1_000_000 - lookback * 1000
            spans: dict[TopicPartition, tuple[int, int]] = {}
            async with LogReader(self.bootstrap) as reader:
                for tp in tps:
                    end = committed[tp]
                    if end is None:  # never committed: faust starts at the log start
                        end = await reader.start_offset(tp, None)
                    spans[tp] = (await reader.start_offset(tp, since), end)
                    self.position[tp.topic, 0] = end
            market = self._new_market()
            market.replaying = True
            readers = [LogReader(self.bootstrap) for _ in tps]
            counts = dict.fromkeys(INPUT_TOPICS, 0)
            try:
                for r in readers:
                    await r.__aenter__()
                streams = {
                    tp.topic: self._decoded(r, tp, spans[tp])
                    for r, tp in zip(readers, tps, strict=True)
                }
                interval_ns = self.settings.bar_interval_s * 1_000_000_000
                async for topic, record in merged(
                    streams, lambda t, r: _event_time(r, interval_ns)
                ):
                    counts[topic] += 1
                    _apply(market, topic, record, self.clock_ns())
            finally:
                for r in readers:
                    await r.__aexit__(None, None, None)
            market.replaying = False
            self.market = market
            self.market_ready = True
            for topic, n in counts.items():
                self.metrics.replayed.labels(topic).inc(n)
            log.info(
                "market stage rebuilt from %s in %.2f s",
                ", ".join(f"{t} {spans[TopicPartition(t, 0)]}" for t in INPUT_TOPICS),
                time.monotonic() - started,
            )

    @staticmethod
    async def _decoded(
        reader: LogReader, tp: TopicPartition, span: tuple[int, int]
    ) -> AsyncIterator[Any]:
        kind = DECODERS[tp.topic]
        async for rec in reader.read({tp: span}):
            try:
                yield decode(kind, rec.value)
            except DecodeError:
                continue


def _event_time(record: Any, interval_ns: int) -> int:
    if isinstance(record, BarEvent):
        return record.bar_start_ns + interval_ns
    if isinstance(record, GapMarker):
        return record.to_ns
    return int(record.ts_event_ns)


def _apply(market: MarketStage, topic: str, record: Any, now_ns: int) -> list[Out]:
    if topic == "bars.v1":
        return market.on_bar(record, now_ns)
    if topic == "ticks.liquidation.v1":
        return market.on_liquidation(record, now_ns)
    if topic == "ticks.funding.v1":
        return market.on_funding(record, now_ns)
    return market.on_gap(record, now_ns)


def create_app(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    metrics: PipelineMetrics,
    clock_ns: Callable[[], int] = time.time_ns,
    app_id: str = APP_ID,
) -> tuple[faust.App, WorkerState]:
    """A faust app with the worker's agents, and the state they drive."""
    (settings.cache_dir / "faust").mkdir(parents=True, exist_ok=True)  # faust makes one level
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        broker_credentials=faust_credentials(settings),  # FIRESALE_KAFKA_* TLS/SASL
        store="memory://",
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_allow_declare=False,  # topics come from the registry (firesale topics create)
        topic_disable_leader=True,
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_linger=0.005,
        # faust keeps a data directory even with the memory store: not in the working directory
        datadir=str(settings.cache_dir / "faust" / "{conf.id}-data"),
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=settings.consumer_session_timeout_s / 10,
    )
    state = WorkerState(settings, universe, bootstrap, metrics, app_id, clock_ns)

    def highwater(topic: str, partition: int) -> int | None:
        try:
            hw = app.consumer.highwater(TopicPartition(topic, partition))
        except Exception:
            return None
        return None if hw is None else int(hw)

    state.highwater = highwater

    def answered(partition: int) -> bool:
        # When the broker last answered a fetch of the price partition (aiokafka keeps it per
        # partition; faust's consumer thread owns the aiokafka consumer). Unknown = answered.
        try:
            consumer = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
            ms = consumer.last_poll_timestamp(TopicPartition(PRICES, partition))
        except Exception:
            return True
        if ms is None:
            return True
        fresh: bool = time.time() - ms / 1000 < (state.ticks.idle_timeout_s or 10.0)
        if fresh != state.fetch_answered.get(partition, True):
            if fresh:
                log.info("%s[%d]: broker answers fetches again", PRICES, partition)
            else:
                log.warning(
                    "%s[%d]: no fetch answer from the broker for %.0f s: idle timeout held "
                    "(the ticks are waiting upstream, not missing)",
                    PRICES, partition, time.time() - ms / 1000,
                )  # fmt: skip
            state.fetch_answered[partition] = fresh
        return fresh

    def raw(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    outputs = {name: raw(name) for name in OUTPUT_TOPICS}

    async def send(records: list[Out]) -> None:
        for rec in records:
            await outputs[rec.topic].send(key=rec.key, value=rec.value)

    unsaved: dict[int, int] = {}  # partition -> processing time of its first unsaved bar
    checkpoint_every_ns = int(settings.checkpoint_interval_s * 1e9)

    async def checkpoint(partition: int, now_ns: int, force: bool = False) -> None:
        # At most one checkpoint per checkpoint_interval_s and partition: each needs a producer
        # flush (the bars it accounts for must be durable before it is), which would otherwise
        # throttle a worker catching up on a backlog. A restore re-reads what came after it.
        first = unsaved.setdefault(partition, now_ns)
        if not force and now_ns - first < checkpoint_every_ns:
            return
        del unsaved[partition]
        if not state.ticks.holds(partition):
            return
        await app.producer.flush()
        await outputs[STATE_TOPIC].send(
            key=checkpoint_key(app_id, PRICES, partition), value=state.ticks.checkpoint(partition)
        )

    lag = {t: metrics.event_time_lag.labels(t) for t in (PRICES, *INPUT_TOPICS)}

    def agent(
        name: str, handle: Callable[[int, int, int, bytes], Awaitable[None]], batch: int = 1
    ) -> None:
        async def consume(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            # Price ticks come in batches: faust's per-event overhead dwarfs our per-tick work
            # (bench/pipeline.py: ~30 % less CPU per tick); the rest one by one, for latency.
            batches = cast("faust.Stream[bytes]", stream).take_events(batch, BATCH_WITHIN_S)
            async for events in batches:
                for event in events:
                    msg = event.message
                    try:
                        await handle(
                            msg.partition, msg.offset, int(msg.timestamp * 1e9), msg.value or b""
                        )
                    except DecodeError as exc:
                        # An undecodable record upstream must not stop the worker: log and skip.
                        log.error("%s: skipped an invalid record at %d: %s", name, msg.offset, exc)
                    state.position[name, msg.partition] = msg.offset + 1
                yield None

        consume.__name__ = f"on_{name.replace('.', '_')}"
        consume.__qualname__ = consume.__name__
        app.agent(raw(name), name=f"firesale.{consume.__name__}", concurrency=1)(consume)

    async def on_price(partition: int, offset: int, produced_ns: int, value: bytes) -> None:
        await state.ensure_tick_partition(partition, offset)
        tick = decode(PriceTick, value)
        now = clock_ns()
        lag[PRICES].set((now - tick.ts_event_ns) / 1e9)
        bars = state.ticks.on_price(partition, offset, tick, now, produced_ns)
        if bars:
            await send(bars)
            await checkpoint(partition, now)

    def market_agent(topic: str) -> None:
        kind = DECODERS[topic]
        interval_ns = settings.bar_interval_s * 1_000_000_000

        async def handle(partition: int, offset: int, produced_ns: int, value: bytes) -> None:
            await state.ensure_market()
            record = decode(kind, value)
            now = clock_ns()
            lag[topic].set((now - _event_time(record, interval_ns)) / 1e9)
            state.position[topic, partition] = offset + 1
            await send(_apply(state.market, topic, record, now))

        agent(topic, handle)

    agent(PRICES, on_price, batch=BATCH_MAX)
    for topic in INPUT_TOPICS:
        market_agent(topic)

    async def idle_sources() -> None:
        if state.lock.locked():
            return  # a rebuild is running
        if state.to_restore:
            partitions = sorted(state.to_restore)
            state.to_restore.clear()
            await restore(partitions)
        now = clock_ns()
        for partition, bars in state.ticks.advance(now, answered).items():
            await send(bars)
            await checkpoint(partition, now)
        for partition, since in list(unsaved.items()):
            if now - since >= checkpoint_every_ns:
                await checkpoint(partition, now, force=True)
        if state.market_ready:
            await send(state.market.tick(now))
        for (topic, partition), pos in list(state.position.items()):
            hw = highwater(topic, partition)
            if hw is not None:
                metrics.consumer_lag.labels(topic, str(partition)).set(max(0, hw - pos))

    app.timer(interval=1.0)(idle_sources)

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        state.revoke({(tp.topic, tp.partition) for tp in revoked})

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        # Restore assigned price partitions soon, not at their next record: an idle partition
        # must still close its bars on the idle timeout. The timer below does it (within 1 s),
        # outside faust's rebalance callback and never at the same time as the idle advance.
        state.to_restore.update(tp.partition for tp in assigned if tp.topic == PRICES)

    async def restore(partitions: list[int]) -> None:
        tps = [TopicPartition(PRICES, p) for p in partitions]
        try:
            committed = await committed_offsets(bootstrap, app_id, tps)
            async with LogReader(bootstrap) as reader:
                starts = {tp: committed[tp] or await reader.start_offset(tp, None) for tp in tps}
                checkpoints = await reader.latest_by_key(STATE_TOPIC)
            for tp, offset in starts.items():
                if tp in app.consumer.assignment():  # not revoked meanwhile
                    await state.ensure_tick_partition(tp.partition, offset, checkpoints)
        except Exception:  # the first record of the partition retries
            log.exception("restoring %s at assignment failed; retried at its next record", tps)

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    return app, state
