"""Our /metrics expositions pass ``promtool check metrics`` (STYLE.md: "Metrics like Prometheus'
own"), both rendered from populated registries and scraped from the real processes.

promtool comes from Debian's ``prometheus`` package (``make tools``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from connectors.metrics import ConnectorMetrics
from connectors.record import FrameRecorder
from deploy.kafka.broker import free_port
from signals.detector import MarketDetector
from streams.metrics import PipelineMetrics
from streams.topics import ensure_topics
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.test_bybit_markets import ccxt_markets, raw_row
from tests.promtool import check_metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
NS = 1_000_000_000

# Exposed family name -> type, as a scraper sees them (prometheus_client adds ``_total`` to
# counters). A family added to a metrics module must be added here and populated below.
PIPELINE_FAMILIES = {
    "firesale_cosell_score": "gauge",
    "firesale_cosell_active": "gauge",
    "firesale_correlation_avg": "gauge",
    "firesale_absorption_ratio": "gauge",
    "firesale_turbulence": "gauge",
    "firesale_liquidation_notional_usd_total": "counter",
    "firesale_funding_annualized_ratio": "gauge",
    "firesale_late_ticks_total": "counter",
    "firesale_signal_events_total": "counter",
    "firesale_last_signal_timestamp_seconds": "gauge",
    "firesale_bar_signal_lag_seconds": "histogram",
    "firesale_bars_total": "counter",
    "firesale_event_time_jumps_total": "counter",
    "firesale_tick_signal_latency_seconds": "histogram",
    "firesale_side_input_forced_total": "counter",
    "firesale_consumer_lag_records": "gauge",
    "firesale_event_time_lag_seconds": "gauge",
    "firesale_recovery_replayed_records_total": "counter",
    "firesale_liquidation_cascade_active": "gauge",
    "firesale_early_ticks_total": "counter",
    "firesale_funding_extreme_active": "gauge",
}
CONNECTOR_FAMILIES = {
    "firesale_connector_events_total": "counter",
    "firesale_connector_filtered_total": "counter",
    "firesale_connector_deadletters_total": "counter",
    "firesale_connector_connection_up": "gauge",
    "firesale_connector_reconnects_total": "counter",
    "firesale_connector_gaps_total": "counter",
    "firesale_connector_last_message_timestamp_seconds": "gauge",
    "firesale_producer_messages_total": "counter",
    "firesale_producer_maybe_delivered_total": "counter",
    "firesale_producer_dropped_total": "counter",
    "firesale_producer_buffer_messages": "gauge",
    "firesale_producer_latency_seconds": "histogram",
}


def _families(text: str) -> dict[str, str]:
    """``# TYPE`` lines of an exposition: name -> type (``_created`` gauges left out)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            if not name.endswith("_created"):
                out[name] = kind
    return out


