"""The market stage: every asset's bars plus liquidations, funding and gaps, in one place.

It consumes four single-partition topics — ``bars.v1``, ``ticks.liquidation.v1``,
``ticks.funding.v1`` and ``ticks.gap.v1`` — which faust assigns to one worker together (topics
with the same partition count are co-partitioned). Each bar's cross-section goes through
:class:`~signals.detector.MarketDetector` (``signals.correlation.v1``, ``signals.cosell.v1``);
liquidations and funding feed its cascade and funding-stress detectors
(``signals.liquidation.v1``, ``signals.funding.v1``).

**Determinism.** The four topics arrive interleaved as the consumer happens to fetch them, yet
a restarted worker must publish exactly what an uninterrupted one did. So the side inputs
(liquidations, funding, gaps) wait in log order, and bar ``t`` is processed only after every
side input either has been read past the bar's end (its queue holds a record with a later
event time) or is at the head of its log (nothing more to read now). Before bar ``t`` the
detector is fed, in log order, the queued records up to the first one later than the bar's
end. What the detector sees therefore depends on the logs' contents only, not on fetch
timing — except when a side input is at its head and a record for an earlier time is written
afterwards (live lateness), or when a bar has waited ``max_wait_s`` of processing time for a
side input (counted in ``firesale_side_input_forced``).

**Gaps.** A gap marker of a venue makes that venue's assets NaN in every bar it overlaps: no
return is computed across missing data (a forward-filled close would make a zero return).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from signals.detector import MarketDetector
from signals.detector_params import DetectorParams
from signals.detector_params import SignalEvent as SignalSource
from streams.assembly import BarAssembler
from streams.config import Universe
from streams.events import BarEvent, Funding, GapMarker, Liquidation, SignalEvent, encode
from streams.metrics import PipelineMetrics
from streams.signal_events import correlation_record, key_for, signal_event, topic_for
from streams.tick_stage import Out

log = logging.getLogger("firesale.market")

LIQUIDATIONS = "ticks.liquidation.v1"
FUNDING = "ticks.funding.v1"
GAPS = "ticks.gap.v1"
SIDE_TOPICS = (LIQUIDATIONS, FUNDING, GAPS)
INPUT_TOPICS = ("bars.v1", *SIDE_TOPICS)

SideRecord = Liquidation | Funding | GapMarker


def _time_of(record: SideRecord) -> int:
    return record.to_ns if isinstance(record, GapMarker) else record.ts_event_ns


@dataclass(slots=True)
class _Gaps:
    """Gap intervals per venue (the recent ones: bars are processed within seconds)."""

    by_venue: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, venue: str, from_ns: int, to_ns: int) -> None:
        spans = self.by_venue.setdefault(venue, [])
        spans.append((from_ns, to_ns))
        del spans[:-64]

    def overlaps(self, venue: str, start_ns: int, end_ns: int) -> bool:
        return any(a < end_ns and b > start_ns for a, b in self.by_venue.get(venue, ()))


class MarketStage:
    """Cross-sections, side inputs and the market detector of one worker."""

    def __init__(
        self,
        universe: Universe,
        interval_s: int,
        metrics: PipelineMetrics,
        params: DetectorParams | None = None,
        at_head: Callable[[str], bool] = lambda topic: True,
        max_wait_s: float = 10.0,
        max_queued: int = 1_000_000,
        dropout_wait_s: float = 60.0,
    ) -> None:
        self.universe = universe
        self.interval_s = interval_s
        self.interval_ns = interval_s * 1_000_000_000
        self.metrics = metrics
        self.at_head = at_head
        self.max_wait_ns = int(max_wait_s * 1e9)
        self.max_queued = max_queued
        names = universe.names
        self.classes = {a.name: a.asset_class for a in universe.assets}
        self.primary_venue = {a.name: next(iter(a.symbols)) for a in universe.assets}
        self.assembler = BarAssembler(names, interval_s, max_wait_s, dropout_wait_s)
        self.detector = MarketDetector(
            names,
            [a.asset_class for a in universe.assets],
            interval_s,
            params or DetectorParams.for_bar_interval(interval_s),
        )
        self.queues: dict[str, deque[SideRecord]] = {t: deque() for t in SIDE_TOPICS}
        self.ready: deque[tuple[int, NDArray[np.float64]]] = deque()
        self.produced: dict[int, int] = {}  # bar start -> latest Kafka time of a closing tick
        self.gaps = _Gaps()
        self.waiting_since_ns: int | None = None
        self.replaying = False  # rebuilding state from the logs: no metrics, no waiting

    # -- inputs ---------------------------------------------------------------------------------

    def on_bar(self, bar: BarEvent, now_ns: int) -> list[Out]:
        """Take one record of ``bars.v1``; return what the bars it completes publish."""
        if bar.tick_produced_ns is not None:
            prev = self.produced.get(bar.bar_start_ns, 0)
            self.produced[bar.bar_start_ns] = max(prev, bar.tick_produced_ns)
        self.ready.extend(
            self.assembler.add(bar.asset, bar.bar_start_ns, bar.close, bar.stale, now_ns)
        )
        return self.drain(now_ns)

    def on_liquidation(self, liq: Liquidation, now_ns: int) -> list[Out]:
        """Queue one liquidation for the bar it belongs to."""
        if liq.asset not in self.classes:
            return []
        if not self.replaying:
            self.metrics.liquidations.labels(liq.venue, liq.asset, liq.liquidated_side).inc(
                liq.notional_usd
            )
        return self._side(LIQUIDATIONS, liq, now_ns)

    def on_funding(self, fund: Funding, now_ns: int) -> list[Out]:
        """Queue one funding observation for the bar it belongs to."""
        if fund.asset not in self.classes:
            return []
        if not self.replaying:
            self.metrics.funding.labels(fund.venue, fund.asset).set(fund.rate_annualized)
        return self._side(FUNDING, fund, now_ns)

    def on_gap(self, gap: GapMarker, now_ns: int) -> list[Out]:
        """Queue a connector's gap marker for the bars it overlaps."""
        return self._side(GAPS, gap, now_ns)

    def tick(self, now_ns: int) -> list[Out]:
        """Processing time passes: release a bar that has waited too long for an input."""
        if not self.replaying:
            expired = self.assembler.expire(now_ns)
            if expired:
                self.metrics.side_input_forced.labels("bars.v1").inc(len(expired))
                log.warning(
                    "bar %d released without %s (declared absent until they report)",
                    expired[0][0],
                    sorted(self.assembler.absent),
                )
            self.ready.extend(expired)
        return self.drain(now_ns)

    def _side(self, topic: str, record: SideRecord, now_ns: int) -> list[Out]:
        queue = self.queues[topic]
        queue.append(record)
        out: list[Out] = []
        if len(queue) > self.max_queued:  # bars have stopped: never hold unbounded memory
            self.metrics.side_input_forced.labels(topic).inc()
            out += self._feed(topic, [queue.popleft()], now_ns)
        return out + self.drain(now_ns)

    # -- processing -----------------------------------------------------------------------------

    def drain(self, now_ns: int) -> list[Out]:
        """Process every ready bar whose side inputs have caught up (see the module notes)."""
        out: list[Out] = []
        while self.ready:
            t, closes = self.ready[0]
            end_ns = t + self.interval_ns
            blocked = []
            for topic, queue in self.queues.items():
                due = []
                while queue and _time_of(queue[0]) <= end_ns:
                    due.append(queue.popleft())
                out += self._feed(topic, due, now_ns)
                if not queue and (self.replaying or not self.at_head(topic)):
                    blocked.append(topic)
            if blocked:
                if self.replaying:
                    break
                if self.waiting_since_ns is None:
                    self.waiting_since_ns = now_ns
                if now_ns - self.waiting_since_ns < self.max_wait_ns:
                    break
                for topic in blocked:
                    self.metrics.side_input_forced.labels(topic).inc()
                log.warning("bar %d processed without waiting longer for %s", t, blocked)
            self.waiting_since_ns = None
            self.ready.popleft()
            out += self._process_bar(t, closes, now_ns)
        return out

    def _feed(self, topic: str, records: Iterable[SideRecord], now_ns: int) -> list[Out]:
        events: list[SignalSource] = []
        for r in records:
            if isinstance(r, Liquidation):
                events += self.detector.on_liquidation(
                    r.ts_event_ns,
                    r.asset,
                    r.liquidated_side,
                    r.notional_usd,
                    r.completeness == "complete",
                )
            elif isinstance(r, Funding):
                events += self.detector.on_funding(
                    r.ts_event_ns, r.asset, r.venue, r.rate_annualized, r.open_interest_usd
                )
            else:
                self.gaps.add(r.venue, r.from_ns, r.to_ns)
        return self._events(events, now_ns)

    def _process_bar(self, t: int, closes: NDArray[np.float64], now_ns: int) -> list[Out]:
        end_ns = t + self.interval_ns
        head = self.queues[GAPS][0] if self.queues[GAPS] else None
        front = head if isinstance(head, GapMarker) else None
        for i, asset in enumerate(self.assembler.assets):
            venue = self.primary_venue[asset]
            if self.gaps.overlaps(venue, t, end_ns) or (
                front is not None
                and front.venue == venue
                and front.from_ns < end_ns
                and front.to_ns > t
            ):
                closes[i] = np.nan
        signals = self.detector.on_bar(t, closes)
        produced = self.produced.pop(t, None)
        for stale in [k for k in self.produced if k < t]:
            del self.produced[stale]
        if not self.replaying:
            self.metrics.observe_bar(signals, now_ns, self.interval_s)
            if produced is not None and now_ns >= produced:
                self.metrics.tick_signal_latency.observe((now_ns - produced) / 1e9)
        return [_out(correlation_record(signals, now_ns)), *self._events(signals.events, now_ns)]

    def _events(self, events: Iterable[SignalSource], now_ns: int) -> list[Out]:
        out: list[Out] = []
        for source in events:
            event = signal_event(source, now_ns)
            if not self.replaying:
                self.metrics.observe_event(event.type, event.subject)
            out.append(_out(event))
        return out


def _out(event: SignalEvent) -> Out:
    return Out(topic_for(event), key_for(event), encode(event))
