"""Read what a test produced: remember topic end offsets, then collect records after them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


class Tail:
    """Records appended to ``topics`` after :meth:`mark`."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self._start: dict[TopicPartition, int] = {}

    async def mark(self) -> None:
        """Remember the current end of every partition."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await consumer.start()
        try:
            parts = [
                TopicPartition(t, p)
                for t in self.topics
                for p in sorted(consumer.partitions_for_topic(t) or await _parts(consumer, t))
            ]
            self._start = await consumer.end_offsets(parts)
        finally:
            await consumer.stop()

    async def collect(
        self, until: Callable[[dict[str, list[Any]]], bool], timeout_s: float = 30.0
    ) -> dict[str, list[Any]]:
        """Records (aiokafka ConsumerRecord) per topic since the mark, until ``until`` holds."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        out: dict[str, list[Any]] = {t: [] for t in self.topics}
        try:
            consumer.assign(list(self._start))
            for tp, offset in self._start.items():
                consumer.seek(tp, offset)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300)
                for tp, records in batch.items():
                    out[tp.topic].extend(records)
                if until(out):
                    break
        finally:
            await consumer.stop()
        return out


async def _parts(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")
