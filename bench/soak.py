"""Soak: a synthetic scenario through the real service for N minutes at X× real time, with the
memory (RSS) of every process and the stream worker's consumer lag sampled throughout.

Run ``.venv/bin/python -m bench.soak [--minutes 32] [--speed 10] [--interval 10] [--out DIR]
[--scenario fire-sale]``.

**What runs.** An embedded Kafka broker of its own in a temporary directory (deleted at the end,
so the soak touches nobody's data) and ``python -m streams run --scenario fire-sale --speed X``
pointed at it (``FIRESALE_KAFKA_BOOTSTRAP``, a fresh ``FIRESALE_APP_ID``,
``FIRESALE_METRICS_PORT=P``). That *run* process holds the scenario source and its producer and
serves their registry on port P; its child, the *worker* (``python -m streams worker``, as
deployed), serves the stream metrics on P + 1 (``streams/service.py``). The fire-sale scenario
covers ~34 h of event time, so at 10× it outlasts the soak; after ``--minutes`` the run process
gets SIGTERM (it stops the worker the same way) and the soak waits for both to exit.

**Samples**, every ``--interval`` seconds: VmRSS (``/proc/<pid>/status``, proc(5)) of the run
process, the worker and the broker JVM (context); from the worker's /metrics the sum of
``firesale_consumer_lag_records`` over its partitions, the event-time lag of
``ticks.price.v1`` and the largest over the input topics, the cross-sections processed
(``firesale_bars_total``: one correlation record each) and signal events published; from the run
process's /metrics the ticks Kafka acknowledged (``firesale_producer_messages_total``).

**Summary.** The first 10 % of the run is warm-up (imports, group join, first bars) and is left
out of the trends. Per process: RSS at the first post-warm-up sample, at the end, the peak, the
least-squares slope over the post-warm-up samples (MiB per hour) and that slope times the run
length. Verdicts:

* *no growth trend* when ``|slope| × run length < max(8 MiB, 5 % of the post-warm-up RSS)``.
  The detector's state is fixed-size numpy buffers allocated at start (``signals/correlation.py``,
  ``signals/cosell.py``) and the bar builder keeps one open bar per asset, so a healthy process
  plateaus; what moves RSS without a leak is the allocator (CPython's 1 MiB pymalloc arenas and
  glibc's heap trimming release memory in steps, not byte by byte), a few MiB. 5 % keeps the
  bound proportionate for a large process. Judged for the run process and the worker; the
  broker's JVM heap grows until its collector needs it to (``-Xms128m -Xmx512m``), so its row is
  context only.
* *no lag build-up* when the consumer lag's p95 over the post-warm-up samples stays below the
  input of one bar interval of event time (``rate × bar_interval_s / speed`` records, rate
  measured from the producer counter): below that, a signal is never a bar late; and when the
  final sample is back near zero: at most one wall second of input.

The event-time lag gauges measure processing time minus event time; a scenario's event clock
runs ``speed`` times faster than the wall clock, so they fall by ``speed − 1`` seconds every
second by construction. ``(lag + (speed − 1) × t) / speed`` removes that: it is the worker's
delay in wall seconds plus an unknown constant (where the scenario's clock started), so only its
slope and spread are reported.

Outputs in ``--out``: ``samples.csv``, ``summary.json``, ``summary.md`` (the printed table),
``run.log`` (the service's output) and the last scrape of each /metrics endpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from deploy.kafka import broker
from streams.config import load_settings
from streams.market_stage import INPUT_TOPICS
from streams.topics import topic
from streams.worker import PRICES

WARMUP_FRACTION = 0.10
RSS_BOUND_MIB = 8.0
RSS_BOUND_FRACTION = 0.05
STOP_TIMEOUT_S = 120.0
"""SIGTERM to exit: the service waits up to 60 s for its worker (streams/service.py)."""
START_TIMEOUT_S = 90.0
PROCESSES = ("run", "worker", "broker")
JUDGED = ("run", "worker")
CONSUMED_TOPICS = (PRICES, *INPUT_TOPICS)
CONSUMED_PARTITIONS = sum(topic(t).partitions for t in CONSUMED_TOPICS)
"""Partitions a lone worker holds: each reports a consumer lag once it has read from it."""


class SoakError(RuntimeError):
    """The service did not start, or died during the soak (the message quotes its log)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampling instant; NaN where a figure could not be read (process or endpoint absent)."""

    t_s: float
    """Wall seconds since the run process was started."""
    rss_run_mib: float
    rss_worker_mib: float
    rss_broker_mib: float
    consumer_lag_records: float
    """Sum of ``firesale_consumer_lag_records`` over the worker's partitions."""
    lag_partitions: int
    """How many partitions reported a consumer lag."""
    event_lag_price_s: float
    event_lag_max_s: float
    """Largest event-time lag over the input topics that have been read."""
    ticks_produced: float
    cross_sections: float
    signal_events: float


