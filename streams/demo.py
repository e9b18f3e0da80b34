"""``firesale demo``: the synthetic fire sale at high speed, watched live in the terminal.

:class:`DemoView` is the pure part: records of ``bars.v1`` and ``signals.*.v1`` in (raw bytes,
as Kafka hands them), a rich renderable out; no I/O, no clock. :func:`run_demo` runs what
``firesale run --scenario fire-sale --speed X`` runs (the scenario source and a ``firesale
worker`` child, from :mod:`streams.service`) plus a consumer of the output topics that feeds the
view, shown with ``rich.live.Live`` or printed as plain snapshots. :func:`demo` is the command:
it starts a *fresh* embedded broker (a temporary home, removed afterwards) unless
``FIRESALE_KAFKA_BOOTSTRAP`` is set, because a worker that finds an earlier scenario's
checkpoint on a reused broker resumes with an event-time watermark hours ahead of the new run
and drops its ticks as late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from connectors.scenario import PhaseSchedule, Preset, ScenarioParams, phase_schedule
from streams.config import Settings, Universe
from streams.events import BarEvent, DecodeError, SignalEvent, decode
from streams.tail import format_time_ns

__all__ = ["DEFAULT_SPEED", "DEMO_BAR_INTERVAL_S", "DemoError", "DemoView", "demo", "run_demo"]

DEFAULT_SPEED = 700.0
"""Simulated seconds per wall second: the 34 h scenario in about 3 minutes (README, "Demo")."""
DEMO_BAR_INTERVAL_S = 300
"""Bar length when ``FIRESALE_BAR_INTERVAL_S`` is not set: 5-minute bars."""
SCENARIO: Final[Preset] = "fire-sale"
VIEW_TOPICS = (
    "bars.v1",
    "signals.correlation.v1",
    "signals.cosell.v1",
    "signals.liquidation.v1",
    "signals.funding.v1",
)
SPARKS = "▁▂▃▄▅▆▇█"
_PHASE_LINE = re.compile(r"^scenario phase (\w+): (\S+) → (\S+)$")


class DemoError(RuntimeError):
    """The demo could not go on (the stream worker died...); the message says where to look."""


def format_price(close: float) -> str:
    """A close as the view shows it: 2 decimals from 100 up (with thousands), else 4.

    Examples
    --------
    >>> format_price(110234.5), format_price(2.51234), format_price(680.0)
    ('110,234.50', '2.5123', '680.00')
    """
    return f"{close:,.2f}" if close >= 100 else f"{close:.4f}"


def sparkline(values: Sequence[float | None]) -> str:
    """One block character per value on a fixed 0..1 scale; ``·`` where undefined.

    Examples
    --------
    >>> sparkline([0.0, 0.3, None, 0.7, 1.0])
    '▁▃·▆█'
    """
    out = []
    for v in values:
        out.append("·" if v is None else SPARKS[min(len(SPARKS) - 1, max(0, int(v * 8)))])
    return "".join(out)


def _num(value: object) -> float | None:
    """A JSON number or null; anything else is an invalid record (TypeError)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value) if math.isfinite(value) else None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"${value / div:.1f}{unit}"
    return f"${value:.0f}"


@dataclass(slots=True)
class _AssetRow:
    asset_class: str
    bar_start_ns: int
    close: float
    first_close: float
    prev_close: float | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class _Record:
    bar_start_ns: int
    corr_avg: float | None
    by_pair: Mapping[str, float | None]
    absorption_ratio: float | None
    score: float | None
    active: bool
    selling: tuple[str, ...]
    long_liq_z: float | None


@dataclass(slots=True)
class _Episode:
    start_ns: int
    peak_score: float | None
    end_ns: int | None = None


@dataclass(frozen=True, slots=True)
class _Line:
    ts_event_ns: int
    type: str
    subject: str
    detail: str


