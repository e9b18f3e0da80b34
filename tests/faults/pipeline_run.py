"""A broker, the seeded fire-sale scenario and stream-worker processes: one run of a fault case.

Every pipeline fault case compares what a consumer sees — signal events deduplicated by id,
emit time left out — with an undisturbed run of the same input, up to the last bar the
watermark closes (later bars close on the processing-time idle timeout, which differs between
runs by design).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from connectors.metrics import ConnectorMetrics
from connectors.scenario import ScenarioParams, run_scenario
from connectors.sink import KafkaSink
from deploy.kafka import broker
from streams.config import load_universe
from streams.events import SignalEvent, decode
from streams.topics import ensure_topics
from tests.connectors.kafka_tail import Tail

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
SEED = 3
LAST_TICK_NS = T0 + int(PARAMS.duration_s * 1e9)
# Start of the last bar whose end the watermark (last tick − 2 s grace) passes.
CUTOFF_NS = (LAST_TICK_NS - 2 * 10**9) // BAR_NS * BAR_NS - BAR_NS
N_BARS = (CUTOFF_NS - T0) // BAR_NS + 1
N_ASSETS = len(load_universe(None).assets)

Body = tuple[str, str, int, Any]


@dataclass
class Run:
    """A broker (its own, on a fixed port so it can be restarted) and the workers on it."""

    home: Path
    port: int
    bootstrap: str
    logs: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    async def create(cls, tmp_path: Path, name: str) -> Run:
        home = tmp_path / name
        port = broker.free_port()
        info = broker.start(home, port, detach=False)
        await ensure_topics(info.bootstrap)
        return cls(home, port, info.bootstrap)

    def sink(self) -> KafkaSink:
        """The connectors' Kafka sink (default settings: what `firesale connect` uses)."""
        return KafkaSink(self.bootstrap, ConnectorMetrics.create(CollectorRegistry()))

    async def produce(self, speed: float | None = None, stop: asyncio.Event | None = None) -> None:
        """The whole scenario through the connectors' sink (``speed`` × event time, or at once)."""
        sink = self.sink()
        await sink.start()
        try:
            run = await run_scenario(
                sink,
                PARAMS,
                load_universe(None).assets,
                T0,
                speed,
                stop or asyncio.Event(),
                seed=SEED,
            )
            await sink.flush(timeout_s=180)
        finally:
            await sink.stop()
        assert run.completed
        assert (sink.dropped, sink.maybe_delivered) == (0, 0), "the sink lost messages"

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "FIRESALE_KAFKA_BOOTSTRAP": self.bootstrap,
            "FIRESALE_APP_ID": "faults",
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

    def stop_broker(self) -> None:
        broker.stop(self.home)

    def start_broker(self) -> None:
        broker.start(self.home, self.port, detach=False)

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in self.logs)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop(self.home)

    async def collect(
        self, on_progress: Callable[[int], None] = lambda n: None, timeout_s: float = 400
    ) -> dict[str, list[SignalEvent]]:
        """Signal events until the cut-off bar's correlation record is out (then 3 s more).

        ``on_progress`` gets the number of ``bars.v1`` records so far (the tick stage's
        progress); the topics are read from offset 0.
        """
        tail = Tail(self.bootstrap, [*SIGNAL_TOPICS, "bars.v1"])
        await tail.mark()
        done_at: list[float] = []

        def until(out: dict[str, list[Any]]) -> bool:
            on_progress(len(out["bars.v1"]))
            bars = [decode(SignalEvent, r.value).ts_event_ns for r in out[SIGNAL_TOPICS[0]]]
            if not done_at and bars and max(bars) >= CUTOFF_NS:
                done_at.append(time.monotonic())
            return bool(done_at) and time.monotonic() - done_at[0] > 3  # stragglers

        got = await tail.collect(until, timeout_s=timeout_s)
        assert done_at, f"bar {CUTOFF_NS} never processed\n{self.log_text()}"
        return {t: [decode(SignalEvent, r.value) for r in got[t]] for t in SIGNAL_TOPICS}


def dedup(events: list[SignalEvent]) -> list[Body]:
    """What a consumer dropping duplicates by id sees (emit time left out), up to the cut-off.

    A duplicate must equal its first copy: same id, same content.
    """
    seen: dict[str, SignalEvent] = {}
    order: list[str] = []
    for e in events:
        if e.id in seen:
            assert body(seen[e.id]) == body(e), f"duplicate {e.id} differs"
            continue
        seen[e.id] = e
        order.append(e.id)
    return [body(seen[i]) for i in order if seen[i].ts_event_ns <= CUTOFF_NS]


def body(e: SignalEvent) -> Body:
    return (e.id, e.type, e.ts_event_ns, e.data)


def duplicates(events: list[SignalEvent]) -> int:
    return len(events) - len({e.id for e in events})


def differences(got: list[Body], expected: list[Body]) -> str:
    """A short account of how two signal sequences differ (for assertion messages)."""
    g = {b[0]: b for b in got}
    e = {b[0]: b for b in expected}
    missing = [i for i in e if i not in g]
    extra = [i for i in g if i not in e]
    changed = [i for i in e if i in g and g[i] != e[i]]
    return (
        f"{len(missing)} missing (first {missing[:3]}), {len(extra)} extra (first {extra[:3]}), "
        f"{len(changed)} changed (first {changed[:3]}); order equal: "
        f"{[b[0] for b in got if b[0] in e] == [b[0] for b in expected if b[0] in g]}"
    )
