"""The faust worker end to end on a real broker: scenario ticks → worker → signal topics.

A labelled fire-sale scenario is produced through the connectors' sink; a real
`firesale worker` process turns it into bars and signals. The co-selling flag must start inside
the labelled fire sale (within a bounded number of bars of onset), never in calm, and end. Its
``/metrics`` must tell the same story (counts of each event type equal to the topic's, the flag
down again at the end) and pass ``promtool check metrics``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from connectors.metrics import ConnectorMetrics
from connectors.scenario import ScenarioParams, phase_schedule, run_scenario
from connectors.sink import KafkaSink
from deploy.kafka import broker
from streams.config import load_universe
from streams.events import SignalEvent, decode
from streams.topics import ensure_topics
from tests.connectors.kafka_tail import Tail
from tests.promtool import check_metrics

pytestmark = pytest.mark.kafka

T0 = 1_762_214_400_000_000_000  # 2025-11-04T00:00:00Z
BAR_S = 300


async def test_worker_flags_the_scenario_fire_sale(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    info = broker.start(home, None, detach=False)  # its own broker: a fresh consumer group
    try:
        bootstrap = info.bootstrap
        await ensure_topics(bootstrap)
        tail = Tail(bootstrap, ["signals.cosell.v1", "signals.correlation.v1", "bars.v1"])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        await tail.mark()
        env = {
            **os.environ,
            "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
            "FIRESALE_BAR_INTERVAL_S": str(BAR_S),
            "FIRESALE_METRICS_PORT": str(port),
        }
        log = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            sink = KafkaSink(bootstrap, ConnectorMetrics.create(CollectorRegistry()))
            await sink.start()
            params = ScenarioParams.preset("fire-sale", mark_interval_s=60, trade_rate_scale=0.01)
            try:
                run = await run_scenario(
                    sink, params, load_universe(None).assets, T0, None, asyncio.Event(), seed=3
                )
                await sink.flush()
            finally:
                await sink.stop()
            assert run.completed

            def ended(out: dict[str, list[object]]) -> bool:
                return any(
                    decode(SignalEvent, r.value).type == "cosell.end"  # type: ignore[attr-defined]
                    for r in out["signals.cosell.v1"]
                )

            got = await tail.collect(ended, timeout_s=300)
            await asyncio.sleep(2)  # the gauges of the last bar
            url = f"http://127.0.0.1:{port}/metrics"
            exposition = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
        finally:
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 60)
        assert code == 0, log.read_text()[-3000:]
    finally:
        broker.stop(home)
    schedule = phase_schedule(params, T0)
    onset = next(i.start_ns for i in schedule.intervals if i.phase == "fire_sale")
    events = [decode(SignalEvent, r.value) for r in got["signals.cosell.v1"]]
    starts = [e for e in events if e.type == "cosell.start"]
    assert starts, log.read_text()[-3000:]
    assert all(schedule.phase_at(e.ts_event_ns) != "calm" for e in starts)
    delay_bars = (starts[0].ts_event_ns - onset) // (BAR_S * 10**9)
    assert 0 <= delay_bars <= 6, delay_bars
    assert [e.type for e in events][-1] == "cosell.end"
    assert all(
        e.id.endswith(str(starts[0].data["episode_start_ns"])) or ":" in e.id for e in events
    )
    records = [decode(SignalEvent, r.value) for r in got["signals.correlation.v1"]]
    assert len({r.id for r in records}) == len(records)  # one record per bar
    assert len(records) >= (onset - T0) // (BAR_S * 10**9)  # the whole calm phase was processed

    # /metrics agrees with the topics and lints clean
    text = exposition.decode()
    assert check_metrics(text) == []
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in text_string_to_metric_families(text)
        for s in m.samples
    }

    def sample(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    for kind in ("cosell.start", "cosell.end"):
        n = len({e.id for e in events if e.type == kind})
        assert n >= 1
        assert sample("firesale_signal_events_total", type=kind) == n
    assert sample("firesale_cosell_active") == 0  # recovered
    assert sample("firesale_bars_total") >= len({r.id for r in records})
    assert sample("firesale_tick_signal_latency_seconds_count") > 0
    assert sample("firesale_last_signal_timestamp_seconds") > T0 / 1e9  # processing time
    for p in range(3):
        assert (
            sample("firesale_consumer_lag_records", topic="ticks.price.v1", partition=str(p)) == 0
        )
