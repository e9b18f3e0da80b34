"""Pipeline benchmark: price ticks → ``firesale worker`` → ``bars.v1`` → ``signals.correlation.v1``.

Run ``.venv/bin/python -m bench.pipeline [--quick] [--ticks N] [--repeats R] [--latency-s S]
[--profile]``. An embedded Kafka broker is started in a temporary directory on a free port and
stopped at the end; the topics are created with :func:`streams.topics.ensure_topics`. Workers are
real ``python -m streams worker`` processes configured only through their environment (bootstrap,
a fresh ``FIRESALE_APP_ID`` per run, bar interval and grace, metrics off, log level WARNING).

**Throughput.** N price ticks of the universe's primary sources (the first venue and symbol
listed per asset in ``streams/universe.toml``: the only ticks the bar builder takes), one tick per
asset per second of event time from 2025-11-04T00:00Z, random-walk prices, 60 s bars. They close
exactly ``n_bars`` bars of 60 ticks per asset (a few trailing seconds only open the next one).

1. ``ticks.price.v1`` and ``bars.v1`` are truncated (DeleteRecords to the high watermark), so a
   fresh consumer group, which starts at the earliest offset, reads only this run's ticks.
2. **pipeline**: the worker(s) start on the empty topics; once their group is Stable with every
   partition of ``ticks.price.v1`` and ``bars.v1`` assigned, they are paused (SIGSTOP), the N
   ticks are produced (acks=all, idempotent, lz4), and the workers resumed (SIGCONT). Timed from
   the resume to the arrival here of the last expected bar (``bars.v1``) and correlation record
   (``signals.correlation.v1``): neither the worker's start-up nor the producer, which would
   take one of the two cores, is in the time. The pause stays under faust's 60 s session
   timeout, and the group's member ids are checked unchanged afterwards (no rebalance). Every
   bar is checked against the ticks (close, tick count, not stale), and every crypto return of
   the correlation records against the closes; differences are printed as PROBLEM lines.
3. **baseline**: once the workers have stopped, a raw ``AIOKafkaConsumer`` (fresh group,
   earliest) reads and decodes (``decode(PriceTick, value)``) the same N records, timed from its
   partition assignment to the last record.
4. The same with two worker processes sharing one app id (``ticks.price.v1`` has 3 partitions,
   ``bars.v1`` one: the worker holding it also runs the market stage).

**Latency.** One worker with 1 s bars and a 0.2 s grace, started on empty topics and ready as
above; ticks are produced in real time (every asset at ``--rate-hz`` instants per second, event
time = wall clock at the send) for ``--latency-s`` seconds. Per correlation record: *closing
tick → signal* = arrival here − send time of the first tick with event time ≥ bar end + grace;
*bar end → signal* = arrival − bar end − grace. The first 3 bars (start-up, the assembler's wait
for its first cross-section) are left out. **Baseline**: the raw round trip on the same broker,
same producer settings and cadence (send time in the payload), no worker running.

Wall times are ``time.perf_counter`` (throughput) and ``time.time_ns`` (latency, as the payloads
carry wall-clock times); CPU seconds come from ``/proc/<pid>/stat`` for the workers and the
broker, and ``time.process_time`` for this process (the raw consumer). ``--profile`` runs one
more 1-worker pass with the worker under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import os
import platform
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.kafka import broker
from streams.config import Universe, load_universe
from streams.events import AssetClassName, BarEvent, PriceTick, SignalEvent, decode, encode
from streams.topics import ensure_topics

NS = 1_000_000_000
T0_NS = 1_762_214_400 * NS
"""2025-11-04T00:00:00Z: a multiple of every bar interval up to 300 s."""
PRICE_TOPIC, BARS_TOPIC, CORR_TOPIC = "ticks.price.v1", "bars.v1", "signals.correlation.v1"
THROUGHPUT_INTERVAL_S, THROUGHPUT_GRACE_S = 60, 2.0
LATENCY_INTERVAL_S, LATENCY_GRACE_S, SKIP_BARS = 1, 0.2, 3
MAX_PAUSE_S = 40.0
"""Longest SIGSTOP of a worker: faust's ``broker_session_timeout`` is 60 s."""
SETTLE_S = 1.0
"""Wait after the group is Stable, so faust's on-assignment work (offset reset) is done."""
START_PRICES = {"BTC": 112_000.0, "ETH": 4_100.0, "SOL": 190.0, "XRP": 2.6, "GOLD": 4_000.0}
START_PRICES |= {"SPX": 660.0, "NDX": 600.0}
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The pipeline did not deliver what its input implies (the message says what it saw)."""


@dataclass(frozen=True, slots=True)
class Source:
    """An asset's primary price source: the first venue and symbol listed for it."""

    asset: str
    asset_class: AssetClassName
    venue: str
    symbol: str

    @property
    def key(self) -> bytes:
        """The Kafka key of its ticks, ``venue:symbol``."""
        return f"{self.venue}:{self.symbol}".encode()

    def tick(self, ts_event_ns: int, price: float, recv_delay_ns: int = 0) -> bytes:
        """An encoded mark-price tick."""
        return encode(
            PriceTick(
                venue=self.venue,
                symbol=self.symbol,
                asset=self.asset,
                asset_class=self.asset_class,
                ts_event_ns=ts_event_ns,
                ts_recv_ns=ts_event_ns + recv_delay_ns,
                price=price,
                kind="mark",
            )
        )


