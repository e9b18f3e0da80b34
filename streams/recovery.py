"""Kafka reads a worker needs to rebuild its state: committed offsets, log ranges, checkpoints.

faust resumes each partition at the consumer group's committed offset, but a stage's state
depends on records before it: the open bars of a price partition, the rolling windows of the
market detector. These helpers read those records back with a plain aiokafka consumer (no
group: nothing here moves the group's offsets).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_security import client_kwargs

STATE_TOPIC = "worker.state.v1"


def checkpoint_key(app_id: str, topic: str, partition: int) -> bytes:
    """Key of a stage checkpoint in :data:`STATE_TOPIC` (compacted: the newest one is kept)."""
    return f"{app_id}:{topic}:{partition}".encode()


async def committed_offsets(
    bootstrap: str, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offset per partition (None where it never committed)."""
    wanted = list(tps)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=f"{group}-recovery", **client_kwargs()
    )
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=wanted)
    finally:
        await admin.close()
    out: dict[TopicPartition, int | None] = {}
    for tp in wanted:
        meta = found.get(tp)
        out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
    return out


class LogReader:
    """A group-less consumer for reading partition ranges and offsets."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **client_kwargs(),
        )

    async def __aenter__(self) -> LogReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # aiokafka 0.14: stop() right after start(), before the loop ran the consumer's
        # background task once, raises CancelledError (GroupCoordinator.close awaits a task
        # cancelled before its first step). A reader with nothing to read did exactly that.
        await asyncio.sleep(0)
        await self.consumer.stop()

    async def start_offset(self, tp: TopicPartition, since_ms: int | None) -> int:
        """First offset to re-read: the log start, or the first record at or after ``since_ms``."""
        first = (await self.consumer.beginning_offsets([tp]))[tp]
        if since_ms is None:
            return int(first)
        found = (await self.consumer.offsets_for_times({tp: since_ms}))[tp]
        if found is None:  # every record is older: nothing to re-read
            return int((await self.consumer.end_offsets([tp]))[tp])
        return max(int(first), int(found.offset))

    async def end_offset(self, tp: TopicPartition) -> int:
        """The partition's current end (the offset the next record will get)."""
        return int((await self.consumer.end_offsets([tp]))[tp])

    async def read(
        self, tps: dict[TopicPartition, tuple[int, int]]
    ) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
        """Every record in ``[start, end)`` of each partition, per partition in offset order."""
        todo = {tp: span for tp, span in tps.items() if span[0] < span[1]}
        if not todo:
            return
        self.consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            self.consumer.seek(tp, start)
        while todo:
            batch = await self.consumer.getmany(*todo, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                end = todo[tp][1] if tp in todo else -1
                for rec in records:
                    if rec.offset < end:
                        yield rec
                if tp in todo and (await self.consumer.position(tp)) >= end:
                    del todo[tp]
                    self.consumer.pause(tp)

    async def latest_by_key(self, topic: str) -> dict[bytes, bytes]:
        """The newest value per key of a (compacted) single-partition topic; tombstones drop."""
        tp = TopicPartition(topic, 0)
        start = await self.start_offset(tp, None)
        end = await self.end_offset(tp)
        latest: dict[bytes, bytes] = {}
        async for rec in self.read({tp: (start, end)}):
            if rec.key is None:
                continue
            if rec.value is None:
                latest.pop(rec.key, None)
            else:
                latest[rec.key] = rec.value
        return latest


async def merged(
    streams: dict[str, AsyncIterator[Any]], time_of: Callable[[str, Any], int]
) -> AsyncIterator[tuple[str, Any]]:
    """Merge per-topic iterators by event time (ties: topic name), one record ahead each.

    Rebuilding needs no global order for correctness (the market stage's result depends on each
    log's content only), but a time-merged feed keeps its queues short.
    """
    heap: list[tuple[int, str, int, Any]] = []
    seq = 0
    for name, it in streams.items():
        first = await anext(it, None)
        if first is not None:
            heapq.heappush(heap, (time_of(name, first), name, seq, first))
            seq += 1
    while heap:
        _, name, _, item = heapq.heappop(heap)
        yield name, item
        nxt = await anext(streams[name], None)
        if nxt is not None:
            heapq.heappush(heap, (time_of(name, nxt), name, seq, nxt))
            seq += 1
