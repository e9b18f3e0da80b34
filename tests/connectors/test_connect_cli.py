"""`firesale connect` as a user runs it: a real process, cached ccxt markets, a fake venue,
the real broker; SIGTERM stops it cleanly and the recording replays through `firesale replay`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.kafka.broker import free_port
from streams.events import Liquidation, PriceTick, decode
from streams.topics import ensure_topics
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.fake_rest import FakeRest, rows
from tests.connectors.kafka_tail import Tail
from tests.connectors.rose_universe import write_rose_universe

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"


def _env(tmp_path: Path, bootstrap: str, ws_url: str, rest_url: str) -> dict[str, str]:
    universe, cache = write_rose_universe(tmp_path)
    return {
        **os.environ,
        "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRESALE_UNIVERSE": str(universe),
        "FIRESALE_CACHE_DIR": str(cache),
        "FIRESALE_BYBIT_WS_URL": ws_url,
        "FIRESALE_BYBIT_REST_URL": rest_url,
        "FIRESALE_BAR_INTERVAL_S": "60",
        "FIRESALE_CORRELATION_WINDOW_BARS": "5",
        "FIRESALE_METRICS_PORT": str(free_port()),
    }


async def test_connect_process_streams_records_and_stops_cleanly(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_bootstrap)
    fake = FakeBybit()
    url = await fake.start()
    # REST candles for the warm start: the last 8 closed minutes (5 are asked for)
    now_min = time.time_ns() // 60_000_000_000 * 60_000
    rest = FakeRest({"ROSEUSDT": rows(now_min - 8 * 60_000, [0.05 + k / 1000 for k in range(9)])})
    rest_url = await rest.start()
    env = _env(tmp_path, kafka_bootstrap, url, rest_url)
    tail = Tail(kafka_bootstrap, ["ticks.liquidation.v1", "ticks.price.v1"])
    await tail.mark()
    record_dir = tmp_path / "rec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "connect", "--venues", "bybit", "--record",
         str(record_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        await fake.wait_subscribed({"allLiquidation.ROSEUSDT", "tickers.ROSEUSDT"}, 60)
        await fake.broadcast((FIXTURES / "bybit_allLiquidation.json").read_text())
        got = await tail.collect(
            lambda out: len(out["ticks.liquidation.v1"]) >= 1 and len(out["ticks.price.v1"]) >= 5
        )
        metrics = await asyncio.to_thread(_scrape, int(env["FIRESALE_METRICS_PORT"]))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        await fake.stop()
        await rest.stop()
    assert proc.returncode == 0, out
    warm = [decode(PriceTick, r.value) for r in got["ticks.price.v1"]]
    warm = [t for t in warm if t.symbol == "ROSEUSDT" and t.kind == "trade"]
    # 5 closed candles before start-up, each as a trade tick 1 ms before the candle's close
    assert len(warm) == 5
    assert [t.ts_event_ns % 60_000_000_000 for t in warm] == [59_999_000_000] * 5
    assert all(0.05 <= t.price <= 0.059 for t in warm)
    assert "connecting to bybit: 1 instruments" in out
    (rec,) = got["ticks.liquidation.v1"]
    liq = decode(Liquidation, rec.value)
    assert (liq.symbol, liq.liquidated_side, liq.qty_base, liq.price) == (
        "ROSEUSDT", "short", 20_000.0, 0.04499,
    )  # fmt: skip
    assert 'firesale_connector_events_total{kind="liquidation",venue="bybit"} 1.0' in metrics
    assert 'firesale_connector_connection_up{connection="bybit-linear-0",venue="bybit"} 1.0' in (
        metrics
    )
    assert 'firesale_producer_messages_total{topic="ticks.liquidation.v1"} 1.0' in metrics
    files = sorted(record_dir.glob("frames-*.jsonl.gz"))
    assert files, "connect --record wrote nothing"

    await tail.mark()
    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams", "replay", "--venues", "bybit", *map(str, files)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr
    again = await tail.collect(lambda out: len(out["ticks.liquidation.v1"]) >= 1)
    replayed = decode(Liquidation, again["ticks.liquidation.v1"][0].value)
    assert replayed == liq  # same frame, same receive time: the identical event


def _scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def test_connect_with_unknown_venue_names_the_option(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "connect", "--venues", "kraken"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown venue 'kraken'" in result.stderr
