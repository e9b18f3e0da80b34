"""LogReader against the real broker: a reader with nothing to read still closes.

aiokafka 0.14's consumer.stop() right after start() — before the event loop ran the consumer's
background task once — raised CancelledError out of stop() (the coordinator awaits a task it
cancelled before its first step). A worker restoring a partition with nothing to re-read (its
assignment, or a checkpoint that was current) had its restore task silently cancelled: no log
line, and idle partitions never restored until their next record.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition

from streams.recovery import LogReader
from streams.topics import ensure_topics

pytestmark = pytest.mark.kafka


async def test_a_reader_that_reads_nothing_closes_at_once(kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap)
    started = time.monotonic()
    async with asyncio.timeout(20):
        async with LogReader(kafka_bootstrap):
            pass
        async with LogReader(kafka_bootstrap) as outer, LogReader(kafka_bootstrap) as inner:
            records = [r async for r in inner.read({TopicPartition("bars.v1", 0): (5, 5)})]
            assert records == []
            assert await outer.end_offset(TopicPartition("bars.v1", 0)) >= 0
    assert time.monotonic() - started < 5