def primaries(universe: Universe) -> list[Source]:
    """The first venue/symbol of each asset, in universe order."""
    out = []
    for a in universe.assets:
        venue, symbol = next(iter(a.symbols.items()))
        out.append(Source(a.name, a.asset_class, venue, symbol))
    return out


@dataclass(frozen=True, slots=True)
class TickPlan:
    """The throughput input: the ticks, and the closes of the bars they must close."""

    sources: tuple[Source, ...]
    interval_s: int
    grace_s: float
    n_bars: int
    messages: list[tuple[bytes, bytes]]
    closes: dict[str, list[float]]
    """Per asset, the expected close of bars 0 .. n_bars-1."""

    @property
    def n_ticks(self) -> int:
        return len(self.messages)

    def bar_start_ns(self, k: int) -> int:
        return T0_NS + k * self.interval_s * NS

    @property
    def expected_bars(self) -> dict[tuple[str, int], float]:
        """(asset, bar_start_ns) → close, for every bar the ticks close."""
        return {
            (s.asset, self.bar_start_ns(k)): self.closes[s.asset][k]
            for s in self.sources
            for k in range(self.n_bars)
        }

    @property
    def expected_ids(self) -> list[str]:
        """Ids of the correlation records, one per closed bar."""
        return [f"correlation.bar:{self.bar_start_ns(k)}" for k in range(self.n_bars)]


def plan_ticks(
    sources: Sequence[Source],
    n_ticks: int,
    interval_s: int = THROUGHPUT_INTERVAL_S,
    grace_s: float = THROUGHPUT_GRACE_S,
    seed: int = 7,
) -> TickPlan:
    """About ``n_ticks`` ticks (at least 3 bars' worth): one per asset per second of event time.

    Asset ``j`` ticks at ``T0 + s seconds + j ms``: ``n_bars`` whole bars, then ``grace + 1`` s
    more, so the watermark (highest event time − grace) passes the end of the last whole bar.
    """
    n_bars = max(3, round(n_ticks / len(sources) / interval_s))
    rng = random.Random(seed)
    price = {s.asset: START_PRICES.get(s.asset, 100.0) for s in sources}
    closes: dict[str, list[float]] = {s.asset: [] for s in sources}
    messages = []
    for sec in range(n_bars * interval_s + math.ceil(grace_s) + 1):
        for j, s in enumerate(sources):
            price[s.asset] *= math.exp(rng.gauss(0.0, 5e-4))
            ts = T0_NS + sec * NS + j * 1_000_000
            messages.append((s.key, s.tick(ts, price[s.asset], 50_000_000)))
            if sec % interval_s == interval_s - 1 and sec < n_bars * interval_s:
                closes[s.asset].append(price[s.asset])
    return TickPlan(tuple(sources), interval_s, grace_s, n_bars, messages, closes)


# -- Kafka and process helpers ------------------------------------------------------------------


def _producer(bootstrap: str) -> Any:
    """The connectors' producer settings: acks=all, idempotent, lz4, 5 ms linger."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


@dataclass(frozen=True, slots=True)
class Produced:
    """What :func:`produce` sent: count, seconds, and the keys of each partition."""

    n: int
    wall_s: float
    keys: dict[int, list[str]]


async def produce(bootstrap: str, messages: Sequence[tuple[bytes, bytes]]) -> Produced:
    """Every ``send`` first, then one ``gather`` of the futures."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        wall = time.perf_counter()
        futures = [await producer.send(PRICE_TOPIC, value, key=key) for key, value in messages]
        metas = await asyncio.gather(*futures)
        wall = time.perf_counter() - wall
    finally:
        await producer.stop()
    keys: dict[int, set[str]] = {}
    for (key, _), meta in zip(messages, metas, strict=True):
        keys.setdefault(meta.partition, set()).add(key.decode())
    return Produced(len(messages), wall, {p: sorted(k) for p, k in sorted(keys.items())})