class DemoView:
    """What the demo shows, built from the records of :data:`VIEW_TOPICS` (pure: no I/O).

    Parameters
    ----------
    assets
        ``(name, asset_class)`` in display order (others are added as they come).
    schedule
        The scenario's labelled phases, to name the phase of the latest bar.
    theta_on, theta_off
        Co-selling thresholds, shown beside the score.
    history_bars, max_events
        Length of the sparklines, and of the list of recent signal events.

    Examples
    --------
    >>> from streams.events import encode
    >>> view = DemoView([("BTC", "crypto")])
    >>> view.feed("bars.v1", encode(BarEvent(asset="BTC", asset_class="crypto", bar_start_ns=0,
    ...                                      interval_s=300, close=101.5, n_ticks=3, stale=False)))
    >>> view.feed("bars.v1", b"{oops")
    >>> view.bars, view.invalid, view.closes()
    (1, 1, {'BTC': 101.5})
    """

    def __init__(
        self,
        assets: Sequence[tuple[str, str]] = (),
        schedule: PhaseSchedule | None = None,
        *,
        theta_on: float | None = None,
        theta_off: float | None = None,
        history_bars: int = 72,
        max_events: int = 10,
    ) -> None:
        self.schedule = schedule
        self.theta_on, self.theta_off = theta_on, theta_off
        self.order = [name for name, _ in assets]
        self.rows: dict[str, _AssetRow] = {}
        self.record: _Record | None = None
        self.scores: deque[float | None] = deque(maxlen=history_bars)
        self.corrs: deque[float | None] = deque(maxlen=history_bars)
        self.events: deque[_Line] = deque(maxlen=max_events)
        self.episodes: list[_Episode] = []
        self.seen_ids: set[str] = set()
        self.notes: deque[str] = deque(maxlen=3)
        self.bars = self.records = self.signals = self.invalid = self.duplicates = 0
        self.last_invalid: str | None = None
        self.event_time_ns: int | None = None

    # -- input -------------------------------------------------------------------------------

    def feed(self, topic: str, value: bytes | None) -> None:
        """Take one record; an invalid one is counted (and its reason kept), never raised."""
        try:
            if value is None:
                raise DecodeError("a tombstone (no value)")
            if topic == "bars.v1":
                self._on_bar(decode(BarEvent, value))
            elif topic.startswith("signals."):
                self._on_signal(decode(SignalEvent, value))
            else:
                raise DecodeError("not a topic the demo shows")
        except (ValueError, TypeError, KeyError) as exc:  # DecodeError is a ValueError
            self.invalid += 1
            self.last_invalid = f"{topic}: {exc}"[:160]

    def note(self, message: str) -> None:
        """A line from the service (worker started, scenario phase...), shown at the bottom."""
        self.notes.append(message)

    def _on_bar(self, bar: BarEvent) -> None:
        row = self.rows.get(bar.asset)
        if row is not None and bar.bar_start_ns <= row.bar_start_ns:
            self.duplicates += 1  # at-least-once delivery: a redelivered or older bar
            return
        if row is None:
            self.rows[bar.asset] = _AssetRow(
                bar.asset_class, bar.bar_start_ns, bar.close, bar.close
            )
            if bar.asset not in self.order:
                self.order.append(bar.asset)
        else:
            row.prev_close, row.close, row.bar_start_ns = row.close, bar.close, bar.bar_start_ns
        self.rows[bar.asset].stale = bar.stale
        self.bars += 1
        self.event_time_ns = max(self.event_time_ns or 0, bar.bar_start_ns)

    def _on_signal(self, ev: SignalEvent) -> None:
        kind = ev.type.partition(".")[0]
        if ev.type == "correlation.bar":
            self._on_record(ev)
        elif kind in ("cosell", "liquidation", "funding"):
            self._on_event(ev)
        else:
            raise ValueError(f"unknown signal type {ev.type!r}")

    def _on_record(self, ev: SignalEvent) -> None:
        d = ev.data
        pairs = d.get("corr_by_class_pair") or {}
        selling = d.get("selling") or []
        if not isinstance(pairs, dict) or not isinstance(selling, list):
            raise TypeError("corr_by_class_pair must be an object and selling a list")
        active = d.get("active", False)
        if not isinstance(active, bool):
            raise TypeError(f"active={active!r} is not a boolean")
        rec = _Record(
            ev.ts_event_ns, _num(d.get("corr_avg")), {str(k): _num(v) for k, v in pairs.items()},
            _num(d.get("absorption_ratio")), _num(d.get("score")), active,
            tuple(str(s) for s in selling), _num(d.get("long_liq_z")),
        )  # fmt: skip
        if self.record is not None and rec.bar_start_ns <= self.record.bar_start_ns:
            self.duplicates += 1
            return
        self.record = rec
        self.records += 1
        episode = self.episodes[-1] if self.active else None
        if episode is not None and rec.score is not None:
            episode.peak_score = max(episode.peak_score or 0.0, rec.score)
        self.scores.append(rec.score)
        self.corrs.append(rec.corr_avg)

    def _on_event(self, ev: SignalEvent) -> None:
        if ev.id in self.seen_ids:
            self.duplicates += 1
            return
        d = ev.data
        if ev.type.startswith("cosell."):
            score, peak = _num(d.get("score")), _num(d.get("peak_score"))
            selling = [s.get("asset") for s in d.get("selling") or [] if isinstance(s, dict)]
            detail = f"score {_fmt(score)}  peak {_fmt(peak)}"
            detail += f"  selling {','.join(map(str, selling))}" if selling else ""
            if ev.type == "cosell.start":
                self.episodes.append(_Episode(ev.ts_event_ns, peak))
            elif self.episodes and self.episodes[-1].end_ns is None:
                self.episodes[-1].peak_score = max(self.episodes[-1].peak_score or 0.0, peak or 0.0)
                if ev.type == "cosell.end":
                    self.episodes[-1].end_ns = ev.ts_event_ns
        elif ev.type.startswith("liquidation."):
            z, mult = _num(d.get("z")), _num(d.get("multiple_of_normal"))
            detail = f"{_usd(_num(d.get('window_notional_usd')))} in window  z {_fmt(z, '.1f')}"
            detail += f"  ×{mult:.0f} normal" if mult is not None else ""
        else:
            avg = _num(d.get("average_annualized"))
            why = d.get("direction") or d.get("reason") or ""
            detail = f"{why}  avg {_fmt(None if avg is None else avg * 100, '+.1f')} %/yr"
        self.seen_ids.add(ev.id)
        self.signals += 1
        if ev.type.endswith(".peak"):  # a cascade peaks many times: show only its newest peak
            for old in [e for e in self.events if (e.type, e.subject) == (ev.type, ev.subject)]:
                self.events.remove(old)
        self.events.append(_Line(ev.ts_event_ns, ev.type, ev.subject, detail.strip()))

    # -- queries -----------------------------------------------------------------------------

    def closes(self) -> dict[str, float]:
        """The last close of each asset seen, in display order."""
        return {a: self.rows[a].close for a in self.order if a in self.rows}

    def flag_marks(self) -> list[tuple[str, int]]:
        """``(cosell.start|cosell.end, event time ns)`` of every episode seen, in order."""
        marks = []
        for e in self.episodes:
            marks.append(("cosell.start", e.start_ns))
            if e.end_ns is not None:
                marks.append(("cosell.end", e.end_ns))
        return marks

    @property
    def active(self) -> bool:
        """Whether a co-selling episode is open (started and not ended)."""
        return bool(self.episodes) and self.episodes[-1].end_ns is None

    @property
    def phase(self) -> str | None:
        """The scenario phase of the latest bar (None without a schedule or a bar)."""
        if self.schedule is None or self.event_time_ns is None:
            return None
        for interval in self.schedule.intervals:
            if interval.start_ns <= self.event_time_ns < interval.end_ns:
                return interval.phase
        return "before" if self.event_time_ns < self.schedule.start_ns else "ended"

    def summary_lines(self) -> list[str]:
        """Plain lines for the end of a run (and for logs and tests)."""
        score = None if self.record is None else self.record.score
        closes = "  ".join(
            f"{a} {format_price(r.close)} ({(r.close / r.first_close - 1) * 100:+.2f} %)"
            for a, r in ((a, self.rows[a]) for a in self.order if a in self.rows)
        )
        flags = "; ".join(
            f"cosell.start {format_time_ns(e.start_ns)} → "
            + (f"cosell.end {format_time_ns(e.end_ns)}" if e.end_ns is not None else "still on")
            for e in self.episodes
        )
        when = "—" if self.event_time_ns is None else format_time_ns(self.event_time_ns)
        return [
            f"demo: {self.bars} bars, {self.records} correlation records, {self.signals} signal "
            f"events, {self.invalid} invalid records; last bar {when}, phase {self.phase or '—'}",
            f"last closes (since first bar): {closes or '—'}",
            f"co-selling score {_fmt(score)}; flags: {flags or 'none'}",
        ]

    # -- rendering ---------------------------------------------------------------------------

    def render(self) -> RenderableType:
        """The whole view: header, prices | correlations, co-selling, events, notes."""
        top = Table.grid(padding=(0, 2))
        top.add_row(self._prices(), self._correlations())
        notes = Text("\n".join(self.notes), style="dim")
        return Group(self._header(), top, self._cosell(), self._events(), notes)

    def _header(self) -> Text:
        when = "—" if self.event_time_ns is None else format_time_ns(self.event_time_ns)
        text = Text("firesale demo", style="bold")
        text.append(f"  last bar {when}  phase ")
        text.append(self.phase or "—", style="bold red" if self.phase == "fire_sale" else "bold")
        text.append_text(self._phases())
        text.append(f"\nbars {self.bars}  correlation records {self.records}")
        text.append(f"  signal events {self.signals}  ")
        text.append(f"invalid records {self.invalid}", style="red" if self.invalid else "")
        if self.last_invalid:
            text.append(f" (last: {self.last_invalid})", style="red")
        return text

    def _prices(self) -> Table:
        table = Table("asset", "class", "close", "bar", "since start", "bar (UTC)",
                      title="prices (bars.v1)", title_justify="left")  # fmt: skip
        for name in self.order:
            r = self.rows.get(name)
            if r is None:
                table.add_row(name, "", "—", "", "", "")
                continue
            bar = "" if r.prev_close is None else f"{(r.close / r.prev_close - 1) * 100:+.2f} %"
            since = f"{(r.close / r.first_close - 1) * 100:+.2f} %"
            style = "red" if r.close < r.first_close else "green"
            table.add_row(
                name, r.asset_class, format_price(r.close) + (" stale" if r.stale else ""),
                bar, Text(since, style=style), format_time_ns(r.bar_start_ns)[11:16],
            )  # fmt: skip
        return table

    def _correlations(self) -> Table:
        table = Table("class pair", "corr", title="correlations (window)", title_justify="left")
        rec = self.record
        if rec is None:
            table.add_row("—", "—")
            return table
        for pair, value in rec.by_pair.items():
            table.add_row(pair, _fmt(value))
        table.add_row(Text("average", style="bold"), _fmt(rec.corr_avg))
        table.add_row(Text("absorption ratio", style="bold"), _fmt(rec.absorption_ratio))
        table.add_row("long liq. z", _fmt(rec.long_liq_z, ".1f"))
        return table

    def _cosell(self) -> Panel:
        rec = self.record
        score = None if rec is None else rec.score
        on = self.active
        text = Text("score ")
        text.append(_fmt(score), style="bold red" if on else "bold")
        if score is None and rec is not None:
            text.append(" (undefined while the detector warms up)", style="dim")
        if self.theta_on is not None and self.theta_off is not None:
            text.append(f"  (flag on ≥ {self.theta_on:g}, off < {self.theta_off:g})", style="dim")
        text.append("   ")
        text.append(" CO-SELLING " if on else " no flag ", style="bold white on red" if on else "")
        if rec is not None and rec.selling:
            text.append(f"  selling: {', '.join(rec.selling)}")
        text.append(f"\nscore     {sparkline(list(self.scores))}")
        text.append(f"\ncorr avg  {sparkline(list(self.corrs))}")
        for e in self.episodes[-2:]:
            end = "still on" if e.end_ns is None else f"cosell.end {format_time_ns(e.end_ns)}"
            text.append(f"\ncosell.start {format_time_ns(e.start_ns)} → {end}", style="red")
            text.append(f"  peak {_fmt(e.peak_score)}")
        return Panel(text, title="co-selling (signals.cosell.v1)", title_align="left")

    def _phases(self) -> Text:
        text = Text("\nscenario:")
        if self.schedule is None:
            return text.append(" —")
        for interval in self.schedule.intervals:
            now = interval.phase == self.phase
            text.append(" ▶" if now else "  ", style="bold")
            text.append(interval.phase, style="bold red" if now else "")
            text.append(f" {format_time_ns(interval.start_ns)[:16]}Z →")
        return text.append(f" end {format_time_ns(self.schedule.end_ns)[:16]}Z")

    def _events(self) -> Table:
        table = Table(title="signal events", title_justify="left", expand=True)
        for name in ("event time (UTC)", "type", "subject"):
            table.add_column(name, no_wrap=True)
        table.add_column("detail", no_wrap=True, overflow="ellipsis", ratio=1)
        for line in sorted(self.events, key=lambda e: e.ts_event_ns):
            style = "red" if line.type.startswith("cosell.") else ""
            table.add_row(format_time_ns(line.ts_event_ns), Text(line.type, style=style),
                          line.subject, line.detail)  # fmt: skip
        return table


