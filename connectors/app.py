"""The connector process: venues' WebSockets → canonical events → Kafka.

``firesale connect`` runs :func:`run_connect`: it resolves each venue's instruments for the
universe (ccxt market metadata, cached), builds the venues' connection specs (URLs overridable
per venue), and supervises every connection until stopped, producing through one
:class:`~connectors.sink.KafkaSink`. ``firesale replay`` feeds recorded frames through the same
router (:func:`replay_files`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from connectors.backfill import Backfiller, GapFillRouter
from connectors.base import ConnectionSpec, Instrument
from connectors.metrics import ConnectorMetrics
from connectors.record import FrameRecorder, read_recording
from connectors.runner import FrameRouter, Sink, run_connections
from connectors.sink import KafkaSink

log = logging.getLogger("firesale.connectors")


def specs_for(
    venue: str, instruments: Sequence[Instrument], ws_url: str | None
) -> list[ConnectionSpec]:
    """The venue's connection specs for ``instruments`` (``ws_url`` None = production)."""
    if venue == "binance":
        from connectors.binance.client import connection_specs as binance

        return binance(instruments, ws_url)
    if venue == "bybit":
        from connectors.bybit.client import connection_specs as bybit

        return bybit(instruments, ws_url)
    if venue == "okx":
        from connectors.okx.client import connection_specs as okx

        return okx(instruments, ws_url)
    raise ValueError(f"no connector for venue {venue!r}")


async def run_connect(
    bootstrap: str,
    instruments: Mapping[str, Sequence[Instrument]],
    ws_urls: Mapping[str, str | None],
    stop: asyncio.Event,
    registry: CollectorRegistry,
    record_dir: Path | None = None,
    sink: Sink | None = None,
    backfill: Backfiller | None = None,
    restart_gaps: bool = True,
) -> None:
    """Stream every venue in ``instruments`` until ``stop`` is set.

    With ``backfill``: its warm start (``lookback_bars`` of ``interval_s``) is published before
    any connection opens, and every gap marker starts a background gap fill. With
    ``restart_gaps``, the time since a previous process last published these instruments is
    marked as a ``restart`` gap (:mod:`connectors.restart`); tests that share a broker with
    other tests' data turn it off.
    """
    metrics = ConnectorMetrics.create(registry)
    own_sink = sink is None
    kafka = KafkaSink(bootstrap, metrics) if sink is None else None
    if kafka is not None:
        await kafka.start()
    recorder = FrameRecorder(record_dir) if record_dir else None
    out: Sink = kafka or sink  # type: ignore[assignment]
    router = (
        FrameRouter(out, metrics, recorder)
        if backfill is None
        else GapFillRouter(out, metrics, recorder, backfill)
    )
    specs = [
        spec
        for venue, insts in instruments.items()
        if insts
        for spec in specs_for(venue, insts, ws_urls.get(venue))
    ]
    log.info(
        "connecting %d connections: %s",
        len(specs),
        ", ".join(f"{s.name} ({len(s.channels)} channels)" for s in specs),
    )
    try:
        # before the warm start publishes: its ticks would look like a previous run's
        restart_from = await _previous_run(bootstrap, instruments) if restart_gaps else {}
        if backfill is not None:
            if backfill.sink is None:
                backfill.sink = out
            now_ms = time.time_ns() // 1_000_000
            n = await backfill.warm_start(backfill.lookback_bars, backfill.interval_s, now_ms)
            log.info("warm start: %d backfilled price ticks", n)
        await run_connections(specs, router, metrics, stop, restart_from=restart_from)
    finally:
        if isinstance(router, GapFillRouter):
            await router.close()
        if recorder is not None:
            recorder.close()
        if own_sink and kafka is not None:
            await kafka.stop()


async def _previous_run(
    bootstrap: str, instruments: Mapping[str, Sequence[Instrument]]
) -> dict[str, int]:
    """Each venue's last published receive time (a previous process's end), logged."""
    from connectors.restart import last_receive_by_venue

    symbols = {venue: {i.symbol for i in insts} for venue, insts in instruments.items()}
    try:
        last = await last_receive_by_venue(bootstrap, symbols)
    except Exception as exc:
        log.error(
            "could not read where the previous connector stopped (%s): a restart gap, if any, "
            "goes unmarked",
            exc,
        )
        return {}
    now = time.time_ns()
    for venue, ns in sorted(last.items()):
        log.info(
            "%s: last published %.1f s ago by a previous run: marked as a restart gap at the "
            "first data",
            venue,
            (now - ns) / 1e9,
        )
    return last


async def replay_files(
    paths: Iterable[Path],
    instruments: Mapping[str, Sequence[Instrument]],
    sink: Sink,
    registry: CollectorRegistry,
    speed: float | None = None,
    progress: object | None = None,
) -> int:
    """Feed recorded frames through the live parse path onto ``sink``; return frames replayed.

    ``speed`` None replays as fast as possible; ``speed`` X sleeps so that recorded time runs
    X times faster than it did. Each recorded connection gets a parser of its own, built
    from the venue's connection specs, so stateful parsing (Bybit ticker deltas) is exact.
    """
    metrics = ConnectorMetrics.create(registry)
    router = FrameRouter(sink, metrics)
    specs = {
        spec.name: spec
        for venue, insts in instruments.items()
        if insts
        for spec in specs_for(venue, insts, None)
    }
    parsers = {name: spec.parser_factory() for name, spec in specs.items()}
    first_rec: int | None = None
    started = time.monotonic()
    count = 0
    for connection, ts_recv_ns, raw in read_recording(paths):
        spec = specs.get(connection)
        if spec is None:
            raise ValueError(
                f"recording has frames of connection {connection!r}, which the universe does not "
                f"open (known: {', '.join(sorted(specs))})"
            )
        if speed:
            first_rec = ts_recv_ns if first_rec is None else first_rec
            due = (ts_recv_ns - first_rec) / 1e9 / speed
            lag = due - (time.monotonic() - started)
            if lag > 0:
                await asyncio.sleep(lag)
        result = parsers[connection].parse(raw, ts_recv_ns)
        await router.on_frame(spec, raw, ts_recv_ns, result)
        count += 1
        if progress is not None:
            progress.advance()  # type: ignore[attr-defined]
    return count