async def _partitions(bootstrap: str, topics: Sequence[str]) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        out = []
        for t in topics:
            for _ in range(50):
                parts = consumer.partitions_for_topic(t)
                if parts:
                    break
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            else:
                raise BenchError(f"topic {t} has no partitions: run `firesale topics create`")
            out += [TopicPartition(t, p) for p in sorted(parts)]
        return out
    finally:
        await consumer.stop()


async def truncate(bootstrap: str, topics: Sequence[str]) -> None:
    """Delete every record of ``topics``: DeleteRecords with offset -1, which "means that
    records should be truncated to the high watermark" (Kafka protocol guide,
    https://kafka.apache.org/protocol#The_Messages_DeleteRecords)."""
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.errors import KafkaError

    parts = await _partitions(bootstrap, topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for attempt in range(50):  # new topics elect their leaders a moment after creation
            try:
                await admin.delete_records({tp: RecordsToDelete(-1) for tp in parts})
                return
            except KafkaError as exc:
                if not exc.retriable or attempt == 49:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _tail(bootstrap: str, topics: Sequence[str]) -> Any:
    """A group-less consumer positioned at the current end of every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer

    parts = await _partitions(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    consumer.assign(parts)
    for tp, offset in (await consumer.end_offsets(parts)).items():
        consumer.seek(tp, offset)
    return consumer


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a live process (``/proc/<pid>/stat``, proc(5)); NaN if
    unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return math.nan
    rest = stat.rsplit(")", 1)[1].split()  # after "(comm)": rest[0] is field 3, state
    return (int(rest[11]) + int(rest[12])) * CLOCK_TICK_S  # fields 14, 15: utime, stime


class WorkerProc:
    """One ``python -m streams worker`` process, configured only through its environment."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        interval_s: int,
        grace_s: float,
        log: Path,
        profile: Path | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIRESALE_")}
        env |= {
            "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
            "FIRESALE_APP_ID": app_id,
            "FIRESALE_BAR_INTERVAL_S": str(interval_s),
            "FIRESALE_BAR_GRACE_S": str(grace_s),
            "FIRESALE_METRICS_PORT": "0",
            "FIRESALE_LOG_LEVEL": "WARNING",
        }
        prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *prof, "-m", "streams", "worker"],
                env=env,
                cwd=log.parent,  # not the caller's directory: no stray .env
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"worker exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGCONT (it may be paused), SIGTERM and wait; SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        return self.proc.returncode


Assignment = dict[str, dict[str, list[int]]]
"""Consumer group member id → topic → partitions."""