# ---------------------------------------------------------------------------- running it


def scenario_start_ns(now_ns: int) -> int:
    """Where ``run_scenario_source`` starts the scenario: the minute of ``now_ns``.

    Examples
    --------
    >>> scenario_start_ns(1_762_214_459_999_999_999)
    1762214400000000000
    """
    return now_ns // 60_000_000_000 * 60_000_000_000


def _parse_iso_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000_000


@contextlib.contextmanager
def _child_output(path: Path) -> Iterator[None]:
    """Point fds 1 and 2 at ``path`` while a child process is spawned (it inherits them), so
    that its log lines do not scroll through the live view; ours are restored right after."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with path.open("ab") as out:
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            yield
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while a child is spawned: it inherits SIG_IGN through exec (POSIX
    ``execve``), and the JVM keeps an ignored SIGINT ignored (as for ``nohup``), so Ctrl-C at the
    terminal, which signals the whole foreground process group, does not stop the broker under
    the worker; the demo stops it (SIGTERM) after the worker."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def _open_consumer(bootstrap: str) -> Any:
    """A group-less consumer of :data:`VIEW_TOPICS`, positioned at their current ends."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka_security import client_kwargs

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, request_timeout_ms=15_000,
                                **client_kwargs())  # fmt: skip
    await consumer.start()
    try:
        consumer.subscribe(list(VIEW_TOPICS))  # no group: every partition is assigned to us
        deadline = time.monotonic() + 30
        while {tp.topic for tp in consumer.assignment()} != set(VIEW_TOPICS):
            if time.monotonic() > deadline:
                raise DemoError(f"{', '.join(VIEW_TOPICS)} not all found on {bootstrap}")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        for tp, offset in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, offset)  # only what this run's worker publishes
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def run_demo(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    console: Console,
    *,
    speed: float = DEFAULT_SPEED,
    seconds: float | None = None,
    live: bool = True,
    snapshot_every_s: float = 5.0,
    log_path: Path,
) -> DemoView:
    """Scenario source + ``firesale worker`` child + a consumer feeding a :class:`DemoView`.

    Runs until SIGINT/SIGTERM or ``seconds``; the worker is stopped (SIGTERM) before it
    returns. ``live`` shows the view with ``rich.live.Live`` (4 refreshes a second), else a
    plain snapshot is printed every ``snapshot_every_s``. The worker's output goes to
    ``log_path``. Kafka must be up with its topics.

    Raises
    ------
    DemoError
        The worker exited by itself, or the scenario source failed.
    """
    from aiokafka.errors import KafkaError
    from prometheus_client import CollectorRegistry, start_http_server

    from signals.detector_params import DetectorParams
    from streams.service import run_scenario_source, worker_process

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    params = ScenarioParams.preset(SCENARIO)
    cosell = DetectorParams.for_bar_interval(settings.bar_interval_s).cosell
    view = DemoView(
        [(a.name, a.asset_class) for a in universe.assets],
        phase_schedule(params, scenario_start_ns(time.time_ns())),
        theta_on=cosell.theta_on,
        theta_off=cosell.theta_off,
    )
    pending: list[str] = []

    def report(message: str) -> None:
        m = _PHASE_LINE.match(message)
        if m and m.group(1) == params.phases[0].name:  # the source's own start: authoritative
            view.schedule = phase_schedule(params, _parse_iso_ns(m.group(2)))
        view.note(message)
        pending.append(message)

    registry = CollectorRegistry()
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, settings.metrics_bind, registry=registry)
        except OSError as exc:
            report(f"connector metrics not served ({exc}); FIRESALE_METRICS_PORT=0 disables them")
    consumer = await _open_consumer(bootstrap)

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for rec in records:
                    view.feed(tp.topic, rec.value)

    async def source() -> None:
        await run_scenario_source(
            settings, universe, bootstrap, SCENARIO, speed, stop, registry, report
        )
        if not stop.is_set():
            report("scenario produced in full; the worker catches up. Ctrl-C to quit.")

    failures: list[str] = []
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            with _child_output(log_path):
                proc = stack.enter_context(worker_process(settings, bootstrap, report))
            source_task = asyncio.create_task(source(), name="scenario source")
            consume_task = asyncio.create_task(consume(), name="consumer")
            if seconds is not None:
                loop.call_later(seconds, stop.set)

            def check() -> None:
                for task in (source_task, consume_task):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        failures.append(f"the {task.get_name()} failed: {task.exception()!r}")
                if proc.poll() is not None:
                    failures.append(f"the stream worker exited with code {proc.returncode}")
                for kind, ts_ns in view.flag_marks()[len(flags_told) :]:
                    flags_told.append(kind)
                    elapsed = time.monotonic() - started
                    report(f"{kind} {format_time_ns(ts_ns)}: seen {elapsed:.0f} s into the demo")
                if failures:
                    stop.set()

            flags_told: list[str] = []
            await _show(view, console, stop, check, pending, live, snapshot_every_s)
            await asyncio.wait([source_task], timeout=30)  # it flushes what it produced
            consume_task.cancel()
            await asyncio.gather(source_task, consume_task, return_exceptions=True)
        try:  # the worker has stopped: read what it published last
            await _drain(consumer, view)
        except KafkaError as exc:
            report(f"the last records could not be read: {exc!r}")
    finally:
        await consumer.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for message in pending:
        console.print(message, markup=False, highlight=False)
    if failures:
        raise DemoError(f"{failures[0]}; its log: {log_path}")
    return view


