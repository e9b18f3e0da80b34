"""Recovery and scale-out on the real broker: SIGKILLed workers change nothing consumers see.

The same seeded fire-sale scenario is produced, in full, into three fresh brokers (each its
own ``bars.v1``, which a worker both writes and reads). Then:

- reference: one worker processes it uninterrupted;
- kill: one worker is SIGKILLed mid-stream and a new one started with the same group;
- scale: two workers share the partitions, one is SIGKILLed and the survivor takes over.

After dropping duplicates by event id, every signal topic must hold exactly the reference's
sequence — same ids in the same order, same payloads (bar the emit time) — up to the last bar
the watermark closes (later bars close on the processing-time idle timeout, which differs
between runs by design).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from connectors.metrics import ConnectorMetrics
from connectors.scenario import ScenarioParams, run_scenario
from connectors.sink import KafkaSink
from deploy.kafka import broker
from streams.config import load_universe
from streams.events import SignalEvent, decode
from streams.topics import ensure_topics
from tests.connectors.kafka_tail import Tail

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

T0 = 1_762_214_400_000_000_000  # 2025-11-04T00:00:00Z
BAR_S = 300
BAR_NS = BAR_S * 10**9
SIGNAL_TOPICS = (
    "signals.correlation.v1",
    "signals.cosell.v1",
    "signals.liquidation.v1",
    "signals.funding.v1",
)
PARAMS = ScenarioParams.preset("fire-sale", mark_interval_s=60, trade_rate_scale=0.01)


@dataclass
class Run:
    """A broker with the scenario in it and the worker processes on it."""

    home: Path
    bootstrap: str
    logs: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "FIRESALE_KAFKA_BOOTSTRAP": self.bootstrap,
            "FIRESALE_APP_ID": "recovery",
            "FIRESALE_BAR_INTERVAL_S": str(BAR_S),
            "FIRESALE_METRICS_PORT": "0",
            "FIRESALE_CONSUMER_SESSION_TIMEOUT_S": "6",
            "FIRESALE_CHECKPOINT_INTERVAL_S": "0.5",
            "FIRESALE_LOG_LEVEL": "INFO",
        }
        log = self.home.parent / f"{self.home.name}-worker{len(self.logs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.logs.append(log)
        self.procs.append(proc)
        return proc

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in self.logs)


async def _prepare(tmp_path: Path, name: str) -> tuple[Run, int]:
    """A broker with the topics and the whole scenario; returns the last tick's event time."""
    home = tmp_path / name
    info = broker.start(home, None, detach=False)
    await ensure_topics(info.bootstrap)
    sink = KafkaSink(info.bootstrap, ConnectorMetrics.create(CollectorRegistry()))
    await sink.start()
    try:
        run = await run_scenario(
            sink, PARAMS, load_universe(None).assets, T0, None, asyncio.Event(), seed=3
        )
        await sink.flush()
    finally:
        await sink.stop()
    assert run.completed
    return Run(home, info.bootstrap), T0 + int(PARAMS.duration_s * 1e9)


def _cutoff(last_tick_ns: int) -> int:
    """Start of the last bar whose end the watermark (last tick − 2 s grace) passes."""
    return (last_tick_ns - 2 * 10**9) // BAR_NS * BAR_NS - BAR_NS


async def _collect(
    run: Run,
    cutoff_ns: int,
    on_progress: Callable[[int], None],
    timeout_s: float = 400,
) -> dict[str, list[SignalEvent]]:
    """Signal events until the cut-off bar's correlation record is out (then a little more).

    ``on_progress`` gets the number of ``bars.v1`` records so far (the tick stage's progress).
    """
    tail = Tail(run.bootstrap, [*SIGNAL_TOPICS, "bars.v1"])
    await tail.mark()  # topics are empty: this is offset 0
    done_at: list[float] = []

    def until(out: dict[str, list[Any]]) -> bool:
        on_progress(len(out["bars.v1"]))
        bars = [decode(SignalEvent, r.value).ts_event_ns for r in out["signals.correlation.v1"]]
        if not done_at and bars and max(bars) >= cutoff_ns:
            done_at.append(time.monotonic())
        return bool(done_at) and time.monotonic() - done_at[0] > 3  # stragglers of that bar

    got = await tail.collect(until, timeout_s=timeout_s)
    assert done_at, f"bar {cutoff_ns} never processed\n{run.log_text()}"
    return {t: [decode(SignalEvent, r.value) for r in got[t]] for t in SIGNAL_TOPICS}


