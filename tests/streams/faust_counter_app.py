"""A minimal faust app for the broker-compatibility test: a changelogged table of counts.

Run as ``python tests/streams/faust_counter_app.py worker``; environment:
``COUNTER_BOOTSTRAP`` (host:port), ``COUNTER_TOPIC``, ``COUNTER_APP_ID``, ``COUNTER_DUMP`` (file
the agent writes the table to when it receives the message ``dump:<token>``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import faust

app = faust.App(
    os.environ["COUNTER_APP_ID"],
    broker=f"kafka://{os.environ['COUNTER_BOOTSTRAP']}",
    store="memory://",
    topic_partitions=1,
    web_enabled=False,
    processing_guarantee="at_least_once",
)
source = app.topic(
    os.environ["COUNTER_TOPIC"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
# key -> {message id: amount}: idempotent under at-least-once redelivery (a message counted
# twice after a rebalance overwrites its own entry), so the sums are exact.
counts = app.Table("counts", default=dict, partitions=1)
dump_path = Path(os.environ["COUNTER_DUMP"])


@app.agent(source, concurrency=1)
async def count(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    async for raw_key, raw_value in stream.items():
        key, value = raw_key.decode(), raw_value.decode()
        if value.startswith("dump:"):
            # At-least-once: an old dump request may be delivered again after a restart, so
            # every request carries a token and the reply names it.
            tmp = dump_path.with_suffix(".tmp")
            sums = {k: sum(v.values()) for k, v in counts.items()}
            tmp.write_text(json.dumps({"token": value[5:], "counts": sums}))
            tmp.rename(dump_path)
        else:
            msg_id, amount = value.split(":")
            counts[key] = {**counts[key], msg_id: int(amount)}
        yield None


if __name__ == "__main__":
    app.main()