@dataclass(frozen=True, slots=True)
class Trend:
    """A series over a run: levels, peak and least-squares trend after the warm-up."""

    start: float
    """First post-warm-up sample."""
    end: float
    peak: float
    """Largest sample of the whole run, warm-up included."""
    slope_per_h: float
    """Least-squares slope over the post-warm-up samples, per hour."""
    change_over_run: float
    """``slope_per_h`` times the run length: the growth the trend implies over the run."""
    observed_change: float
    """``end − start``."""


@dataclass(frozen=True, slots=True)
class LagStats:
    """A lag series after the warm-up."""

    mean: float
    p95: float
    max: float
    final: float
    slope_per_h: float


# -- pure figures -------------------------------------------------------------------------------


def slope_per_hour(t_s: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against ``t_s`` (seconds), per hour; NaN points are
    skipped; NaN with fewer than two distinct times.

    Notes
    -----
    The ordinary least-squares estimate :math:`\\hat b = \\sum (t_i-\\bar t)(y_i-\\bar y) /
    \\sum (t_i-\\bar t)^2`, with :math:`t` in hours.

    Examples
    --------
    >>> slope_per_hour([0, 1800, 3600], [100.0, 101.0, 102.0])
    2.0
    >>> slope_per_hour([0, 600, 1200, 1800], [5.0, float("nan"), 5.0, 5.0])
    0.0
    """
    t = np.asarray(t_s, dtype=np.float64) / 3600.0
    y = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if t.size < 2 or np.ptp(t) == 0:
        return math.nan
    tc = t - t.mean()
    return float(np.dot(tc, y - y.mean()) / np.dot(tc, tc))


def post_warmup(samples: Sequence[Sample], run_s: float) -> list[Sample]:
    """The samples taken after the first ``WARMUP_FRACTION`` of the run."""
    return [s for s in samples if s.t_s >= WARMUP_FRACTION * run_s]


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def trend(samples: Sequence[Sample], column: str, run_s: float) -> Trend:
    """:class:`Trend` of one column (see :class:`Sample`)."""
    late = post_warmup(samples, run_s)
    ts = [s.t_s for s in late]
    ys = [float(getattr(s, column)) for s in late]
    kept = _finite(ys)
    every = _finite([float(getattr(s, column)) for s in samples])
    slope = slope_per_hour(ts, ys)
    start, end = (kept[0], kept[-1]) if kept else (math.nan, math.nan)
    return Trend(
        start=start,
        end=end,
        peak=max(every, default=math.nan),
        slope_per_h=slope,
        change_over_run=slope * run_s / 3600.0,
        observed_change=end - start,
    )


def lag_stats(samples: Sequence[Sample], values: Sequence[float], run_s: float) -> LagStats:
    """Mean, p95 (linear interpolation), max, final sample and slope of a post-warm-up series;
    ``values`` is aligned with ``samples``."""
    pairs = [(s.t_s, v) for s, v in zip(samples, values, strict=True)]
    late = [(t, v) for t, v in pairs if t >= WARMUP_FRACTION * run_s and math.isfinite(v)]
    if not late:
        return LagStats(math.nan, math.nan, math.nan, math.nan, math.nan)
    ys = np.array([v for _, v in late])
    return LagStats(
        mean=float(ys.mean()),
        p95=float(np.percentile(ys, 95)),
        max=float(ys.max()),
        final=float(ys[-1]),
        slope_per_h=slope_per_hour([t for t, _ in late], ys.tolist()),
    )


def rss_bound_mib(start_mib: float) -> float:
    """The largest RSS change over a run still called "no growth trend"."""
    return max(RSS_BOUND_MIB, RSS_BOUND_FRACTION * start_mib)


def input_rate(samples: Sequence[Sample], run_s: float) -> float:
    """Ticks acknowledged per wall second over the post-warm-up samples (NaN if unknown)."""
    late = [s for s in post_warmup(samples, run_s) if math.isfinite(s.ticks_produced)]
    if len(late) < 2 or late[-1].t_s <= late[0].t_s:
        return math.nan
    return (late[-1].ticks_produced - late[0].ticks_produced) / (late[-1].t_s - late[0].t_s)


def net_event_lag(samples: Sequence[Sample], speed: float) -> list[float]:
    """The price topic's event-time lag with the scenario clock removed, in wall seconds,
    relative to its smallest value (the absolute level carries an unknown constant)."""
    raw = [(s.event_lag_price_s + (speed - 1.0) * s.t_s) / speed for s in samples]
    low = min(_finite(raw), default=math.nan)
    return [v - low for v in raw]


# -- reading the processes ----------------------------------------------------------------------


def rss_mib(pid: int | None) -> float:
    """Resident set size of ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``); NaN if gone."""
    if pid is None:
        return math.nan
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    found = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024.0 if found else math.nan


def children(pid: int) -> list[int]:
    """Child pids of ``pid`` (``/proc/<pid>/task/*/children``, proc(5))."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def cmdline(pid: int) -> list[str]:
    """The argument vector of ``pid`` (empty if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def find_worker(run_pid: int) -> int | None:
    """The ``python -m streams worker`` child of the run process, if it has started."""
    for child in children(run_pid):
        argv = cmdline(child)
        if argv[-3:] == ["-m", "streams", "worker"]:
            return child
    return None


def scrape(port: int) -> str | None:
    """The text of ``http://127.0.0.1:<port>/metrics`` (None when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text
    except OSError:
        return None


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text exposition: (name, labels, value)."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def worker_figures(text: str | None) -> dict[str, float]:
    """Consumer lag, event-time lags and output counts from the worker's /metrics text.

    An event-time lag gauge still at exactly 0 has never been set (its topic not read yet):
    a computed lag, in ns divided by 1e9, is not exactly 0, so those are left out of the max.
    """
    nan = math.nan
    out = {"consumer_lag_records": nan, "lag_partitions": 0.0, "event_lag_price_s": nan}
    out |= {"event_lag_max_s": nan, "cross_sections": nan, "signal_events": nan}
    if text is None:
        return out
    lags: list[float] = []
    event_lags: dict[str, float] = {}
    events = 0.0
    for name, labels, value in metric_samples(text):
        if name == "firesale_consumer_lag_records":
            lags.append(value)
        elif name == "firesale_event_time_lag_seconds" and value != 0.0:
            event_lags[labels["topic"]] = value
        elif name == "firesale_bars_total":
            out["cross_sections"] = value
        elif name == "firesale_signal_events_total":
            events += value
    out["signal_events"] = events
    if lags:
        out["consumer_lag_records"] = sum(lags)
        out["lag_partitions"] = float(len(lags))
    out["event_lag_price_s"] = event_lags.get(PRICES, nan)
    out["event_lag_max_s"] = max(event_lags.values(), default=nan)
    return out


def ticks_produced(text: str | None) -> float:
    """Messages Kafka acknowledged to the run process's producer, over all topics."""
    if text is None:
        return math.nan
    return sum(
        v for name, _, v in metric_samples(text) if name == "firesale_producer_messages_total"
    )


def free_port_pair() -> int:
    """A free port P with P + 1 free too (the run process and its worker)."""
    for _ in range(100):
        port = broker.free_port()
        if port < 65535 and broker.port_is_free(port + 1):
            return port
    raise SoakError("no two consecutive free ports found")


# -- the run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """What a soak measured."""

    samples: list[Sample]
    run_s: float
    speed: float
    interval_s: float
    scenario: str
    bar_interval_s: int
    pids: dict[str, int | None]
    run_exit: int | None
    worker_exit: int | None
    stop_s: float


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_our_worker(pid: int, app_id: str) -> bool:
    """True when ``pid`` is a worker started for this soak (its app id is in its environment)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"FIRESALE_APP_ID={app_id}".encode() in environ


def _stop(proc: subprocess.Popen[bytes], worker_pid: int | None, app_id: str) -> float:
    """SIGTERM the run process and wait; SIGKILL after ``STOP_TIMEOUT_S``. Returns the wait."""
    began = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A killed run process leaves its worker behind: end it by its pid, if it is still ours.
    if worker_pid is not None and _is_our_worker(worker_pid, app_id):
        os.kill(worker_pid, signal.SIGKILL)
    return time.monotonic() - began


def sample_once(t_s: float, pids: Mapping[str, int | None], port: int, out: Path) -> Sample:
    """Read every figure once; the raw /metrics texts are kept as the last scrape."""
    run_text, worker_text = scrape(port), scrape(port + 1)
    if run_text is not None:
        (out / "run-metrics.txt").write_text(run_text)
    if worker_text is not None:
        (out / "worker-metrics.txt").write_text(worker_text)
    w = worker_figures(worker_text)
    return Sample(
        t_s=round(t_s, 3),
        rss_run_mib=rss_mib(pids["run"]),
        rss_worker_mib=rss_mib(pids["worker"]),
        rss_broker_mib=rss_mib(pids["broker"]),
        consumer_lag_records=w["consumer_lag_records"],
        lag_partitions=int(w["lag_partitions"]),
        event_lag_price_s=w["event_lag_price_s"],
        event_lag_max_s=w["event_lag_max_s"],
        ticks_produced=ticks_produced(run_text),
        cross_sections=w["cross_sections"],
        signal_events=w["signal_events"],
    )


def run_soak(
    minutes: float, speed: float, interval_s: float, out: Path, scenario: str = "fire-sale"
) -> Run:
    """Start a broker and the service, sample until ``minutes`` have passed, stop both."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="firesale-soak-") as tmp:
        home = Path(tmp) / "kafka"
        print(f"starting an embedded Kafka broker in {home} ...", flush=True)
        info = broker.start(home, None, detach=False)
        try:
            return _drive(info, minutes, speed, interval_s, out, scenario, Path(tmp))
        finally:
            broker.stop(home)


def _drive(
    info: broker.BrokerInfo,
    minutes: float,
    speed: float,
    interval_s: float,
    out: Path,
    scenario: str,
    workdir: Path,
) -> Run:
    port, app_id = free_port_pair(), f"soak-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "FIRESALE_KAFKA_BOOTSTRAP": info.bootstrap,
        "FIRESALE_APP_ID": app_id,
        "FIRESALE_METRICS_PORT": str(port),
        "FIRESALE_METRICS_BIND": "127.0.0.1",
    }
    settings = load_settings(env)
    run_s = minutes * 60.0
    log_path = out / "run.log"
    argv = [sys.executable, "-m", "streams", "run", "--scenario", scenario, "--speed", str(speed)]
    print(f"{' '.join(argv[1:])} for {minutes:g} min; metrics on :{port} and :{port + 1}")
    samples: list[Sample] = []
    pids: dict[str, int | None] = {"run": None, "worker": None, "broker": info.pid}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        pids["run"] = proc.pid
        try:
            while pids["worker"] is None:
                if proc.poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
                    raise SoakError(f"the worker did not start:\n{_log_tail(log_path)}")
                pids["worker"] = find_worker(proc.pid)
                time.sleep(0.2)
            k = 1
            while k * interval_s <= run_s + 1e-9:
                time.sleep(max(0.0, t0 + k * interval_s - time.monotonic()))
                if proc.poll() is not None:
                    raise SoakError(f"the service exited early:\n{_log_tail(log_path)}")
                samples.append(sample_once(time.monotonic() - t0, pids, port, out))
                _progress(samples[-1], run_s)
                k += 1
            # Wait out the remainder, so the run lasts ``minutes`` whatever the interval.
            time.sleep(max(0.0, t0 + run_s - time.monotonic()))
        finally:
            stop_s = _stop(proc, pids["worker"], app_id)
            write_csv(out / "samples.csv", samples)
    found = re.findall(
        r"stream worker stopped \(exit (-?\d+)\)", log_path.read_text(errors="replace")
    )
    return Run(
        samples=samples,
        run_s=run_s,
        speed=speed,
        interval_s=interval_s,
        scenario=scenario,
        bar_interval_s=settings.bar_interval_s,
        pids=pids,
        run_exit=proc.returncode,
        worker_exit=int(found[-1]) if found else None,
        stop_s=stop_s,
    )


def _progress(s: Sample, run_s: float) -> None:
    print(
        f"{s.t_s:7.0f}/{run_s:.0f} s  RSS run {s.rss_run_mib:6.1f} worker {s.rss_worker_mib:6.1f}"
        f" broker {s.rss_broker_mib:6.1f} MiB  lag {s.consumer_lag_records:g}"
        f"  ticks {s.ticks_produced:g}  cross-sections {s.cross_sections:g}",
        flush=True,
    )


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    """One row per sample, columns as :class:`Sample`."""
    names = [f.name for f in fields(Sample)]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for s in samples:
            writer.writerow([getattr(s, n) for n in names])


def read_csv(path: Path) -> list[Sample]:
    """The samples written by :func:`write_csv`."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        values: dict[str, Any] = {k: float(v) for k, v in row.items()}
        values["lag_partitions"] = int(row["lag_partitions"])
        out.append(Sample(**values))
    return out


# -- summary ------------------------------------------------------------------------------------


def summarize(run: Run) -> dict[str, Any]:
    """Every figure and verdict of a soak, JSON-ready."""
    s, run_s, speed = run.samples, run.run_s, run.speed
    procs: dict[str, Any] = {}
    verdicts: list[str] = []
    for name in PROCESSES:
        tr = trend(s, f"rss_{name}_mib", run_s)
        bound = rss_bound_mib(tr.start)
        ok = abs(tr.change_over_run) < bound
        procs[name] = asdict(tr) | {"pid": run.pids.get(name), "bound_mib": bound, "ok": ok}
        if name in JUDGED:
            state = "no growth trend" if ok else "GROWTH TREND"
            verdicts.append(
                f"{name} RSS: {state} (|{tr.slope_per_h:+.2f} MiB/h| x {run_s / 3600:.3f} h = "
                f"{abs(tr.change_over_run):.2f} MiB {'<' if ok else '>='} bound {bound:.1f} MiB)"
            )
    rate = input_rate(s, run_s)
    lag_bound = rate * run.bar_interval_s / speed
    near_zero = rate * 1.0
    lag = lag_stats(s, [x.consumer_lag_records for x in s], run_s)
    lag_ok = lag.p95 < lag_bound and lag.final <= near_zero
    verdicts.append(
        f"consumer lag: {'no lag build-up' if lag_ok else 'LAG BUILD-UP'} (p95 {lag.p95:.1f} "
        f"{'<' if lag.p95 < lag_bound else '>='} {lag_bound:.0f} records = one "
        f"{run.bar_interval_s} s bar of input at {rate:.1f} ticks/s; final {lag.final:g} "
        f"{'<=' if lag.final <= near_zero else '>'} {near_zero:.0f} = 1 s of input)"
    )
    net = lag_stats(s, net_event_lag(s, speed), run_s)
    last = s[-1] if s else None
    return {
        "config": {
            "scenario": run.scenario,
            "speed": speed,
            "minutes": run_s / 60.0,
            "interval_s": run.interval_s,
            "warmup_s": WARMUP_FRACTION * run_s,
            "bar_interval_s": run.bar_interval_s,
            "samples": len(s),
            "samples_after_warmup": len(post_warmup(s, run_s)),
            "host": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        },
        "rss_mib": procs,
        "consumer_lag_records": asdict(lag)
        | {"bound": lag_bound, "near_zero": near_zero, "ok": lag_ok},
        "event_lag_net_s": asdict(net),
        "event_lag_price_s": {
            "final": last.event_lag_price_s if last else math.nan,
            "slope_per_h": slope_per_hour([x.t_s for x in s], [x.event_lag_price_s for x in s]),
            "expected_slope_per_h": -(speed - 1.0) * 3600.0,
        },
        "records": {
            "ticks_produced": last.ticks_produced if last else math.nan,
            "ticks_per_s": rate,
            "cross_sections": last.cross_sections if last else math.nan,
            "expected_cross_sections": speed * run_s / run.bar_interval_s,
            "signal_events": last.signal_events if last else math.nan,
        },
        "exits": {"run": run.run_exit, "worker": run.worker_exit, "stop_s": run.stop_s},
        "verdicts": verdicts,
    }


def markdown(summary: Mapping[str, Any]) -> str:
    """The summary as the markdown that goes into RELIABILITY.md."""
    c = summary["config"]
    lines = [
        f"Soak: `firesale run --scenario {c['scenario']} --speed {c['speed']:g}`, "
        f"{c['minutes']:g} min, a sample every {c['interval_s']:g} s ({c['samples']} samples, "
        f"{c['samples_after_warmup']} after the {c['warmup_s']:.0f} s warm-up); {c['host']}.",
        "",
        "| process | RSS start MiB | end | peak | slope MiB/h | slope x run MiB | bound MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in summary["rss_mib"].items():
        label = name if name in JUDGED else f"{name} (context)"
        lines.append(
            f"| {label} | {p['start']:.1f} | {p['end']:.1f} | {p['peak']:.1f} | "
            f"{p['slope_per_h']:+.2f} | {p['change_over_run']:+.2f} | {p['bound_mib']:.1f} |"
        )
    lag, net = summary["consumer_lag_records"], summary["event_lag_net_s"]
    lines += [
        "",
        "| lag (after warm-up) | mean | p95 | max | final | slope per h | bound |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| consumer lag, records (sum over partitions) | {lag['mean']:.2f} | {lag['p95']:.1f} | "
        f"{lag['max']:g} | {lag['final']:g} | {lag['slope_per_h']:+.2f} | "
        f"p95 < {lag['bound']:.0f}, final <= {lag['near_zero']:.0f} |",
        f"| event-time lag net of the {c['speed']:g}x clock, wall s above its minimum "
        f"| {net['mean']:.2f} | {net['p95']:.2f} | {net['max']:.2f} | {net['final']:.2f} | "
        f"{net['slope_per_h']:+.2f} | — |",
    ]
    r, e = summary["records"], summary["exits"]
    lines += [
        "",
        f"Records: {r['ticks_produced']:.0f} ticks acknowledged ({r['ticks_per_s']:.1f}/s), "
        f"{r['cross_sections']:.0f} cross-sections/correlation records (event time covered: "
        f"{r['expected_cross_sections']:.0f} bars), {r['signal_events']:.0f} signal events. "
        f"Stop: run exit {e['run']}, worker exit {e['worker']}, {e['stop_s']:.1f} s after SIGTERM.",
        "",
        *[f"- {v}" for v in summary["verdicts"]],
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=32.0, help="run length (default 32)")
    parser.add_argument("--speed", type=float, default=10.0, help="X times real time (10)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: a temp dir)")
    parser.add_argument("--scenario", choices=("fire-sale", "calm"), default="fire-sale")
    args = parser.parse_args(argv)
    if not (args.minutes > 0 and args.speed > 0 and 0 < args.interval <= args.minutes * 60):
        parser.error("give --minutes > 0, --speed > 0 and 0 < --interval <= the run length")
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="firesale-soak-out-"))
    run = run_soak(args.minutes, args.speed, args.interval, out, args.scenario)
    summary = summarize(run)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    print(f"\nsamples: {out / 'samples.csv'}  summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