def _stop(run: Run) -> None:
    for proc in run.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in run.procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    broker.stop(run.home)


def _dedup(events: list[SignalEvent], cutoff_ns: int) -> list[tuple[str, str, int, Any]]:
    """What a consumer dropping duplicates by id sees (emit time left out), up to the cut-off."""
    seen: dict[str, SignalEvent] = {}
    order: list[str] = []
    for e in events:
        if e.id in seen:
            assert _body(seen[e.id]) == _body(e), f"duplicate {e.id} differs"
            continue
        seen[e.id] = e
        order.append(e.id)
    return [_body(seen[i]) for i in order if seen[i].ts_event_ns <= cutoff_ns]


def _body(e: SignalEvent) -> tuple[str, str, int, Any]:
    return (e.id, e.type, e.ts_event_ns, e.data)


async def test_sigkill_and_scale_out_publish_exactly_the_uninterrupted_signals(
    tmp_path: Path,
) -> None:
    # reference: one worker, uninterrupted
    ref_run, last_tick = await _prepare(tmp_path, "reference")
    cutoff = _cutoff(last_tick)
    try:
        ref_run.start_worker()
        ref = await _collect(ref_run, cutoff, lambda n: None)
    finally:
        _stop(ref_run)
    n_bars = len({e.id for e in ref["signals.correlation.v1"] if e.ts_event_ns <= cutoff})
    assert n_bars == (cutoff - T0) // BAR_NS + 1  # every bar up to the cut-off, once
    types = {e.type for es in ref.values() for e in es}
    assert {"cosell.start", "cosell.end", "liquidation.cascade.start"} <= types, types
    expected = {t: _dedup(ref[t], cutoff) for t in SIGNAL_TOPICS}

    n_asset_bars = n_bars * len(load_universe(None).assets)

    # kill: SIGKILL the only worker at 40 % of the bars, start a new one in its place
    kill_run, _ = await _prepare(tmp_path, "kill")
    try:
        first = kill_run.start_worker()
        killed: list[int] = []

        def kill_at(n: int) -> None:
            if not killed and n >= 0.4 * n_asset_bars:
                first.send_signal(signal.SIGKILL)
                killed.append(n)
                kill_run.start_worker()

        got = await _collect(kill_run, cutoff, kill_at)
        assert killed, "the worker was never killed"
        assert first.wait(10) == -signal.SIGKILL
    finally:
        _stop(kill_run)
    replacement = kill_run.logs[1].read_text()
    assert "market stage rebuilt" in replacement, kill_run.log_text()
    assert re.search(r"bar builder restored \(checkpoint\)", replacement), kill_run.log_text()
    for t in SIGNAL_TOPICS:
        assert _dedup(got[t], cutoff) == expected[t], t
    dupes = len(got["signals.correlation.v1"]) - len({e.id for e in got["signals.correlation.v1"]})

    # scale: two workers share the partitions; the market stage's owner is SIGKILLed
    scale_run, _ = await _prepare(tmp_path, "scale")
    try:
        workers = [scale_run.start_worker(), scale_run.start_worker()]
        victim: list[int] = []

        def kill_owner(n: int) -> None:
            if victim or n < 0.4 * n_asset_bars:
                return
            for i, log in enumerate(scale_run.logs):
                if "market stage rebuilt" in log.read_text():
                    workers[i].send_signal(signal.SIGKILL)
                    victim.append(i)
                    return

        got = await _collect(scale_run, cutoff, kill_owner)
        assert victim, scale_run.log_text()
    finally:
        _stop(scale_run)
    survivor = scale_run.logs[1 - victim[0]].read_text()
    before = scale_run.logs[victim[0]].read_text()
    # both held price partitions before the kill; the survivor took the market stage over
    assert "ticks.price.v1" in before
    assert "ticks.price.v1" in survivor
    assert "market stage rebuilt" in survivor, scale_run.log_text()
    for t in SIGNAL_TOPICS:
        assert _dedup(got[t], cutoff) == expected[t], t
    print(f"\nbars {n_bars}, killed after {killed[0]} asset bars; duplicate records: {dupes}")