async def describe_group(bootstrap: str, group_id: str) -> tuple[str, Assignment]:
    """The group's state and its members' assignments, as the broker describes them."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    # DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members); each
    # member ends with (..., member_metadata, member_assignment).
    group = response.groups[0]
    members = {}
    for member in group[5]:
        raw = member[-1]
        assigned = ConsumerProtocolMemberAssignment.decode(raw).assignment if raw else []
        members[member[0]] = {topic: sorted(parts) for topic, parts in assigned}
    return group[2], members


async def wait_ready(
    bootstrap: str, group_id: str, workers: Sequence[WorkerProc], timeout_s: float = 90.0
) -> Assignment:
    """Wait until the group is Stable, one member per worker, owning every input partition."""
    parts = await _partitions(bootstrap, [PRICE_TOPIC, BARS_TOPIC])
    need = {(tp.topic, tp.partition) for tp in parts}
    deadline = time.monotonic() + timeout_s
    last: tuple[str, Assignment] = ("", {})
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive()
        try:
            last = await describe_group(bootstrap, group_id)
        except Exception:  # no coordinator for the group before its first join
            await asyncio.sleep(0.1)
            continue
        state, members = last
        owned = {(t, p) for m in members.values() for t, ps in m.items() for p in ps}
        if state == "Stable" and len(members) == len(workers) and owned >= need:
            return members
        await asyncio.sleep(0.05)
    raise BenchError(
        f"group {group_id} not ready in {timeout_s:.0f} s: {last}\n{workers[0].log_tail()}"
    )


# -- throughput ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PipelineRun:
    """One timed pipeline run and what it delivered."""

    n_workers: int
    n_ticks: int
    wall_s: float
    worker_cpu_s: float
    broker_cpu_s: float
    ready_s: float
    first_bar_s: float
    produced: Produced
    assignment: Assignment
    bars: dict[tuple[str, int], BarEvent]
    records: dict[str, SignalEvent]
    duplicates: int
    problems: list[str] = field(default_factory=list)

    @property
    def ticks_per_s(self) -> float:
        return self.n_ticks / self.wall_s

    def split(self) -> str:
        """Which worker holds which partitions and assets."""
        out = []
        for i, parts in enumerate(self.assignment.values()):
            ticks = parts.get(PRICE_TOPIC, [])
            keys = [k.split(":")[1] for p in ticks for k in self.produced.keys.get(p, [])]
            bars = " + bars.v1" if parts.get(BARS_TOPIC) else ""
            out.append(f"w{i + 1}: ticks p{ticks} ({' '.join(keys)}){bars}")
        return "; ".join(out)


def check_outputs(
    plan: TickPlan, bars: Mapping[tuple[str, int], BarEvent], records: Mapping[str, SignalEvent]
) -> list[str]:
    """What differs from the ticks: bar values, missing/extra bars and records, crypto returns.

    Bars and records after the last whole bar are not checked: that bar stays open until the
    idle timeout closes it, which a worker whose input runs dry first may do within the run.
    """
    problems = []
    want, ids, end = plan.expected_bars, plan.expected_ids, plan.bar_start_ns(plan.n_bars)
    problems += [f"missing bar {key}" for key in sorted(set(want) - set(bars))]
    for key in sorted(k for k in bars if k[1] < end):
        b, close, n = bars[key], want.get(key), plan.interval_s
        if (b.close, b.n_ticks, b.stale, b.interval_s) != (close, n, False, n):
            problems.append(
                f"bar {key}: close {b.close} n_ticks {b.n_ticks} stale {b.stale} interval "
                f"{b.interval_s} (expected close {close} n_ticks {plan.interval_s} stale False)"
            )
    problems += [f"missing correlation record {i}" for i in ids if i not in records]
    extra = sorted(i for i, r in records.items() if i not in ids and r.ts_event_ns < end)
    problems += [f"unexpected correlation record {i}" for i in extra]
    crypto = [s.asset for s in plan.sources if s.asset_class == "crypto"]
    for k in range(1, plan.n_bars):
        returns: dict[str, float | None] = (
            records[ids[k]].data["returns"] if ids[k] in records else {}
        )
        for asset in crypto if returns else []:
            expected = math.log(plan.closes[asset][k] / plan.closes[asset][k - 1])
            got = returns.get(asset)
            if got is None or abs(got - expected) > 1e-12:
                problems.append(f"{ids[k]}: return of {asset} {got} (expected {expected})")
    return problems


async def run_pipeline(
    bootstrap: str,
    plan: TickPlan,
    n_workers: int,
    logs: Path,
    broker_pid: int | None = None,
    timeout_s: float = 300.0,
    profile: Path | None = None,
) -> PipelineRun:
    """Workers ready and paused, ticks produced, workers resumed: time to the last output."""
    await truncate(bootstrap, [PRICE_TOPIC, BARS_TOPIC])
    app_id = f"bench-pipeline-{n_workers}w-{uuid.uuid4().hex[:8]}"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = [
        WorkerProc(
            bootstrap, app_id, plan.interval_s, plan.grace_s, logs / f"{app_id}-{i}.log", profile
        )
        for i in range(n_workers)
    ]
    tail = None
    try:
        assignment = await wait_ready(bootstrap, app_id, workers)
        ready_s = time.perf_counter() - started
        await asyncio.sleep(SETTLE_S)
        tail = await _tail(bootstrap, [BARS_TOPIC, CORR_TOPIC])
        paused = time.monotonic()
        for w in workers:
            w.signal(signal.SIGSTOP)
        produced = await produce(bootstrap, plan.messages)
        if time.monotonic() - paused > MAX_PAUSE_S:
            raise BenchError(
                f"producing {plan.n_ticks} ticks took {produced.wall_s:.0f} s while the workers "
                f"were paused (faust's session timeout is 60 s): use fewer ticks"
            )
        cpu0, broker0 = sum(w.cpu_s() for w in workers), proc_cpu_s(broker_pid)
        t0 = time.perf_counter()
        for w in workers:
            w.signal(signal.SIGCONT)
        want_bars, want_ids = set(plan.expected_bars), set(plan.expected_ids)
        bars: dict[tuple[str, int], BarEvent] = {}
        records: dict[str, SignalEvent] = {}
        duplicates, first_bar, t1 = 0, math.nan, math.nan
        deadline = time.monotonic() + timeout_s
        while math.isnan(t1) and time.monotonic() < deadline:
            batch = await tail.getmany(timeout_ms=200)
            now = time.perf_counter()
            for tp, recs in batch.items():
                for r in recs:
                    if tp.topic == BARS_TOPIC:
                        bar = decode(BarEvent, r.value)
                        duplicates += (bar.asset, bar.bar_start_ns) in bars
                        bars[bar.asset, bar.bar_start_ns] = bar
                        first_bar = now - t0 if math.isnan(first_bar) else first_bar
                    else:
                        rec = decode(SignalEvent, r.value)
                        duplicates += rec.id in records
                        records[rec.id] = rec
            if batch and want_bars <= bars.keys() and want_ids <= records.keys():
                t1 = now
            for w in workers:
                w.check_alive()
        cpu1, broker1 = sum(w.cpu_s() for w in workers), proc_cpu_s(broker_pid)
        if math.isnan(t1):
            raise BenchError(
                f"{n_workers} worker(s): after {timeout_s:.0f} s, "
                f"{len(want_bars & bars.keys())}/{len(want_bars)} bars and "
                f"{len(want_ids & records.keys())}/{len(want_ids)} correlation records; "
                f"{check_outputs(plan, bars, records)[:5]}\n{workers[0].log_tail()}"
            )
        _, after = await describe_group(bootstrap, app_id)
    finally:
        if tail is not None:
            await tail.stop()
        codes = [await w.stop() for w in workers]
    problems = check_outputs(plan, bars, records)
    if set(after) != set(assignment):
        problems.append(f"the group rebalanced: members {sorted(assignment)} -> {sorted(after)}")
    problems += [f"a worker exited with code {c} on SIGTERM" for c in codes if c != 0]
    return PipelineRun(
        n_workers,
        plan.n_ticks,
        t1 - t0,
        cpu1 - cpu0,
        broker1 - broker0,
        ready_s,
        first_bar,
        produced,
        assignment,
        bars,
        records,
        duplicates,
        problems,
    )


@dataclass(frozen=True, slots=True)
class RawRun:
    """The raw consumer: records read and decoded, wall and this process's CPU seconds."""

    n_ticks: int
    wall_s: float
    cpu_s: float

    @property
    def ticks_per_s(self) -> float:
        return self.n_ticks / self.wall_s


