"""Run venue connections and put what they parse onto Kafka (or a recording).

:class:`FrameRouter` is the glue between the supervisors and the sink: events go to their tick
topic keyed ``venue:symbol``, rejects become dead letters with the reason and the truncated raw
frame, gap markers go to ``ticks.gap.v1``. The same router serves live connections and replay,
so recorded frames travel exactly the live parse path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from connectors.base import ConnectionSpec, ParseResult
from connectors.metrics import ConnectorMetrics
from connectors.supervisor import Backoff, Supervisor
from streams.events import DeadLetter, Funding, GapMarker, Liquidation, PriceTick, encode

log = logging.getLogger("firesale.connectors")

RAW_LIMIT = 65_536

TOPIC_OF: dict[type, str] = {
    PriceTick: "ticks.price.v1",
    Liquidation: "ticks.liquidation.v1",
    Funding: "ticks.funding.v1",
}
KIND_OF: dict[type, str] = {PriceTick: "price", Liquidation: "liquidation", Funding: "funding"}


class Sink(Protocol):
    """Where encoded messages go (:class:`connectors.sink.KafkaSink` in production)."""

    async def put(self, topic: str, key: bytes, value: bytes) -> bool: ...


class Recorder(Protocol):
    """Optional raw-frame recorder (``firesale connect --record``)."""

    def write(self, connection: str, ts_recv_ns: int, raw: str | bytes) -> None: ...


def raw_text(raw: str | bytes) -> str:
    """The raw frame as text for a dead letter (invalid UTF-8 replaced), truncated to 64 KiB."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    return text if len(text) <= RAW_LIMIT else text[: RAW_LIMIT - 20] + "…[truncated]"


class FrameRouter:
    """Route parse results to topics; count everything."""

    def __init__(
        self, sink: Sink, metrics: ConnectorMetrics, recorder: Recorder | None = None
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.recorder = recorder
        self._ticks: dict[tuple[str, type], Any] = {}  # labelled counters, looked up once

    async def on_frame(
        self, spec: ConnectionSpec, raw: str | bytes, ts_recv_ns: int, result: ParseResult
    ) -> None:
        """Publish the events and dead letters of one frame."""
        if self.recorder is not None:
            self.recorder.write(spec.name, ts_recv_ns, raw)
        for event in result.events:
            kind = type(event)
            counter = self._ticks.get((spec.venue, kind))
            if counter is None:
                counter = self._ticks[spec.venue, kind] = self.metrics.ticks.labels(
                    spec.venue, KIND_OF[kind]
                )
            counter.inc()
            key = f"{event.venue}:{event.symbol}".encode()
            await self.sink.put(TOPIC_OF[kind], key, encode(event))
        if result.filtered:
            self.metrics.filtered.labels(spec.venue).inc(result.filtered)
        if result.rejects:
            text = raw_text(raw)
            for reject in result.rejects:
                self.metrics.deadletters.labels(spec.venue, reject.reason).inc()
                letter = DeadLetter(
                    venue=spec.venue,
                    channel=reject.channel or "unknown",
                    ts_recv_ns=ts_recv_ns,
                    reason=f"{reject.reason}: {reject.detail}"[:1024],
                    raw=text,
                )
                await self.sink.put(
                    "ticks.deadletter.v1", f"{spec.venue}:{letter.channel}".encode(), encode(letter)
                )

    async def on_gap(self, marker: GapMarker) -> None:
        """Publish a gap marker."""
        await self.sink.put(
            "ticks.gap.v1", f"{marker.venue}:{marker.channel}".encode(), encode(marker)
        )


async def run_connections(
    specs: Sequence[ConnectionSpec],
    router: FrameRouter,
    metrics: ConnectorMetrics,
    stop: asyncio.Event,
    backoff: Backoff | None = None,
    restart_from: Mapping[str, int] | None = None,
) -> list[Supervisor]:
    """Supervise every spec until ``stop`` is set; return the supervisors (for their counters).

    ``restart_from`` maps a venue to the last receive time a previous process published: its
    connections start inside a ``restart`` gap from then (:mod:`connectors.restart`).
    """
    supervisors = [
        Supervisor(spec, router.on_frame, router.on_gap, metrics, backoff=backoff) for spec in specs
    ]
    for sup in supervisors:
        if restart_from and sup.spec.venue in restart_from:
            sup.resume_after(restart_from[sup.spec.venue])
    await asyncio.gather(*(s.run(stop) for s in supervisors))
    return supervisors
