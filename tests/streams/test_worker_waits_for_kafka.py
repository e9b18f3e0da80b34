"""A worker started before its broker waits, says so, and starts once Kafka appears."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from deploy.kafka import broker
from streams.events import BarEvent, PriceTick, decode, encode
from tests.connectors.kafka_tail import Tail

pytestmark = pytest.mark.kafka


async def _until(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.2)


async def test_worker_started_before_kafka_waits_then_processes(tmp_path: Path) -> None:
    port = broker.free_port()
    bootstrap = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRESALE_APP_ID": f"wait-{uuid.uuid4().hex[:8]}",
        "FIRESALE_BAR_INTERVAL_S": "1",
        "FIRESALE_BAR_GRACE_S": "0",
        "FIRESALE_METRICS_PORT": "0",
        "FIRESALE_CACHE_DIR": str(tmp_path / "cache"),
    }
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    home = tmp_path / "kafka"
    try:
        # no broker yet: clear lines, backoff growing, the process stays up
        await _until(log, "unreachable (attempt 2", proc, 60)
        text = log.read_text()
        assert f"Kafka at {bootstrap} unreachable (attempt 1" in text
        assert "retrying in 1 s" in text
        assert "retrying in 2 s" in text
        broker.start(home, port, detach=False)
        await _until(log, f"worker on {bootstrap}", proc, 120)
        assert "topic bars.v1: created" in log.read_text()
        # and it works: two ticks of BTC's primary source close a 1 s bar
        tail = Tail(bootstrap, ["bars.v1"])
        await tail.mark()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            base = {"venue": "binance", "symbol": "BTCUSDT", "asset": "BTC",
                    "asset_class": "crypto", "kind": "mark"}  # fmt: skip
            t0 = time.time_ns() // 10**9 * 10**9
            for i, price in enumerate((100.0, 101.0)):
                ts = t0 + i * 10**9 + 500_000_000
                tick = PriceTick(ts_event_ns=ts, ts_recv_ns=ts, price=price, **base)  # type: ignore[arg-type]
                await producer.send_and_wait("ticks.price.v1", encode(tick), key=b"binance:BTCUSDT")
        finally:
            await producer.stop()
        got = await tail.collect(lambda out: bool(out["bars.v1"]), timeout_s=90)
        bars = [decode(BarEvent, r.value) for r in got["bars.v1"]]
        assert [(b.asset, b.bar_start_ns, b.close, b.stale) for b in bars][:1] == [
            ("BTC", t0, 100.0, False)
        ], log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if home.exists():
            broker.stop(home)
    assert code == 0, log.read_text()[-3000:]