async def run_raw(bootstrap: str, n_ticks: int, timeout_s: float = 120.0) -> RawRun:
    """A fresh group reads ``ticks.price.v1`` from the earliest offset, decoding every record."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    assigned: list[tuple[float, float]] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: object) -> None:
            pass

        async def on_partitions_assigned(self, parts: object) -> None:
            assigned.append((time.perf_counter(), time.process_time()))

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    consumer.subscribe([PRICE_TOPIC], listener=Listener())
    await consumer.start()
    try:
        n, deadline = 0, time.monotonic() + timeout_s
        while n < n_ticks and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                for r in recs:
                    decode(PriceTick, r.value)
                n += len(recs)
        wall, cpu = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    if n != n_ticks or not assigned:
        raise BenchError(f"the raw consumer read {n} of {n_ticks} ticks in {timeout_s:.0f} s")
    return RawRun(n, wall - assigned[0][0], cpu - assigned[0][1])


# -- latency ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency samples in nanoseconds; percentiles in milliseconds."""

    samples_ns: list[int]

    def ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ns, dtype=np.float64), q)) / 1e6

    @property
    def p50_ms(self) -> float:
        return self.ms(50)

    @property
    def p99_ms(self) -> float:
        return self.ms(99)


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """The live pipeline's latencies, one sample per measured correlation record."""

    tick_to_signal: Latency
    bar_end_to_signal: Latency
    emit_to_arrival: Latency
    bar_starts: list[int]
    instants: list[int]
    n_ticks: int
    skipped_bars: int


async def _stamped(consumer: Any, out: list[tuple[int, Any]], stop: asyncio.Event) -> None:
    """Collect records with their arrival time (wall clock, ns) until ``stop`` is set."""
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=50)
        now = time.time_ns()
        out += [(now, r) for recs in batch.values() for r in recs]


