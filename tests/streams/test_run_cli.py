"""`firesale run` as a user runs it: embedded Kafka, topics, connectors; clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.record import FrameRecorder
from deploy.kafka import broker
from streams.events import Liquidation, SignalEvent, decode
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.kafka_tail import Tail
from tests.connectors.rose_universe import write_rose_universe
from tests.deploy.test_metrics_lint import FUNDING, LIQ
from tests.deploy.test_metrics_lint import _samples as metric_samples
from tests.deploy.test_metrics_lint import _universe as lint_universe
from tests.deploy.test_metrics_lint import _wait_for as wait_for_metrics

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "run"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


async def _wait_for(log: Path, text: str, proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"never saw {text!r}; output:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


def _stop(proc: subprocess.Popen[str], home: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert broker.read_pid_file(home) is None  # the embedded broker was stopped and forgotten


async def test_run_offline_keeps_kafka_up_says_why_and_stops_cleanly(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{broker.free_port()}"  # nothing listens: REST unreachable
    env = {
        **os.environ,
        "FIRESALE_KAFKA_HOME": str(tmp_path / "kafka"),
        "FIRESALE_KAFKA_PORT": "0",
        "FIRESALE_CACHE_DIR": str(tmp_path / "cache"),
        "FIRESALE_METRICS_PORT": "0",
        "FIRESALE_BINANCE_REST_URL": closed,
        "FIRESALE_BYBIT_REST_URL": closed,
        "FIRESALE_OKX_REST_URL": closed,
    }
    env.pop("FIRESALE_KAFKA_BOOTSTRAP", None)
    log = tmp_path / "run.log"
    proc = _start(env, log)
    try:
        await _wait_for(log, "no exchange could be reached", proc, 120)
    finally:
        _stop(proc, tmp_path / "kafka")
    out = log.read_text()
    assert "topic ticks.liquidation.v1: created" in out
    assert "universe: 7 assets in 3 classes (crypto, equity, metal)" in out
    for venue in ("binance", "bybit", "okx"):
        assert f"{venue}: left out — {venue}: cannot load markets" in out
    assert "embedded Kafka stopped" in out


async def test_run_streams_a_reachable_venue_onto_the_embedded_broker(tmp_path: Path) -> None:
    fake = FakeBybit()
    ws_url = await fake.start()
    universe, cache = write_rose_universe(tmp_path)
    port = broker.free_port()
    env = {
        **os.environ,
        "FIRESALE_KAFKA_HOME": str(tmp_path / "kafka"),
        "FIRESALE_KAFKA_PORT": str(port),
        "FIRESALE_CACHE_DIR": str(cache),
        "FIRESALE_UNIVERSE": str(universe),
        "FIRESALE_VENUES": "bybit",
        "FIRESALE_BYBIT_WS_URL": ws_url,
        "FIRESALE_BYBIT_REST_URL": f"http://127.0.0.1:{broker.free_port()}",
        "FIRESALE_METRICS_PORT": "0",
    }
    env.pop("FIRESALE_KAFKA_BOOTSTRAP", None)
    log = tmp_path / "run.log"
    proc = _start(env, log)
    try:
        await _wait_for(log, "streaming bybit (1 instruments)", proc, 120)
        tail = Tail(f"127.0.0.1:{port}", ["ticks.liquidation.v1"])
        await tail.mark()
        await fake.wait_subscribed({"allLiquidation.ROSEUSDT"}, 60)
        await fake.broadcast((FIXTURES / "bybit_allLiquidation_derived_buy.json").read_text())
        got = await tail.collect(lambda out: bool(out["ticks.liquidation.v1"]))
    finally:
        _stop(proc, tmp_path / "kafka")
        await fake.stop()
    (rec,) = got["ticks.liquidation.v1"]
    liq = decode(Liquidation, rec.value)
    assert (liq.venue, liq.symbol, liq.liquidated_side, liq.completeness) == (
        "bybit", "ROSEUSDT", "long", "complete",
    )  # fmt: skip
    assert liq.notional_usd == pytest.approx(20_000 * 0.04499, rel=1e-12)


async def test_run_scenario_produces_signals_offline_and_stops_everything(tmp_path: Path) -> None:
    port = broker.free_port()
    env = {
        **os.environ,
        "FIRESALE_KAFKA_HOME": str(tmp_path / "kafka"),
        "FIRESALE_KAFKA_PORT": str(port),
        "FIRESALE_BAR_INTERVAL_S": "300",
        "FIRESALE_METRICS_PORT": "0",
        "FIRESALE_APP_ID": "firesale-run-test",
    }
    env.pop("FIRESALE_KAFKA_BOOTSTRAP", None)
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "run", "--scenario", "fire-sale"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        await _wait_for(log, "stream worker started", proc, 120)
        tail = Tail(f"127.0.0.1:{port}", ["signals.correlation.v1"])
        await tail.mark()
        got = await tail.collect(lambda out: len(out["signals.correlation.v1"]) >= 20, 240)
    finally:
        _stop(proc, tmp_path / "kafka-scenario")  # a scenario gets a broker of its own
    out = log.read_text()
    assert f"starting the embedded Kafka in {tmp_path / 'kafka-scenario'}" in out
    assert "scenario phase fire_sale:" in out
    assert "stream worker stopped (exit 0)" in out
    records = [decode(SignalEvent, r.value) for r in got["signals.correlation.v1"]]
    assert len(records) >= 20, out[-3000:]
    starts = [r.ts_event_ns for r in records]
    assert starts == sorted(starts)
    assert {r.type for r in records} == {"correlation.bar"}
    assert all(set(r.data["returns"]) == {"BTC", "ETH", "SOL", "XRP", "GOLD", "SPX", "NDX"}
               for r in records)  # fmt: skip


def test_run_replay_feeds_recorded_frames_through_the_worker(tmp_path: Path) -> None:
    """`firesale run --replay FILE`: recorded Bybit frames → embedded Kafka → the worker."""
    port, metrics_port = broker.free_port(), broker.free_port()
    env = {
        **os.environ,
        **lint_universe(tmp_path),
        "FIRESALE_KAFKA_HOME": str(tmp_path / "kafka"),
        "FIRESALE_KAFKA_PORT": str(port),
        "FIRESALE_VENUES": "bybit",
        "FIRESALE_METRICS_PORT": str(metrics_port),  # the worker serves metrics_port + 1
    }
    env.pop("FIRESALE_KAFKA_BOOTSTRAP", None)
    rec = FrameRecorder(tmp_path / "rec")
    now_ns = time.time_ns()
    # fundingRate 0.0001 per 8 h on BTCUSDT; 20,000 ROSE liquidated at 0.04499 (a short)
    rec.write("bybit-linear-0", now_ns, (FIXTURES / "bybit_tickers.json").read_text())
    rec.write("bybit-linear-0", now_ns + 1, (FIXTURES / "bybit_allLiquidation.json").read_text())
    rec.close()
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "run", *(f"--replay={f}" for f in rec.files)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        text = wait_for_metrics(metrics_port + 1, lambda s: LIQ in s and FUNDING in s, proc, 120)
    finally:
        _stop(proc, tmp_path / "kafka")
    out = log.read_text()
    assert text, out[-3000:]
    assert "replayed 2 frames from 1 recording(s)" in out
    assert "stream worker stopped (exit 0)" in out
    samples = metric_samples(text)
    assert samples[LIQ] == pytest.approx(20_000 * 0.04499)
    assert samples[FUNDING] == pytest.approx(0.0001 * 3 * 365)


def test_run_refuses_two_sources() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streams", "run", "--scenario", "calm", "--replay", "x.jsonl.gz"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--scenario and --replay are two sources: give one" in proc.stdout + proc.stderr
