"""The faust stream worker: thin agents around :class:`~streams.pipeline.Pipeline`.

Each agent decodes a record (raw bytes: our own strict decoder, not faust's codecs), calls the
pipeline and sends what it returns. Agents run at concurrency 1 (faust #606: higher
concurrency can commit past in-flight messages). Processing is at-least-once: outputs carry
deterministic ids and keys, so a redelivered input produces a duplicate consumers drop, never
a different answer. No faust windowed tables (event-time bugs #427/#428/#250): bars are built
with our own watermark.

Deployment note: the market state (cross-sections, correlations, liquidations, funding) lives
in the worker that consumes ``bars.v1`` (one partition). Liquidation and funding ticks are
consumed by the same worker only when it holds every partition of their topics, which is the
single-worker deployment; spreading them over replicas needs a repartition by asset first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust

from streams.config import Settings, Universe
from streams.events import (
    BarEvent,
    DecodeError,
    Funding,
    GapMarker,
    Liquidation,
    PriceTick,
    decode,
)
from streams.metrics import PipelineMetrics
from streams.pipeline import Out, Pipeline

log = logging.getLogger("firesale.worker")

APP_ID = "firesale"
OUTPUT_TOPICS = (
    "bars.v1",
    "signals.correlation.v1",
    "signals.cosell.v1",
    "signals.liquidation.v1",
    "signals.funding.v1",
)


def create_app(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    metrics: PipelineMetrics,
    clock_ns: Callable[[], int] = time.time_ns,
    app_id: str = APP_ID,
) -> tuple[faust.App, Pipeline]:
    """A faust app with the pipeline's agents, and the pipeline it drives."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_allow_declare=False,  # topics come from the registry (firesale topics create)
        topic_disable_leader=True,
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_linger=0.005,
    )
    pipeline = Pipeline(
        universe,
        settings.bar_interval_s,
        metrics,
        grace_s=settings.bar_grace_s,
    )

    def raw(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    outputs = {name: raw(name) for name in OUTPUT_TOPICS}

    async def send(records: list[Out]) -> None:
        for rec in records:
            await outputs[rec.topic].send(key=rec.key, value=rec.value)

    def agent(name: str, handle: Callable[[bytes], Awaitable[None]]) -> None:
        async def consume(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for value in stream:
                try:
                    await handle(value)
                except DecodeError as exc:
                    # An undecodable record upstream must not stop the worker: log and skip.
                    log.error("%s: skipped an invalid record: %s", name, exc)
                yield None

        consume.__name__ = f"on_{name.replace('.', '_')}"
        consume.__qualname__ = consume.__name__
        app.agent(raw(name), name=f"firesale.{consume.__name__}", concurrency=1)(consume)

    async def on_price(value: bytes) -> None:
        await send(pipeline.on_price(decode(PriceTick, value), clock_ns()))

    async def on_gap(value: bytes) -> None:
        pipeline.on_gap(decode(GapMarker, value))

    async def on_bar(value: bytes) -> None:
        await send(pipeline.on_bar(decode(BarEvent, value), clock_ns()))

    async def on_liquidation(value: bytes) -> None:
        await send(pipeline.on_liquidation(decode(Liquidation, value), clock_ns()))

    async def on_funding(value: bytes) -> None:
        await send(pipeline.on_funding(decode(Funding, value), clock_ns()))

    agent("ticks.price.v1", on_price)
    agent("ticks.gap.v1", on_gap)
    agent("bars.v1", on_bar)
    agent("ticks.liquidation.v1", on_liquidation)
    agent("ticks.funding.v1", on_funding)

    async def idle_sources() -> None:
        await send(pipeline.tick(clock_ns()))

    app.timer(interval=1.0)(idle_sources)

    return app, pipeline
