"""A fake venue streams liquidations through the connector while the Kafka broker is stopped
for 20 s and restarted on the same port: every event must arrive; a duplicate can only come
from a send retried after a timeout (the idempotent producer cannot dedupe across producer
sessions), and the test bounds them by the sink's resent count."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from connectors.app import run_connect
from connectors.base import Instrument
from connectors.metrics import ConnectorMetrics
from connectors.sink import KafkaSink, SinkSettings
from deploy.kafka import broker
from streams.events import Liquidation, decode
from streams.topics import TOPICS, ensure_topics
from tests.connectors.fake_bybit import FakeBybit

pytestmark = pytest.mark.kafka

ROSE = Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0)
T0_MS = 1_760_000_000_000
N = 1200


def frame(i: int) -> str:
    item = {"T": T0_MS + i, "s": "ROSEUSDT", "S": "Buy" if i % 2 else "Sell",
            "v": str(100 + i), "p": "0.05"}  # fmt: skip
    return json.dumps({"topic": "allLiquidation.ROSEUSDT", "type": "snapshot",
                       "ts": T0_MS + i, "data": [item]})  # fmt: skip


async def _consume_all(bootstrap: str) -> list[bytes]:
    consumer = AIOKafkaConsumer("ticks.liquidation.v1", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=None)  # fmt: skip
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(120):
            idle = 0
            while len(values) < N or idle < 3:
                batch = await consumer.getmany(timeout_ms=500)
                got = [r.value for recs in batch.values() for r in recs]
                values.extend(got)
                idle = 0 if got else idle + 1
    finally:
        await consumer.stop()
    return values


async def test_broker_down_20s_while_the_connector_streams(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    port = broker.free_port()
    bootstrap = broker.start(home, port, detach=False).bootstrap
    await ensure_topics(bootstrap, [t for t in TOPICS if t.name.startswith("ticks.")])
    fake = FakeBybit()
    url = await fake.start()
    sink = KafkaSink(
        bootstrap,
        ConnectorMetrics.create(CollectorRegistry()),
        SinkSettings(max_block_s=120, request_timeout_ms=10_000, max_attempts=30),
    )
    await sink.start()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_connect(
            bootstrap, {"bybit": [ROSE]}, {"bybit": url}, stop, CollectorRegistry(), sink=sink
        )
    )
    down_at: float | None = None
    try:
        await fake.wait_subscribed({"allLiquidation.ROSEUSDT"})
        for i in range(N):
            await fake.broadcast(frame(i))
            await asyncio.sleep(0.025)  # ~30 s of flow
            if i == 200:
                await asyncio.to_thread(broker.stop, home)
                down_at = time.monotonic()
            if down_at is not None and time.monotonic() - down_at > 20:
                await asyncio.to_thread(broker.start, home, port, detach=False)
                down_at = None
        assert down_at is None, "the flow ended before the 20 s outage did"
        await sink.flush(timeout_s=180)
        values = await _consume_all(bootstrap)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sink.stop()
        await fake.stop()
        broker.stop(home)
    events = [decode(Liquidation, v) for v in values]
    seen = {e.ts_event_ns for e in events}
    assert seen == {(T0_MS + i) * 1_000_000 for i in range(N)}  # nothing lost
    assert len(events) - len(seen) <= sink.resent  # only resent messages may repeat
    assert (sink.dropped, sink.maybe_delivered) == (0, 0)
    sample = next(e for e in events if e.ts_event_ns == (T0_MS + 7) * 1_000_000)
    assert (sample.liquidated_side, sample.qty_base) == ("long", 107.0)
    assert sample.notional_usd == pytest.approx(107 * 0.05, rel=1e-12)
