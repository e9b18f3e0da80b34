"""`firesale connect` started before its broker waits, says so, creates the topics once Kafka
appears, and then streams: nothing produced into the void, nothing auto-created wrongly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.kafka import broker
from streams.events import Liquidation, decode
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.kafka_tail import Tail
from tests.connectors.rose_universe import write_rose_universe
from tests.streams.test_worker_waits_for_kafka import _until

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"


async def test_connect_started_before_kafka_waits_then_streams(tmp_path: Path) -> None:
    port = broker.free_port()
    bootstrap = f"127.0.0.1:{port}"
    fake = FakeBybit()
    url = await fake.start()
    universe, cache = write_rose_universe(tmp_path)
    env = {
        **os.environ,
        "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRESALE_UNIVERSE": str(universe),
        "FIRESALE_CACHE_DIR": str(cache),
        "FIRESALE_BYBIT_WS_URL": url,
        "FIRESALE_METRICS_PORT": "0",
    }
    log = tmp_path / "connect.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "connect", "--venues", "bybit", "--no-backfill"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    home = tmp_path / "kafka"
    try:
        await _until(log, "unreachable (attempt 2", proc, 60)
        text = log.read_text()
        assert f"Kafka at {bootstrap} unreachable (attempt 1" in text
        assert "retrying in 1 s (check FIRESALE_KAFKA_BOOTSTRAP)" in text
        assert fake.connects == 0  # no venue data taken while it has nowhere to go
        started = time.monotonic()
        broker.start(home, port, detach=False)
        await _until(log, "connecting to bybit: 1 instruments", proc, 120)
        waited = time.monotonic() - started
        text = log.read_text()
        assert "topic ticks.liquidation.v1: created" in text
        assert "topic ticks.price.v1: created" in text
        tail = Tail(bootstrap, ["ticks.liquidation.v1"])
        await tail.mark()
        await fake.wait_subscribed({"allLiquidation.ROSEUSDT"}, 60)
        await fake.broadcast((FIXTURES / "bybit_allLiquidation.json").read_text())
        got = await tail.collect(lambda out: bool(out["ticks.liquidation.v1"]), timeout_s=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        await fake.stop()
        broker.stop(home)
    (rec,) = got["ticks.liquidation.v1"]
    liq = decode(Liquidation, rec.value)
    assert (liq.venue, liq.symbol, liq.liquidated_side, liq.qty_base, liq.price) == (
        "bybit", "ROSEUSDT", "short", 20_000.0, 0.04499,
    )  # fmt: skip
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    print(f"\nconnected {waited:.1f} s after the broker was started")
