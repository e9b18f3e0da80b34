"""Scenario source: the synthetic market of :mod:`connectors.scenario.model` onto the tick topics.

A connector like the venue ones: events go to the same topics with the same keys
(``connectors.runner.TOPIC_OF``; key ``venue:symbol``; value ``streams.events.encode``), so the
workers cannot tell a scenario from live venues except by the figures.

Time: ``ts_event_ns`` runs on a simulated timeline that starts at ``start_ns``; with ``speed`` =
X, an event is put when ``(ts_event_ns − start_ns) / X`` of wall time (``clock``) has passed since
the call (late events go at once: the source catches up rather than skips); ``speed=None`` puts
them as fast as the sink takes them. ``ts_recv_ns`` equals ``ts_event_ns``: a simulated feed has
no network, and a receive time on the wall clock would be meaningless on the simulated timeline
(event-time lag metrics then measure the pipeline only).

Ground truth: the labelled phase intervals (:class:`~connectors.scenario.model.PhaseInterval`)
are written as JSON lines to ``labels_path`` before the first event, one object per phase::

    {"phase": "fire_sale", "start_ns": ..., "end_ns": ..., "start": "<ISO>", "end": "<ISO>"}
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connectors.metrics import ConnectorMetrics
from connectors.runner import KIND_OF, TOPIC_OF, Sink
from connectors.scenario.model import (
    AssetSpec,
    PhaseSchedule,
    ScenarioParams,
    generate,
    phase_schedule,
)
from signals.errors import InvalidInputError
from streams.events import encode

log = logging.getLogger("firesale.connectors.scenario")

YIELD_EVERY = 1_000
SCENARIO_CONNECTION = "scenario"
"""At ``speed=None``, hand the event loop back every this many events (``stop`` is honoured)."""


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """What :func:`run_scenario` did."""

    events: int
    """Events handed to the sink."""
    refused: int
    """Events the sink refused (``put`` returned False)."""
    by_topic: Mapping[str, int]
    """Events per topic."""
    last_ts_event_ns: int | None
    """Event time of the last event put (None if none)."""
    completed: bool
    """True when the whole schedule was emitted, False when ``stop`` ended it."""


def write_labels(path: Path, schedule: PhaseSchedule) -> None:
    """Write the phase intervals as JSON lines (one object per phase, in order)."""
    lines = b"".join(orjson.dumps(i.to_dict()) + b"\n" for i in schedule.intervals)
    path.write_bytes(lines)


async def _stopped_within(stop: asyncio.Event, delay_s: float) -> bool:
    """Sleep up to ``delay_s``; True as soon as ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        return False
    return True


async def run_scenario(
    sink: Sink,
    params: ScenarioParams,
    assets: Sequence[AssetSpec],
    start_ns: int,
    speed: float | None,
    stop: asyncio.Event,
    clock: Callable[[], int] = time.time_ns,
    labels_path: Path | None = None,
    *,
    seed: int = 0,
    metrics: ConnectorMetrics | None = None,
) -> ScenarioRun:
    """Emit the scenario's events onto ``sink`` until the schedule ends or ``stop`` is set.

    Parameters
    ----------
    sink
        Where messages go (:class:`connectors.sink.KafkaSink` in production).
    params, assets, start_ns, seed
        As for :func:`connectors.scenario.model.generate` (same inputs, same events).
    speed
        Simulated seconds per wall second (> 0), or None for as fast as possible.
    stop
        Set it to end the run early (checked before every event and while waiting).
    clock
        Wall clock in ns (pacing only).
    labels_path
        If given, the phase intervals are written there as JSON lines first.
    metrics
        If given, ``ticks`` counts the events by venue and kind, as for live venues, and each
        venue shows as connection ``scenario``: up while the run lasts, its last message time
        the wall clock of its latest event.

    Examples
    --------
    >>> import asyncio
    >>> from streams.config import load_universe
    >>> from connectors.scenario.model import Phase
    >>> class Print:
    ...     async def put(self, topic: str, key: bytes, value: bytes) -> bool:
    ...         e = orjson.loads(value)
    ...         if key == b"bybit:SPYUSDT" and e.get("kind") == "mark":
    ...             print(topic, key.decode(), e["ts_event_ns"], round(e["price"], 1))
    ...         return True
    >>> p = ScenarioParams.preset("calm", phases=(Phase("calm", 2),))
    >>> run = asyncio.run(run_scenario(Print(), p, load_universe().assets, 0, None,
    ...                                asyncio.Event(), seed=1))
    ticks.price.v1 bybit:SPYUSDT 261000000 680.0
    ticks.price.v1 bybit:SPYUSDT 1261000000 680.0
    >>> run.completed, run.refused, sorted(run.by_topic)
    (True, 0, ['ticks.funding.v1', 'ticks.liquidation.v1', 'ticks.price.v1'])
    """
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise InvalidInputError(f"speed={speed!r}: give a finite speed > 0, or None (no pacing)")
    schedule = phase_schedule(params, start_ns)
    if labels_path is not None:
        write_labels(labels_path, schedule)
    log.info(
        "scenario: %s from %s, %.1f h simulated, speed %s",
        " → ".join(f"{i.phase} {(i.end_ns - i.start_ns) / 3.6e12:g} h" for i in schedule.intervals),
        schedule.intervals[0].to_dict()["start"],
        (schedule.end_ns - schedule.start_ns) / 3.6e12,
        "max" if speed is None else f"{speed:g}x",
    )
    by_topic: dict[str, int] = {}
    count = refused = 0
    last: int | None = None
    wall0 = clock()
    completed = True
    # Each venue the scenario emits for is one "scenario" connection for the feed metrics (up
    # from its first event to the end of the run, last message = wall clock of its latest
    # event): dashboards and feed alerts work offline.
    last_seen: dict[str, Any] = {}
    for tick in generate(params, assets, start_ns, seed):
        event = tick.event
        if speed is not None:
            delay_s = (wall0 + (event.ts_event_ns - start_ns) / speed - clock()) / 1e9
            if delay_s > 0 and await _stopped_within(stop, delay_s):
                completed = False
                break
        if count % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if stop.is_set():
            completed = False
            break
        topic = TOPIC_OF[type(event)]
        if not await sink.put(topic, f"{event.venue}:{event.symbol}".encode(), encode(event)):
            refused += 1
        if metrics is not None:
            metrics.ticks.labels(event.venue, KIND_OF[type(event)]).inc()
            gauge = last_seen.get(event.venue)
            if gauge is None:
                metrics.connection_up.labels(event.venue, SCENARIO_CONNECTION).set(1)
                gauge = last_seen[event.venue] = metrics.last_message.labels(
                    event.venue, SCENARIO_CONNECTION
                )
            gauge.set(clock() / 1e9)
        by_topic[topic] = by_topic.get(topic, 0) + 1
        count += 1
        last = event.ts_event_ns
    if metrics is not None:
        for venue in last_seen:
            metrics.connection_up.labels(venue, SCENARIO_CONNECTION).set(0)
    log.info("scenario %s: %d events (%d refused by the sink)",
             "done" if completed else "stopped", count, refused)  # fmt: skip
    return ScenarioRun(count, refused, by_topic, last, completed)
