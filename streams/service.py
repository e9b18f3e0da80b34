"""What ``firesale run`` runs once Kafka and its topics are up: a source and a stream worker.

The source is either the live connectors — each configured venue whose market metadata can be
loaded (ccxt REST, or the disk cache) is connected; a venue that cannot be reached is reported
in one clear line and left out, so one exchange's outage (or an offline machine) never stops
the rest — or a synthetic scenario (``--scenario``). The stream worker is a child process
(``firesale worker``, exactly as deployed), stopped with SIGTERM when the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from connectors.base import Instrument
from connectors.markets import Markets, MarketsUnavailableError, resolve_instruments
from streams.config import Settings, Universe

log = logging.getLogger("firesale")


def available_venues(
    settings: Settings,
    universe: Universe,
    report: Callable[[str], None],
) -> tuple[dict[str, Sequence[Instrument]], dict[str, Markets]]:
    """Instruments (and markets) of every configured venue that can be reached."""
    instruments: dict[str, Sequence[Instrument]] = {}
    markets: dict[str, Markets] = {}
    for venue in settings.venue_list:
        try:
            found = resolve_instruments(settings, universe, [venue], markets_out=markets)
        except (MarketsUnavailableError, ValueError) as exc:
            report(f"{venue}: left out — {exc}")
            continue
        instruments.update(found)
    return instruments, markets


@contextlib.contextmanager
def worker_process(
    settings: Settings, bootstrap: str, report: Callable[[str], None]
) -> Iterator[subprocess.Popen[bytes]]:
    """``firesale worker`` as a child process; SIGTERM and wait on exit.

    Its metrics are served on ``FIRESALE_METRICS_PORT + 1`` (the connectors keep the port).
    """
    env = {**os.environ, "FIRESALE_KAFKA_BOOTSTRAP": bootstrap}
    if settings.metrics_port:
        env["FIRESALE_METRICS_PORT"] = str(settings.metrics_port + 1)
    proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env)
    report(f"stream worker started (pid {proc.pid})")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        report(f"stream worker stopped (exit {proc.returncode})")


async def run_scenario_source(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    name: str,
    speed: float | None,
    stop: asyncio.Event,
    registry: CollectorRegistry,
    report: Callable[[str], None],
    labels_path: Path | None = None,
) -> None:
    """Produce the named synthetic scenario (labelled phases) until it ends or ``stop``."""
    from connectors.metrics import ConnectorMetrics
    from connectors.scenario import ScenarioParams, phase_schedule, run_scenario
    from connectors.sink import KafkaSink

    params = ScenarioParams.preset(name, mark_interval_s=10, trade_rate_scale=0.1)  # type: ignore[arg-type]
    start_ns = time.time_ns() // 60_000_000_000 * 60_000_000_000
    for interval in phase_schedule(params, start_ns).intervals:
        span = interval.to_dict()
        report(f"scenario phase {interval.phase}: {span['start']} → {span['end']}")
    metrics = ConnectorMetrics.create(registry)
    sink = KafkaSink(bootstrap, metrics)
    await sink.start()
    try:
        run = await run_scenario(
            sink,
            params,
            universe.assets,
            start_ns,
            speed,
            stop,
            labels_path=labels_path,
            metrics=metrics,
        )
        await sink.flush()
    finally:
        await sink.stop()
    state = "complete" if run.completed else "stopped"
    report(f"scenario {name}: {run.events} events produced ({state})")


async def run_replay_source(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    files: Sequence[Path],
    speed: float | None,
    registry: CollectorRegistry,
    report: Callable[[str], None],
) -> None:
    """Replay recorded frames (``firesale connect --record``) through the live parse path."""
    from connectors.app import replay_files
    from connectors.metrics import ConnectorMetrics
    from connectors.sink import KafkaSink

    instruments = await asyncio.to_thread(
        resolve_instruments, settings, universe, settings.venue_list
    )
    sink = KafkaSink(bootstrap, ConnectorMetrics.create(CollectorRegistry()))
    await sink.start()
    try:
        count = await replay_files(files, instruments, sink, registry, speed)
        await sink.flush()
    finally:
        await sink.stop()
    report(f"replayed {count} frames from {len(files)} recording(s)")


async def run_service(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    report: Callable[[str], None],
    scenario: str | None = None,
    speed: float | None = None,
    with_worker: bool = True,
    replay: Sequence[Path] = (),
) -> None:
    """Run a source (live connectors, a scenario or recordings) and a stream worker until
    SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_bind, registry=registry)
        report(f"metrics on http://{settings.metrics_bind}:{settings.metrics_port}/metrics")
    with contextlib.ExitStack() as stack:
        if with_worker:
            stack.enter_context(worker_process(settings, bootstrap, report))
        if scenario is not None or replay:
            if scenario is not None:
                await run_scenario_source(
                    settings, universe, bootstrap, scenario, speed, stop, registry, report
                )
            else:
                task = asyncio.ensure_future(
                    run_replay_source(
                        settings, universe, bootstrap, replay, speed, registry, report
                    )
                )
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    report("replay stopped")
                else:
                    task.result()  # a bad recording raises here, with its reason
            if not stop.is_set():
                report("source finished; the worker keeps running. Ctrl-C to stop.")
                await stop.wait()
        else:
            await _run_live(settings, universe, bootstrap, report, stop, registry)


async def _run_live(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    report: Callable[[str], None],
    stop: asyncio.Event,
    registry: CollectorRegistry,
) -> None:
    from connectors.app import run_connect
    from connectors.backfill import Backfiller, make_exchange

    instruments, markets = await asyncio.to_thread(available_venues, settings, universe, report)
    if not instruments:
        report(
            "no exchange could be reached (offline?): Kafka stays up with its topics; "
            "`firesale replay FILE` feeds recorded frames. Ctrl-C to stop."
        )
        await stop.wait()
        return
    summary = ", ".join(f"{v} ({len(i)} instruments)" for v, i in instruments.items())
    report(f"streaming {summary} → {bootstrap}. Ctrl-C to stop.")
    exchanges = {v: make_exchange(v, markets[v], settings.rest_url(v)) for v in instruments}
    backfiller = Backfiller(
        exchanges,
        instruments,
        None,
        interval_s=settings.bar_interval_s,
        lookback_bars=settings.correlation_window_bars,
    )
    urls = {v: settings.ws_url(v) for v in instruments}
    try:
        await run_connect(bootstrap, instruments, urls, stop, registry, backfill=backfiller)
    finally:
        await backfiller.close()
