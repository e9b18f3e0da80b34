"""Where the previous connector process stopped: the start of the gap a restart leaves.

A connector that dies (SIGKILL, OOM, a node lost) leaves a hole in every venue's data from its
last frame to the first frame the next process receives. The new process cannot see the old
one's sockets, but it can see what the old one published: the newest receive time per venue on
the tick topics. Each supervisor of that venue then opens its first session with a ``restart``
gap from that time, closed (and backfilled, with ``--backfill``) at its first data frame, like
any other gap. A first start on an empty cluster finds nothing and marks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import orjson
from aiokafka import TopicPartition

from streams.recovery import LogReader
from streams.topics import TOPICS

log = logging.getLogger("firesale.connectors")

#: the topics a connector publishes venue data to (gap markers and dead letters are not data)
DATA_TOPICS = ("ticks.price.v1", "ticks.liquidation.v1", "ticks.funding.v1")


async def last_receive_by_venue(
    bootstrap: str, symbols: Mapping[str, Collection[str]], tail: int = 2_000
) -> dict[str, int]:
    """The newest ``ts_recv_ns`` per venue among the last ``tail`` records of each partition,
    counting only records of the given venue → symbols (what this process publishes).

    ``tail`` bounds the read; the busiest venue's price ticks fill it, and a venue absent
    from every tail has published nothing for a long time (it gets no restart gap; its
    first session starts as on a fresh cluster). Unreadable records are skipped.
    """
    last: dict[str, int] = {}
    async with LogReader(bootstrap) as reader:
        spans: dict[TopicPartition, tuple[int, int]] = {}
        for spec in TOPICS:
            if spec.name not in DATA_TOPICS:
                continue
            for partition in range(spec.partitions):  # the registry's (the worker checks them)
                tp = TopicPartition(spec.name, partition)
                first = await reader.start_offset(tp, None)
                end = await reader.end_offset(tp)
                spans[tp] = (max(first, end - tail), end)
        async for rec in reader.read(spans):
            try:
                doc = orjson.loads(rec.value or b"")
                venue, symbol, recv = doc["venue"], doc["symbol"], int(doc["ts_recv_ns"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if symbol in symbols.get(venue, ()) and recv > last.get(venue, 0):
                last[venue] = recv
    return last