async def _show(
    view: DemoView,
    console: Console,
    stop: asyncio.Event,
    check: Callable[[], None],
    pending: list[str],
    live: bool,
    snapshot_every_s: float,
) -> None:
    """Show ``view`` until ``stop``: Live at 4 frames a second, or plain snapshots."""
    started = time.monotonic()
    next_snapshot = started + snapshot_every_s
    with contextlib.ExitStack() as screen:
        shown: Live | None = None
        if live:
            shown = screen.enter_context(Live(view.render(), console=console, auto_refresh=False))
        while not stop.is_set():
            await asyncio.sleep(0.25)
            check()
            if shown is not None:
                # refreshed here, not by Live's thread: the view is not thread-safe
                shown.update(view.render(), refresh=True)
            else:
                for message in pending:
                    console.print(message, markup=False, highlight=False)
                if time.monotonic() >= next_snapshot or stop.is_set():
                    elapsed = time.monotonic() - started
                    console.print(Rule(f"snapshot at {elapsed:.0f} s", align="left"))
                    console.print(view.render())
                    next_snapshot += snapshot_every_s
            pending.clear()


async def _drain(consumer: Any, view: DemoView, timeout_s: float = 15.0) -> None:
    """Feed ``view`` everything up to the topics' current ends."""
    tps = list(consumer.assignment())
    ends = await consumer.end_offsets(tps)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
            return
        for tp, records in (await consumer.getmany(timeout_ms=200)).items():
            for rec in records:
                view.feed(tp.topic, rec.value)