async def _live_ticks(
    bootstrap: str, sources: Sequence[Source], duration_s: float, rate_hz: float
) -> list[int]:
    """Every asset ticks at each instant, event time = wall clock at the send; the instants."""
    producer = _producer(bootstrap)
    await producer.start()
    instants: list[int] = []
    futures = []
    rng = random.Random(11)
    price = {s.asset: START_PRICES.get(s.asset, 100.0) for s in sources}
    try:
        start = time.monotonic()
        for k in range(round(duration_s * rate_hz)):
            await asyncio.sleep(max(0.0, start + k / rate_hz - time.monotonic()))
            ts = time.time_ns()
            instants.append(ts)
            for s in sources:
                price[s.asset] *= math.exp(rng.gauss(0.0, 5e-4))
                tick = s.tick(ts, price[s.asset])
                futures.append(await producer.send(PRICE_TOPIC, tick, key=s.key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return instants


async def run_latency(
    bootstrap: str,
    sources: Sequence[Source],
    duration_s: float,
    logs: Path,
    rate_hz: float = 5.0,
    interval_s: int = LATENCY_INTERVAL_S,
    grace_s: float = LATENCY_GRACE_S,
) -> LatencyRun:
    """One caught-up worker, ticks in real time; per correlation record, see the module doc."""
    await truncate(bootstrap, [PRICE_TOPIC, BARS_TOPIC])
    app_id = f"bench-latency-{uuid.uuid4().hex[:8]}"
    logs.mkdir(parents=True, exist_ok=True)
    worker = WorkerProc(bootstrap, app_id, interval_s, grace_s, logs / f"{app_id}.log")
    got: list[tuple[int, Any]] = []
    stop = asyncio.Event()
    try:
        await wait_ready(bootstrap, app_id, [worker])
        await asyncio.sleep(SETTLE_S)
        tail = await _tail(bootstrap, [CORR_TOPIC])
        collecting = asyncio.create_task(_stamped(tail, got, stop))
        try:
            instants = await _live_ticks(bootstrap, sources, duration_s, rate_hz)
            await asyncio.sleep(interval_s + grace_s + 2.0)  # the last bars' records
            worker.check_alive()
        finally:
            stop.set()
            await collecting
            await tail.stop()
    finally:
        await worker.stop()
    interval_ns, grace_ns = interval_s * NS, round(grace_s * NS)
    first_measured = instants[0] // interval_ns * interval_ns + SKIP_BARS * interval_ns
    tick, bar_end, emit, starts, seen = [], [], [], [], set()
    for arrival, r in got:
        rec = decode(SignalEvent, r.value)
        i = bisect.bisect_left(instants, rec.ts_event_ns + interval_ns + grace_ns)
        if rec.id in seen or rec.ts_event_ns < first_measured or i == len(instants):
            continue  # a duplicate, start-up, or closed by the idle timeout after the last tick
        seen.add(rec.id)
        starts.append(rec.ts_event_ns)
        tick.append(arrival - instants[i])
        bar_end.append(arrival - rec.ts_event_ns - interval_ns - grace_ns)
        emit.append(arrival - rec.ts_emit_ns)
    if not tick:
        raise BenchError(f"no correlation record to measure ({len(got)} arrived)")
    skipped = len({decode(SignalEvent, r.value).id for _, r in got}) - len(starts)
    return LatencyRun(
        Latency(tick),
        Latency(bar_end),
        Latency(emit),
        starts,
        instants,
        len(instants) * len(sources),
        skipped,
    )


async def run_raw_latency(
    bootstrap: str, sources: Sequence[Source], duration_s: float, rate_hz: float = 5.0
) -> Latency:
    """Raw produce → consume on ``ticks.price.v1`` (no worker): arrival − send time."""
    tail = await _tail(bootstrap, [PRICE_TOPIC])
    got: list[tuple[int, Any]] = []
    stop = asyncio.Event()
    collecting = asyncio.create_task(_stamped(tail, got, stop))
    try:
        instants = await _live_ticks(bootstrap, sources, duration_s, rate_hz)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await collecting
        await tail.stop()
    if len(got) != len(instants) * len(sources):
        raise BenchError(f"raw round trip: {len(got)} of {len(instants) * len(sources)} back")
    return Latency([arrival - decode(PriceTick, r.value).ts_event_ns for arrival, r in got])


# -- the whole benchmark ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    """Everything one benchmark run measured."""

    pipeline: dict[int, list[PipelineRun]]
    raw: list[RawRun]
    latency: LatencyRun | None
    raw_latency: Latency | None

    def ticks_per_s(self, workers: int) -> float:
        """Median wall → ticks/s of the pipeline with ``workers`` (0: the raw consumer)."""
        runs = self.raw if workers == 0 else self.pipeline[workers]
        return runs[0].n_ticks / statistics.median(r.wall_s for r in runs)


async def run_bench(
    bootstrap: str,
    n_ticks: int,
    latency_s: float,
    workdir: Path,
    broker_pid: int | None = None,
    workers: Sequence[int] = (1, 2),
    repeats: int = 1,
    rate_hz: float = 5.0,
) -> Results:
    """Throughput runs (worker counts interleaved, each followed by the raw consumer on its
    ticks), then the raw round trip and the live latency (``latency_s`` 0: none)."""
    await ensure_topics(bootstrap)
    sources = primaries(load_universe(None))
    plan = plan_ticks(sources, n_ticks)
    keys = ", ".join(s.key.decode() for s in sources)
    print(f"{plan.n_ticks} ticks of {keys} -> {plan.n_bars} bars of 60 s", flush=True)
    pipeline: dict[int, list[PipelineRun]] = {n: [] for n in workers}
    raw = []
    for r in range(repeats):
        for n in workers:
            print(f"run {r + 1}/{repeats}: pipeline with {n} worker(s), raw consumer", flush=True)
            pipeline[n].append(await run_pipeline(bootstrap, plan, n, workdir, broker_pid))
            raw.append(await run_raw(bootstrap, plan.n_ticks))
    latency = raw_latency = None
    if latency_s > 0:
        print(f"raw round trip {latency_s / 2:.0f} s, live pipeline {latency_s:.0f} s", flush=True)
        raw_latency = await run_raw_latency(bootstrap, sources, latency_s / 2, rate_hz)
        latency = await run_latency(bootstrap, sources, latency_s, workdir, rate_hz)
    return Results(pipeline, raw, latency, raw_latency)


def print_table(res: Results) -> dict[str, float]:
    """Print the tables and one line per figure; return the ratios by name."""
    print(
        f"\npython {platform.python_version()}, {os.cpu_count()} CPUs, Kafka "
        f"{broker.KAFKA_VERSION}, load average {os.getloadavg()[1]:.1f} (5 min); medians of the "
        f"runs (wall: perf_counter; CPU: the workers' from /proc, this process's for raw)"
    )
    head = f"{'throughput':<46}{'ticks':>7}{'runs':>5}{'wall s':>8}{'(min-max)':>14}"
    print(f"{head}{'CPU s':>7}{'broker CPU':>11}{'ticks/s':>9}")
    rows: list[tuple[str, int, Sequence[PipelineRun | RawRun]]] = [
        ("baseline: raw aiokafka consume + decode", 0, res.raw)
    ]
    rows += [
        (f"pipeline: {n} worker(s) -> bars -> correlation", n, r) for n, r in res.pipeline.items()
    ]
    for label, n, runs in rows:
        walls = [r.wall_s for r in runs]
        broker_cpu = [r.broker_cpu_s for r in runs if isinstance(r, PipelineRun)]
        spread = f"({min(walls):.2f}-{max(walls):.2f})"
        print(
            f"{label:<46}{runs[0].n_ticks:>7}{len(runs):>5}{statistics.median(walls):>8.2f}"
            f"{spread:>14}{statistics.median(r_cpu(r) for r in runs):>7.2f}"
            f"{statistics.median(broker_cpu) if broker_cpu else math.nan:>11.2f}"
            f"{res.ticks_per_s(n):>9,.0f}"
        )
    for n, runs in res.pipeline.items():
        for i, p in enumerate(runs):
            print(
                f"  {n}w run {i + 1}: {p.wall_s:.2f} s; ready {p.ready_s:.1f} s after start, "
                f"first bar {p.first_bar_s:.2f} s after resume; {p.split()}; "
                f"duplicates {p.duplicates}"
            )
            for problem in p.problems[:10]:
                print(f"    PROBLEM: {problem}")
            if len(p.problems) > 10:
                print(f"    ... {len(p.problems) - 10} more problems")
    ratios, lines, raw = {}, [], res.ticks_per_s(0)
    if 1 in res.pipeline:
        one = res.ticks_per_s(1)
        ratios["pipeline/raw"] = one / raw
        cpu = statistics.median(p.worker_cpu_s for p in res.pipeline[1])
        lines.append(
            f"throughput: 1 worker {one:,.0f} ticks/s end to end = {one / raw:.3f} x the raw "
            f"aiokafka consume+decode ({raw:,.0f} ticks/s) "
            f"({'meets' if one / raw >= 0.5 else 'BELOW'} the aim of >= 0.5); "
            f"{res.pipeline[1][0].n_ticks / cpu:,.0f} ticks per worker CPU second"
        )
    if 1 in res.pipeline and 2 in res.pipeline:
        ratios["2 workers/1"] = res.ticks_per_s(2) / res.ticks_per_s(1)
        lines.append(
            f"scaling: 2 workers {res.ticks_per_s(2):,.0f} ticks/s = "
            f"{ratios['2 workers/1']:.2f} x 1 worker"
        )
    if res.latency is not None and res.raw_latency is not None:
        lat, base = res.latency, res.raw_latency
        print(f"\n{'latency':<52}{'samples':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for label, row in [
            ("baseline: raw produce -> consume", base),
            ("pipeline: closing tick sent -> correlation record", lat.tick_to_signal),
            ("pipeline: bar end + grace -> correlation record", lat.bar_end_to_signal),
            ("  of which: worker emit -> arrival here", lat.emit_to_arrival),
        ]:
            print(
                f"{label:<52}{len(row.samples_ns):>8}{row.p50_ms:>9.1f}{row.p99_ms:>9.1f}"
                f"{row.ms(100):>9.1f}"
            )
        print(
            f"  {LATENCY_INTERVAL_S} s bars, grace {LATENCY_GRACE_S} s, {lat.n_ticks} live "
            f"ticks; first {SKIP_BARS} bars and {lat.skipped_bars} records in all left out"
        )
        t, b = lat.tick_to_signal, lat.bar_end_to_signal
        ratios["latency p50 pipeline/raw"] = t.p50_ms / base.p50_ms
        ratios["latency p99 pipeline/raw"] = t.p99_ms / base.p99_ms
        lines.append(
            f"latency: closing tick -> signal p50 {t.p50_ms:.1f} ms, p99 {t.p99_ms:.1f} ms = "
            f"{ratios['latency p50 pipeline/raw']:.1f} x / "
            f"{ratios['latency p99 pipeline/raw']:.1f} x the raw round trip "
            f"(p50 {base.p50_ms:.1f} ms, p99 {base.p99_ms:.1f} ms)"
        )
        lines.append(
            f"latency: bar end + grace -> signal p50 {b.p50_ms:.1f} ms, p99 {b.p99_ms:.1f} ms "
            f"(adds the wait for the next tick, up to 1/rate)"
        )
    print("\n" + "\n".join(lines))
    return ratios


def r_cpu(run: PipelineRun | RawRun) -> float:
    """The CPU seconds of a row: the workers', or this process's for the raw consumer."""
    return run.worker_cpu_s if isinstance(run, PipelineRun) else run.cpu_s


async def profile_worker(bootstrap: str, n_ticks: int, workdir: Path) -> None:
    """One more 1-worker run with the worker under cProfile; print its top functions."""
    plan = plan_ticks(primaries(load_universe(None)), n_ticks)
    out = workdir / "worker.prof"
    await run_pipeline(bootstrap, plan, 1, workdir, profile=out)
    stats = pstats.Stats(str(out), stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)


def main(argv: Sequence[str] | None = None) -> Results:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: ~2k ticks, 6 s live")
    parser.add_argument("--ticks", type=int, help="throughput ticks (default 200000)")
    parser.add_argument("--repeats", type=int, help="throughput runs per path (default 3)")
    parser.add_argument("--latency-s", type=float, help="live latency run in s (default 40)")
    parser.add_argument("--rate-hz", type=float, default=5.0, help="live ticks per asset per s")
    parser.add_argument("--profile", action="store_true", help="cProfile one more worker run")
    args = parser.parse_args(argv)
    n_ticks = args.ticks or (2_000 if args.quick else 200_000)
    repeats = args.repeats or (1 if args.quick else 3)
    latency_s = args.latency_s if args.latency_s is not None else (6.0 if args.quick else 40.0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="firesale-bench-") as tmp:
        home, work = Path(tmp) / "kafka", Path(tmp) / "work"
        print("starting an embedded Kafka broker ...", flush=True)
        info = broker.start(home, None, detach=False)
        try:
            bench = run_bench(
                info.bootstrap,
                n_ticks,
                latency_s,
                work,
                info.pid,
                repeats=repeats,
                rate_hz=args.rate_hz,
            )
            res = asyncio.run(bench)
            if args.profile:
                asyncio.run(profile_worker(info.bootstrap, n_ticks, work))
        finally:
            broker.stop(home)
    print_table(res)
    print(f"(the whole benchmark took {time.monotonic() - started:.0f} s)")
    return res


if __name__ == "__main__":
    main()
