"""Producing to Kafka without silent loss.

:class:`KafkaSink` puts messages in a bounded buffer; one task drains it in batches through an
idempotent ``acks=all`` aiokafka producer (lz4-compressed, with an explicit linger), sending many
and awaiting their acknowledgements together. When Kafka is unreachable the buffer fills and
:meth:`KafkaSink.put` makes the caller wait (backpressure); a message that still finds no room
after ``max_block_s`` is dropped, counted and logged. A send that fails or times out is
retried; only after ``max_attempts`` is it given up as *maybe delivered* (it may be in Kafka or
not), counted and logged. Nothing disappears without a counter and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.metrics import ConnectorMetrics

log = logging.getLogger("firesale.sink")


class KeyHashPartitioner:
    """Kafka's default partitioner (murmur2 of the key, as the Java client) with each key's hash
    cached: aiokafka's murmur2 is pure Python (~3 µs a message) and firesale's keys
    (``venue:symbol``) are few. Keyless messages go to a random available partition."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        h = self._hashes.get(key)
        if h is None:
            from aiokafka.partitioner import murmur2

            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


@dataclass(frozen=True, slots=True)
class Message:
    """One record to produce."""

    topic: str
    key: bytes
    value: bytes
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """Producer and buffer settings (explicit, not left to library defaults)."""

    max_buffer: int = 20_000
    max_block_s: float = 30.0
    batch_max: int = 2_000
    linger_ms: int = 20
    compression: str = "lz4"
    request_timeout_ms: int = 60_000
    max_attempts: int = 5
    retry_backoff_s: float = 1.0


class KafkaSink:
    """Bounded, batched, idempotent producer with loss accounting."""

    def __init__(
        self,
        bootstrap: str,
        metrics: ConnectorMetrics,
        settings: SinkSettings | None = None,
        producer_factory: Callable[..., Any] | None = None,
        **client_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.settings = settings or SinkSettings()
        self._queue: asyncio.Queue[Message] = asyncio.Queue(self.settings.max_buffer)
        self._producer_factory = producer_factory
        self._client_options = client_options
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0
        self.maybe_delivered = 0
        self.resent = 0
        self._last_drop_log = 0.0
        metrics.buffer_size.set_function(self._queue.qsize)  # read at scrape time, not per put

    async def start(self) -> None:
        """Start the producer (retrying until Kafka answers) and the drain task."""
        self._producer = await self._new_producer()
        self._task = asyncio.create_task(self._drain(), name="kafka-sink-drain")

    async def _new_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        from streams.kafka_security import client_kwargs

        factory = self._producer_factory or AIOKafkaProducer
        s = self.settings
        # FIRESALE_KAFKA_* security (TLS/SASL) unless the caller passed its own options
        security = {} if "security_protocol" in self._client_options else client_kwargs()
        attempt = 0
        while True:
            producer = factory(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=s.linger_ms,
                compression_type=s.compression,
                request_timeout_ms=s.request_timeout_ms,
                max_batch_size=256 * 1024,
                **({"partitioner": KeyHashPartitioner()} | security | self._client_options),
            )
            try:
                await producer.start()
                return producer
            except Exception as exc:
                await producer.stop()
                attempt += 1
                delay = min(5.0, 0.5 * 2**attempt)
                log.warning(
                    "Kafka at %s unreachable (%s); retrying in %.1f s",
                    self.bootstrap,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def put(self, topic: str, key: bytes, value: bytes) -> bool:
        """Enqueue one message; wait while the buffer is full (backpressure).

        Returns False when the message was dropped after ``max_block_s`` (counted and logged).
        """
        msg = Message(topic, key, value, time.monotonic())
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(self._queue.put(msg), self.settings.max_block_s)
            except TimeoutError:
                self.dropped += 1
                self.metrics.dropped.labels(topic).inc()
                now = time.monotonic()
                if now - self._last_drop_log > 5:
                    self._last_drop_log = now
                    log.error(
                        "producer buffer full for %.0f s (Kafka unreachable?): dropped a message "
                        "for %s; %d dropped so far",
                        self.settings.max_block_s,
                        topic,
                        self.dropped,
                    )
                return False
        return True

    async def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until everything enqueued so far is acknowledged or accounted for."""
        async with asyncio.timeout(timeout_s):
            await self._queue.join()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Flush what can be flushed within ``timeout_s``, then stop the producer."""
        try:
            if self._task is not None and not self._task.done():
                try:
                    await self.flush(timeout_s)
                except TimeoutError:
                    left = self._queue.qsize()
                    self.dropped += left
                    log.error("stopping with %d unsent messages (counted as dropped)", left)
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def _restart_producer(self) -> None:
        old, self._producer = self._producer, None
        try:
            await asyncio.wait_for(old.stop(), self.settings.request_timeout_ms / 1000)
        except Exception as exc:
            log.warning("stopping the old producer failed (%s); continuing", exc)
        self._producer = await self._new_producer()

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.settings.batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._send_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _send_batch(self, batch: list[Message]) -> None:
        pending = batch
        for attempt in range(1, self.settings.max_attempts + 1):
            futures = []
            for msg in pending:
                try:
                    futures.append(await self._producer.send(msg.topic, msg.value, key=msg.key))
                except Exception as exc:  # buffer full / not started: treat like a failed send
                    futures.append(_failed(exc))
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = []
            now = time.monotonic()
            produced: dict[str, int] = {}
            observe = self.metrics.produce_latency.observe
            for msg, result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append((msg, result))
                else:
                    produced[msg.topic] = produced.get(msg.topic, 0) + 1
                    observe(now - msg.enqueued_at)
            for topic, count in produced.items():  # metrics once per batch, not per message
                self.delivered += count
                self.metrics.produced.labels(topic).inc(count)
            if not failed:
                return
            pending = [m for m, _ in failed]
            self.resent += len(pending)
            log.warning(
                "%d of %d sends failed (attempt %d/%d, first error: %s); retrying",
                len(failed),
                len(results),
                attempt,
                self.settings.max_attempts,
                failed[0][1],
            )
            await asyncio.sleep(self.settings.retry_backoff_s * attempt)
            # A batch that expired leaves aiokafka's idempotent sequence numbers out of step
            # with the broker (OutOfOrderSequenceNumber for ever after); a new producer gets a
            # fresh producer id. A message that did reach Kafka before its send timed out is
            # then written again: that duplicate is the price of not losing it.
            await self._restart_producer()
        for msg in pending:
            self.maybe_delivered += 1
            self.metrics.produce_failures.labels(msg.topic).inc()
        log.error(
            "gave up on %d messages after %d attempts: they may or may not be in Kafka",
            len(pending),
            self.settings.max_attempts,
        )


def _failed(exc: Exception) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
