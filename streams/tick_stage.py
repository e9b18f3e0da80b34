"""Ticks to bars, per partition of ``ticks.price.v1``: the stage that scales out with workers.

Each partition a worker holds gets its own :class:`~signals.bars.BarBuilder` (its own watermark)
over the assets whose *primary* price source (the first venue listed for the asset in the
universe; mark or trade prices, never the index, which freezes off-hours) is keyed onto it.
Closed bars go to ``bars.v1``. The builder is a pure function of the partition's records in
offset order (plus the idle timeout, which reads processing time), so a worker that takes a
partition over resumes exactly where the last owner stopped: it restores the owner's last
checkpoint (builder state plus the offset it reflects) and re-applies the records after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from signals.bars import BarBuilder, BarSet
from streams.config import Universe
from streams.events import BarEvent, PriceTick, encode
from streams.metrics import PipelineMetrics

log = logging.getLogger("firesale.bars")

PRICE_KINDS = frozenset({"mark", "trade", "mid"})
CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Out:
    """One record to publish."""

    topic: str
    key: bytes
    value: bytes


@dataclass(slots=True)
class _Partition:
    builder: BarBuilder
    offset: int = -1  # last input offset reflected in the builder
    seen: set[str] = field(default_factory=set)


class TickStage:
    """Bar building for the ``ticks.price.v1`` partitions this worker holds."""

    def __init__(
        self,
        universe: Universe,
        interval_s: int,
        metrics: PipelineMetrics,
        grace_s: float = 2.0,
        idle_timeout_s: float | None = 10.0,
        max_jump_s: float = 6 * 3600,
        max_early_s: float = 5.0,
    ) -> None:
        self.universe = universe
        self.max_early_ns = int(max_early_s * 1e9)
        self.interval_s = interval_s
        self.metrics = metrics
        self.primary: dict[tuple[str, str], str] = {}
        for asset in universe.assets:
            venue, symbol = next(iter(asset.symbols.items()))
            self.primary[venue, symbol] = asset.name
        self.classes = {a.name: a.asset_class for a in universe.assets}
        self.max_jump_ns = int(max_jump_s * 1_000_000_000)
        self.grace_s = grace_s
        self.idle_timeout_s = idle_timeout_s
        self.parts: dict[int, _Partition] = {}

    def _builder(self) -> BarBuilder:
        return BarBuilder(
            self.universe.names,
            self.interval_s,
            grace_s=self.grace_s,
            idle_timeout_s=self.idle_timeout_s,
        )

    def holds(self, partition: int) -> bool:
        """Whether this stage has state for ``partition`` (else it must be restored first)."""
        return partition in self.parts

    def start(self, partition: int, offset: int = -1) -> None:
        """Fresh state for ``partition``, reflecting every record before ``offset + 1``."""
        self.parts[partition] = _Partition(self._builder(), offset)

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked: another worker owns it now)."""
        self.parts.pop(partition, None)

    def on_price(
        self,
        partition: int,
        offset: int,
        tick: PriceTick,
        now_ns: int,
        produced_ns: int | None = None,
    ) -> list[Out]:
        """Apply one record of ``partition``; return the bars it closes.

        A record at or below the partition's checkpointed offset is already in the state and
        is skipped (a worker restarted behind its last checkpoint). ``now_ns`` is processing
        time (the idle timeout compares processing times; replayed ticks carry receive times
        of another clock); ``produced_ns`` is the record's Kafka timestamp, carried in the
        bars it closes so the market stage can measure tick-to-signal latency.
        """
        part = self.parts.get(partition)
        if part is None:
            part = self.parts[partition] = _Partition(self._builder())
        if offset <= part.offset:
            return []
        part.offset = offset
        asset = self.primary.get((tick.venue, tick.symbol))
        if asset is None or tick.kind not in PRICE_KINDS:
            return []
        if tick.ts_event_ns - tick.ts_recv_ns > self.max_early_ns:
            # Stamped in the future by the venue's clock (skew, a bad frame): taken as is, it
            # would move the watermark ahead and make every honest tick after it late.
            self.metrics.early_ticks.labels(asset).inc()
            return []
        part.seen.add(asset)
        watermark = part.builder.watermark_ns
        if watermark is not None and tick.ts_event_ns - watermark > self.max_jump_ns:
            # Event time leapt ahead (a resumed replay, an old backlog, a clock in the future):
            # start a fresh grid instead of closing every bar in between as stale.
            log.warning(
                "%s: event time jumped %.1f h ahead of the bar watermark: new bar grid",
                asset,
                (tick.ts_event_ns - watermark) / 3.6e12,
            )
            self.metrics.time_jumps.inc()
            part.builder = self._builder()
        late_before = part.builder.late_count(asset)
        closed = part.builder.add_tick(asset, tick.ts_event_ns, tick.price, now_ns)
        if part.builder.late_count(asset) > late_before:
            self.metrics.late_ticks.labels(asset).inc()
        return self._bars(part, closed, produced_ns)

    def advance(
        self, now_ns: int, answered: Callable[[int], bool] = lambda partition: True
    ) -> dict[int, list[Out]]:
        """Apply the idle timeout on processing time; the bars it closes, by partition.

        ``answered(partition)`` says whether the broker answered a fetch of the partition
        recently. Silence is only idleness when it did: with the broker down, the ticks are
        waiting in the connectors' buffers, and closing their bars now would make them late.
        """
        out: dict[int, list[Out]] = {}
        for partition, part in self.parts.items():
            if not answered(partition):
                continue
            bars = self._bars(part, part.builder.advance(now_ns), None)
            if bars:
                out[partition] = bars
        return out

    def _bars(self, part: _Partition, sets: Iterable[BarSet], produced_ns: int | None) -> list[Out]:
        out: list[Out] = []
        for bar_set in sets:
            for bar in bar_set.bars:
                # Every seen asset gets a bar at every grid time, stale when no tick came (the
                # market stage waits for the assets that report); never-priced ones cannot.
                if bar.asset not in part.seen or math.isnan(bar.close):
                    continue
                event = BarEvent(
                    asset=bar.asset,
                    asset_class=self.classes[bar.asset],
                    bar_start_ns=bar.bar_start_ns,
                    interval_s=bar.interval_s,
                    close=bar.close,
                    n_ticks=bar.n_ticks,
                    stale=bar.stale,
                    tick_produced_ns=produced_ns,
                )
                out.append(Out("bars.v1", bar.asset.encode(), encode(event)))
        return out

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint(self, partition: int) -> bytes:
        """The partition's state and the offset it reflects, as one JSON record."""
        part = self.parts[partition]
        doc: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "partition": partition,
            "offset": part.offset,
            "seen": sorted(part.seen),
            "builder": part.builder.state(),
        }
        return orjson.dumps(doc)

    def restore(self, partition: int, blob: bytes) -> int:
        """Resume ``partition`` from :meth:`checkpoint` output; return the offset it reflects.

        Raises ``ValueError`` (with the reason) for a checkpoint of another version, bar
        interval or universe: the caller then rebuilds from the log instead.
        """
        doc = orjson.loads(blob)
        if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version is not {CHECKPOINT_VERSION}")
        builder = BarBuilder.from_state(
            self.universe.names,
            self.interval_s,
            doc["builder"],
            grace_s=self.grace_s,
            idle_timeout_s=self.idle_timeout_s,
        )
        offset = int(doc["offset"])
        seen = set(doc["seen"]) & set(self.universe.names)
        self.parts[partition] = _Partition(builder, offset, seen)
        return offset