def _samples(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _populated_pipeline(registry: CollectorRegistry) -> PipelineMetrics:
    """Every worker family with values as the worker sets them (labels from the code paths)."""
    m = PipelineMetrics.create(registry)
    det = MarketDetector(["BTC", "ETH", "SPX"], ["crypto", "crypto", "equity"], 60)
    rng = np.random.default_rng(7)
    closes = np.array([60_000.0, 3_000.0, 5_000.0])
    for i in range(150):  # past the 120-bar window: correlations defined
        closes = closes * np.exp(rng.normal(0.0, 0.01, 3) + rng.normal(0.0, 0.01))
        signals = det.on_bar(i * 60 * NS, closes)
    m.observe_bar(signals, signals.bar_start_ns + 62 * NS, interval_s=60)
    m.liquidations.labels("bybit", "ROSE", "short").inc(899.8)
    m.funding.labels("bybit", "BTC").set(0.1095)
    m.late_ticks.labels("BTC").inc()
    m.early_ticks.labels("ETH").inc()
    m.signal_events.labels("cosell.start").inc()
    m.time_jumps.inc()
    m.tick_signal_latency.observe(0.034)
    m.side_input_forced.labels("ticks.funding.v1").inc()
    m.consumer_lag.labels("ticks.price.v1", "0").set(12)
    m.event_time_lag.labels("ticks.price.v1").set(0.8)
    m.replayed.labels("ticks.price.v1").inc(250)
    m.observe_event("liquidation.cascade.start", "BTC:long")
    m.observe_event("funding.extreme.start", "ETH")
    return m


def _populated_connector(registry: CollectorRegistry) -> ConnectorMetrics:
    """Every connector family with values as the connectors set them."""
    m = ConnectorMetrics.create(registry)
    m.ticks.labels("bybit", "liquidation").inc()
    m.ticks.labels("bybit", "price").inc(40)
    m.filtered.labels("bybit").inc(3)
    m.deadletters.labels("bybit", "bad_json").inc()
    m.connection_up.labels("bybit", "bybit-linear-0").set(1)
    m.reconnects.labels("bybit", "bybit-linear-0", "stale").inc()
    m.gaps.labels("bybit", "bybit-linear-0").inc()
    m.last_message.labels("bybit", "bybit-linear-0").set(1_762_214_400.25)
    m.produced.labels("ticks.price.v1").inc(40)
    m.produce_failures.labels("ticks.price.v1").inc()
    m.dropped.labels("ticks.price.v1").inc()
    m.buffer_size.set(5)
    m.produce_latency.observe(0.012)
    return m


def test_check_metrics_reports_what_promtool_finds() -> None:
    bad = "# HELP foo_count a count\n# TYPE foo_count counter\nfoo_count 1\n"
    assert check_metrics(bad) == [
        'foo_count counter metrics should have "_total" suffix',
        'foo_count non-histogram and non-summary metrics should not have "_count" suffix',
    ]
    assert check_metrics("garbage{") == [
        "error while linting: text format parsing error in line 1: unexpected end of input stream"
    ]


def test_prometheus_tools_run() -> None:
    for tool in ("prometheus", "promtool", "alertmanager", "amtool"):
        result = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        assert (result.stdout + result.stderr).startswith(f"{tool}, version "), result


def test_worker_metrics_pass_promtool() -> None:
    registry = CollectorRegistry()
    _populated_pipeline(registry)
    text = generate_latest(registry).decode()
    assert check_metrics(text) == []
    assert _families(text) == PIPELINE_FAMILIES, "update PIPELINE_FAMILIES and populate it"
    for name in PIPELINE_FAMILIES:
        assert f"\n# HELP {name} " in "\n" + text, name
    samples = _samples(text)
    assert samples[
        (
            "firesale_liquidation_notional_usd_total",
            (("asset", "ROSE"), ("side", "short"), ("venue", "bybit")),
        )
    ] == pytest.approx(899.8)
    assert samples[("firesale_bars_total", ())] == 1.0
    assert samples[("firesale_bar_signal_lag_seconds_count", ())] == 1.0
    assert samples[("firesale_bar_signal_lag_seconds_sum", ())] == pytest.approx(2.0)
    corr = samples[("firesale_correlation_avg", (("class_pair", "crypto-equity"),))]
    assert -1.0 <= corr <= 1.0  # False for NaN too


def test_connector_metrics_pass_promtool() -> None:
    registry = CollectorRegistry()
    _populated_connector(registry)
    text = generate_latest(registry).decode()
    assert check_metrics(text) == []
    assert _families(text) == CONNECTOR_FAMILIES, "update CONNECTOR_FAMILIES and populate it"
    for name in CONNECTOR_FAMILIES:
        assert f"\n# HELP {name} " in "\n" + text, name
    samples = _samples(text)
    assert samples[("firesale_producer_buffer_messages", ())] == 5.0
    key = (("connection", "bybit-linear-0"), ("venue", "bybit"))
    assert samples[("firesale_connector_last_message_timestamp_seconds", key)] == 1_762_214_400.25


def _scrape(port: int, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        text: str = resp.read().decode()
    return text


def test_http_endpoint_passes_promtool() -> None:
    registry = CollectorRegistry()
    _populated_pipeline(registry)
    _populated_connector(registry)
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    try:
        text = _scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert check_metrics(text) == []
    assert _families(text) == PIPELINE_FAMILIES | CONNECTOR_FAMILIES


def _wait_for(
    port: int, done: Callable[[Samples], bool], proc: subprocess.Popen[str], timeout_s: float
) -> str:
    """Scrape until ``done(samples)`` holds; the last scrape on timeout or process exit."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            text = _scrape(port, 2.0)
        except (urllib.error.URLError, ConnectionError):
            text = ""
        if text and done(_samples(text)):
            return text
        time.sleep(0.5)
    return text


def _universe(tmp_path: Path) -> dict[str, str]:
    """A universe whose asset names no other test uses, with its Bybit markets cached."""
    universe = tmp_path / "universe.toml"
    universe.write_text(
        textwrap.dedent("""
        [assets.LINTBTC]
        class = "crypto"
        symbols = { bybit = "BTCUSDT" }

        [assets.LINTROSE]
        class = "crypto"
        symbols = { bybit = "ROSEUSDT" }
        """)
    )
    cache = tmp_path / "cache"
    (cache / "markets").mkdir(parents=True)
    markets = ccxt_markets([raw_row("BTCUSDT", "BTC"), raw_row("ROSEUSDT", "ROSE")])
    (cache / "markets" / "bybit.json").write_text(json.dumps(markets, default=str))
    return {"FIRESALE_UNIVERSE": str(universe), "FIRESALE_CACHE_DIR": str(cache)}


LIQ = ("firesale_liquidation_notional_usd_total",
       (("asset", "LINTROSE"), ("side", "short"), ("venue", "bybit")))  # fmt: skip
FUNDING = ("firesale_funding_annualized_ratio", (("asset", "LINTBTC"), ("venue", "bybit")))


@pytest.mark.kafka
def test_worker_endpoint_passes_promtool(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A real ``firesale worker`` fed by ``firesale replay`` of recorded Bybit frames."""
    asyncio.run(ensure_topics(kafka_bootstrap))
    port = free_port()
    env = {
        **os.environ,
        **_universe(tmp_path),
        "FIRESALE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FIRESALE_APP_ID": f"metrics-lint-{uuid.uuid4().hex[:12]}",
        "FIRESALE_METRICS_PORT": str(port),
    }
    rec = FrameRecorder(tmp_path / "rec")
    now_ns = time.time_ns()
    # fundingRate 0.0001 per 8 h on BTCUSDT; 20,000 ROSE liquidated at 0.04499 (a short)
    rec.write("bybit-linear-0", now_ns, (FIXTURES / "bybit_tickers.json").read_text())
    rec.write("bybit-linear-0", now_ns + 1, (FIXTURES / "bybit_allLiquidation.json").read_text())
    rec.close()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        replay = subprocess.run(
            [sys.executable, "-m", "streams", "replay", "--venues", "bybit", *map(str, rec.files)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "replayed 2 frames" in replay.stdout
        text = _wait_for(port, lambda s: LIQ in s and FUNDING in s, worker, 90)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert text, log.read_text()[-3000:]
    assert check_metrics(text) == []
    assert _families(text) == PIPELINE_FAMILIES
    samples = _samples(text)
    assert samples.get(LIQ) == pytest.approx(20_000 * 0.04499), log.read_text()[-3000:]
    assert samples[FUNDING] == pytest.approx(0.0001 * 3 * 365)  # 8 h interval: 3 a day
    assert code == 0, log.read_text()[-3000:]


@pytest.mark.kafka
async def test_connect_endpoint_passes_promtool(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A real ``firesale connect`` on a fake Bybit, scraped after it forwarded a liquidation."""
    await ensure_topics(kafka_bootstrap)
    fake = FakeBybit()
    url = await fake.start()
    port = free_port()
    env = {
        **os.environ,
        **_universe(tmp_path),
        "FIRESALE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FIRESALE_BYBIT_WS_URL": url,
        "FIRESALE_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "connect", "--venues", "bybit", "--no-backfill"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    produced = ("firesale_producer_messages_total", (("topic", "ticks.liquidation.v1"),))
    try:
        await fake.wait_subscribed({"allLiquidation.ROSEUSDT", "tickers.BTCUSDT"}, 60)
        await fake.broadcast((FIXTURES / "bybit_allLiquidation.json").read_text())
        text = await asyncio.to_thread(_wait_for, port, lambda s: produced in s, proc, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        await fake.stop()
    assert text, out
    assert check_metrics(text) == []
    assert _families(text) == CONNECTOR_FAMILIES
    samples = _samples(text)
    assert samples[produced] == 1.0
    events = ("firesale_connector_events_total", (("kind", "liquidation"), ("venue", "bybit")))
    assert samples[events] == 1.0
    up = (
        "firesale_connector_connection_up",
        (("connection", "bybit-linear-0"), ("venue", "bybit")),
    )
    assert samples[up] == 1.0
    assert proc.returncode == 0, out
