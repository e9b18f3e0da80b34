"""The stream processing of one worker, independent of faust: ticks in, bars and signals out.

:class:`Pipeline` holds a worker's state and turns decoded records into records to publish:

- ``on_price``: the asset's primary price source (the first venue listed for it in the
  universe; mark or trade prices, never the index, which freezes off-hours) feeds the
  event-time :class:`~signals.bars.BarBuilder`; closed bars go to ``bars.v1``.
- ``on_gap``: a gap marker on the primary venue's channel marks the bars it overlaps as
  stale, so no return is computed across missing data.
- ``on_bar``: :class:`~streams.assembly.BarAssembler` rebuilds cross-sections from
  ``bars.v1``; :class:`~signals.detector.MarketDetector` computes the per-bar record
  (``signals.correlation.v1``) and the co-selling events (``signals.cosell.v1``).
- ``on_liquidation`` / ``on_funding``: cascades and funding stress (``signals.liquidation.v1``,
  ``signals.funding.v1``) through the same detector.
- ``tick(now_ns)``: the idle timeout of the bar builder (processing time passed in).

The faust agents in :mod:`streams.worker` only decode, call these, and send what they return.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from signals.bars import BarBuilder, BarSet
from signals.detector import BarSignals, MarketDetector
from signals.detector_params import DetectorParams
from signals.detector_params import SignalEvent as SignalSource
from streams.assembly import BarAssembler
from streams.config import Universe
from streams.events import BarEvent, Funding, GapMarker, Liquidation, PriceTick, SignalEvent, encode
from streams.metrics import PipelineMetrics
from streams.signal_events import correlation_record, key_for, signal_event, topic_for

log = logging.getLogger("firesale.pipeline")

PRICE_KINDS = frozenset({"mark", "trade", "mid"})


@dataclass(frozen=True, slots=True)
class Out:
    """One record to publish."""

    topic: str
    key: bytes
    value: bytes


@dataclass(slots=True)
class _Gaps:
    """Gap intervals per venue (a few recent ones are enough: bars close within seconds)."""

    by_venue: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, venue: str, from_ns: int, to_ns: int) -> None:
        spans = self.by_venue.setdefault(venue, [])
        spans.append((from_ns, to_ns))
        del spans[:-64]

    def overlaps(self, venue: str, start_ns: int, end_ns: int) -> bool:
        return any(a < end_ns and b > start_ns for a, b in self.by_venue.get(venue, ()))


class Pipeline:
    """One worker's state: bar building, cross-section assembly and the market detector."""

    def __init__(
        self,
        universe: Universe,
        interval_s: int,
        metrics: PipelineMetrics,
        params: DetectorParams | None = None,
        grace_s: float = 2.0,
        idle_timeout_s: float | None = 10.0,
        max_jump_s: float = 6 * 3600,
    ) -> None:
        self.universe = universe
        self.interval_s = interval_s
        self.metrics = metrics
        names = universe.names
        self.primary: dict[tuple[str, str], str] = {}
        self.primary_venue: dict[str, str] = {}
        for asset in universe.assets:
            venue, symbol = next(iter(asset.symbols.items()))
            self.primary[venue, symbol] = asset.name
            self.primary_venue[asset.name] = venue
        self.classes = {a.name: a.asset_class for a in universe.assets}
        self.builder = BarBuilder(names, interval_s, grace_s=grace_s, idle_timeout_s=idle_timeout_s)
        self.assembler = BarAssembler(names, interval_s)
        self.detector = MarketDetector(
            names,
            [a.asset_class for a in universe.assets],
            interval_s,
            params or DetectorParams.for_bar_interval(interval_s),
        )
        self.gaps = _Gaps()
        self.seen_assets: set[str] = set()
        self.max_jump_ns = int(max_jump_s * 1_000_000_000)
        self._grace_s = grace_s
        self._idle_timeout_s = idle_timeout_s

    # -- ticks → bars -------------------------------------------------------------------------

    def on_price(self, tick: PriceTick, now_ns: int) -> list[Out]:
        """Feed a price tick of the asset's primary source; return the bars it closes.

        ``now_ns`` is this worker's processing time, not the tick's ``ts_recv_ns``: the idle
        timeout (:meth:`tick`) compares processing times, and replayed or simulated ticks
        carry receive times of another clock (a year-old recording would otherwise close a
        year of stale bars at once).
        """
        asset = self.primary.get((tick.venue, tick.symbol))
        if asset is None or tick.kind not in PRICE_KINDS:
            return []
        self.seen_assets.add(asset)
        watermark = self.builder.watermark_ns
        if watermark is not None and tick.ts_event_ns - watermark > self.max_jump_ns:
            # Event time leapt ahead (a resumed replay, an old backlog, a clock in the future):
            # start a fresh grid instead of closing every bar in between as stale.
            log.warning(
                "%s: event time jumped %.1f h ahead of the bar watermark: new bar grid",
                asset,
                (tick.ts_event_ns - watermark) / 3.6e12,
            )
            self.metrics.time_jumps.inc()
            self.builder = BarBuilder(
                self.universe.names,
                self.interval_s,
                grace_s=self._grace_s,
                idle_timeout_s=self._idle_timeout_s,
            )
        late_before = self.builder.late_count(asset)
        closed = self.builder.add_tick(asset, tick.ts_event_ns, tick.price, now_ns)
        if self.builder.late_count(asset) > late_before:
            self.metrics.late_ticks.labels(asset).inc()
        return self._bars(closed)

    def on_gap(self, gap: GapMarker) -> None:
        """Remember a gap: bars of that venue's assets overlapping it become stale."""
        self.gaps.add(gap.venue, gap.from_ns, gap.to_ns)

    def tick(self, now_ns: int) -> list[Out]:
        """Advance the bar builder on processing time (an idle source cannot stall bars)."""
        return self._bars(self.builder.advance(now_ns))

    def _bars(self, sets: Iterable[BarSet]) -> list[Out]:
        out: list[Out] = []
        for bar_set in sets:
            end_ns = bar_set.bar_start_ns + self.interval_s * 1_000_000_000
            for bar in bar_set.bars:
                if bar.asset not in self.seen_assets or bar.asset in bar_set.excluded:
                    continue
                stale = bar.stale or self.gaps.overlaps(
                    self.primary_venue[bar.asset], bar_set.bar_start_ns, end_ns
                )
                event = BarEvent(
                    asset=bar.asset,
                    asset_class=self.classes[bar.asset],
                    bar_start_ns=bar.bar_start_ns,
                    interval_s=bar.interval_s,
                    close=bar.close,
                    n_ticks=bar.n_ticks,
                    stale=stale,
                )
                out.append(Out("bars.v1", bar.asset.encode(), encode(event)))
        return out

    # -- bars → signals -----------------------------------------------------------------------

    def on_bar(self, bar: BarEvent, ts_emit_ns: int) -> list[Out]:
        """Take one bar of ``bars.v1``; return the signal records of every completed bar."""
        out: list[Out] = []
        for bar_start_ns, closes in self.assembler.add(
            bar.asset, bar.bar_start_ns, bar.close, bar.stale
        ):
            signals = self.detector.on_bar(bar_start_ns, closes)
            self.metrics.observe_bar(signals, ts_emit_ns, self.interval_s)
            out.append(self._correlation_record(signals, ts_emit_ns))
            out.extend(self._events(signals.events, ts_emit_ns))
        return out

    def on_liquidation(self, liq: Liquidation, ts_emit_ns: int) -> list[Out]:
        """Feed a liquidation to the cascade detector; return cascade events."""
        if liq.asset not in self.classes:
            return []
        self.metrics.liquidations.labels(liq.venue, liq.asset, liq.liquidated_side).inc(
            liq.notional_usd
        )
        events = self.detector.on_liquidation(
            liq.ts_event_ns,
            liq.asset,
            liq.liquidated_side,
            liq.notional_usd,
            liq.completeness == "complete",
        )
        return self._events(events, ts_emit_ns)

    def on_funding(self, fund: Funding, ts_emit_ns: int) -> list[Out]:
        """Feed a funding rate to the funding-stress detector; return its events."""
        if fund.asset not in self.classes:
            return []
        self.metrics.funding.labels(fund.venue, fund.asset).set(fund.rate_annualized)
        events = self.detector.on_funding(
            fund.ts_event_ns, fund.asset, fund.venue, fund.rate_annualized, fund.open_interest_usd
        )
        return self._events(events, ts_emit_ns)

    def _correlation_record(self, signals: BarSignals, ts_emit_ns: int) -> Out:
        return _out(correlation_record(signals, ts_emit_ns))

    def _events(self, events: Iterable[SignalSource], ts_emit_ns: int) -> list[Out]:
        out: list[Out] = []
        for source in events:
            event = signal_event(source, ts_emit_ns)
            self.metrics.signal_events.labels(event.type).inc()
            out.append(_out(event))
        return out


def _out(event: SignalEvent) -> Out:
    return Out(topic_for(event), key_for(event), encode(event))