def demo(
    settings: Settings,
    universe: Universe,
    console: Console,
    *,
    speed: float = DEFAULT_SPEED,
    seconds: float | None = None,
    live: bool = True,
) -> DemoView:
    """``firesale demo``: Kafka (a fresh embedded broker unless FIRESALE_KAFKA_BOOTSTRAP is
    set), its topics, then :func:`run_demo`; stops the broker it started. Prints a summary."""
    from deploy.kafka import broker
    from streams.topics import ensure_topics

    if "bar_interval_s" not in settings.model_fields_set:
        settings = settings.model_copy(update={"bar_interval_s": DEMO_BAR_INTERVAL_S})
        os.environ["FIRESALE_BAR_INTERVAL_S"] = str(DEMO_BAR_INTERVAL_S)  # the worker's env
    if not live and not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120, soft_wrap=True)  # a pipe: the live layout, not 80 columns
    log_path = Path(tempfile.gettempdir()) / f"firesale-demo-{os.getpid()}.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    home: Path | None = None
    try:
        if settings.kafka_bootstrap is None:
            home = Path(tempfile.mkdtemp(prefix="firesale-demo-kafka-"))
            console.print(f"starting a fresh embedded Kafka in {home} ...", highlight=False)
            with _sigint_ignored():  # a terminal Ctrl-C must not kill it before the worker
                bootstrap = broker.start(home, None, detach=False).bootstrap
        else:
            bootstrap = settings.kafka_bootstrap
        asyncio.run(ensure_topics(bootstrap))
        console.print(
            f"Kafka {bootstrap}; {len(universe.assets)} assets, {settings.bar_interval_s} s bars, "
            f"speed {speed:g}x; worker and demo log: {log_path}",
            highlight=False,
        )
        view = asyncio.run(
            run_demo(settings, universe, bootstrap, console, speed=speed, seconds=seconds,
                     live=live, log_path=log_path)
        )  # fmt: skip
    finally:
        if home is not None:
            with contextlib.suppress(broker.BrokerNotRunningError):
                broker.stop(home)
            shutil.rmtree(home, ignore_errors=True)
            console.print("embedded Kafka stopped and removed")
    for line in view.summary_lines():
        console.print(line, markup=False, highlight=False)
    return view
