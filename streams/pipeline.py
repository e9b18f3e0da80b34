"""The whole stream processing in one object, without Kafka: ticks in, bars and signals out.

A worker runs two stages (:mod:`streams.tick_stage`: ticks → ``bars.v1``, per price
partition; :mod:`streams.market_stage`: ``bars.v1`` + liquidations + funding + gaps →
``signals.*``). :class:`Pipeline` joins them for callers that hold every input themselves —
tests, notebooks, a single-process replay: all price ticks count as one partition, and side
inputs are always "at the head of their log", as in a live worker that has caught up.
"""

from __future__ import annotations

from signals.detector_params import DetectorParams
from streams.config import Universe
from streams.events import BarEvent, Funding, GapMarker, Liquidation, PriceTick, decode
from streams.market_stage import MarketStage
from streams.metrics import PipelineMetrics
from streams.tick_stage import PRICE_KINDS, Out, TickStage

__all__ = ["PRICE_KINDS", "Out", "Pipeline"]


class Pipeline:
    """Tick stage plus market stage; the caller feeds bars back, as Kafka would."""

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
        self.ticks = TickStage(universe, interval_s, metrics, grace_s, idle_timeout_s, max_jump_s)
        self.market = MarketStage(universe, interval_s, metrics, params)
        self._offset = -1

    def on_price(self, tick: PriceTick, now_ns: int) -> list[Out]:
        """Feed a price tick; return the bars it closes (``bars.v1`` records)."""
        self._offset += 1
        return self.ticks.on_price(0, self._offset, tick, now_ns)

    def on_bar(self, bar: BarEvent, now_ns: int) -> list[Out]:
        """Take one bar of ``bars.v1``; return the signal records of every completed bar."""
        return self.market.on_bar(bar, now_ns)

    def on_liquidation(self, liq: Liquidation, now_ns: int) -> list[Out]:
        """Feed a liquidation; return cascade events."""
        return self.market.on_liquidation(liq, now_ns)

    def on_funding(self, fund: Funding, now_ns: int) -> list[Out]:
        """Feed a funding rate; return funding-stress events."""
        return self.market.on_funding(fund, now_ns)

    def on_gap(self, gap: GapMarker, now_ns: int) -> list[Out]:
        """Feed a gap marker: its venue's assets are NaN in the bars it overlaps."""
        return self.market.on_gap(gap, now_ns)

    def feed(self, event: PriceTick | Liquidation | Funding, now_ns: int) -> list[Out]:
        """Feed one source event and read its bars back at once, as a caught-up worker would;
        return every record published (``bars.v1`` and signals, in order)."""
        if isinstance(event, PriceTick):
            produced = self.on_price(event, now_ns)
        elif isinstance(event, Liquidation):
            produced = self.on_liquidation(event, now_ns)
        else:
            produced = self.on_funding(event, now_ns)
        out: list[Out] = []
        for rec in produced:
            out.append(rec)
            if rec.topic == "bars.v1":
                out += self.on_bar(decode(BarEvent, rec.value), now_ns)
        return out

    def tick(self, now_ns: int) -> list[Out]:
        """Processing time passes: idle timeouts of the bar builder and the market stage."""
        out = [rec for recs in self.ticks.advance(now_ns).values() for rec in recs]
        return out + self.market.tick(now_ns)
