"""``firesale connect`` and ``firesale replay``: the connector process from the command line."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console
from rich.progress import Progress

from connectors.base import Instrument
from connectors.markets import Markets, MarketsUnavailableError, resolve_instruments
from connectors.record import RecordingError
from streams.config import ConfigError, Settings, Universe, load_settings, load_universe
from streams.logfilter import quiet_repeats
from streams.topics import TopicReport

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("firesale")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _load(venues: str | None) -> tuple[Settings, Universe, tuple[str, ...]]:
    try:
        settings = load_settings()
        universe = load_universe(settings.universe)
        chosen = settings.venue_list
        if venues:
            chosen = tuple(v.strip() for v in venues.split(",") if v.strip())
            Settings.model_validate({"venues": ",".join(chosen)})
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except ValueError as exc:
        raise _fail(f"--venues: {exc}", 2) from None
    return settings, universe, chosen


def bootstrap_or_exit(settings: Settings) -> str:
    """FIRESALE_KAFKA_BOOTSTRAP, else the running embedded broker; a clear exit otherwise."""
    from deploy.kafka import broker

    try:
        return broker.resolve_bootstrap(settings.kafka_bootstrap, settings.kafka_home)
    except broker.BrokerNotRunningError as exc:
        raise _fail(str(exc)) from None


def connect(
    venues: Annotated[
        str | None, typer.Option(help="comma-separated venues (default FIRESALE_VENUES)")
    ] = None,
    record: Annotated[
        Path | None, typer.Option(help="also write raw frames to rotating gzip files in DIR")
    ] = None,
    refresh_markets: Annotated[
        bool, typer.Option(help="refetch venue market metadata instead of using the cache")
    ] = False,
    backfill: Annotated[
        bool,
        typer.Option(
            help="publish recent candles (ccxt REST) at start-up and after gaps, so correlation "
            "windows are warm at once"
        ),
    ] = True,
) -> None:
    """Run the live connectors: venue WebSockets → ticks.* topics on Kafka."""
    settings, universe, chosen = _load(venues)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    quiet_repeats()  # a broker outage must not bury the lines that matter
    markets: dict[str, Markets] = {}
    try:
        instruments = resolve_instruments(settings, universe, chosen, refresh_markets, markets)
    except (MarketsUnavailableError, ValueError) as exc:
        raise _fail(str(exc)) from None
    bootstrap = bootstrap_or_exit(settings)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_bind, registry=registry)
        console.print(f"metrics on http://{settings.metrics_bind}:{settings.metrics_port}/metrics")
    wait_for_kafka(bootstrap)
    summary = ", ".join(f"{v}: {len(i)} instruments" for v, i in instruments.items())
    console.print(f"connecting to {summary}; producing to {bootstrap}. Ctrl-C to stop.")
    asyncio.run(
        _connect(bootstrap, instruments, settings, registry, record, markets if backfill else None)
    )


def wait_for_kafka(bootstrap: str) -> list[TopicReport]:
    """Wait (one line per attempt, backoff to 30 s) until Kafka answers and the topics exist.

    Returns the topic reports (created ones are printed; drift is the caller's to judge).

    The broker never auto-creates topics (deploy/kafka/broker.py); producing before they exist
    would time out message by message. A refused login or TLS session exits 2 at once.
    """
    from streams.kafka_security import describe_failure
    from streams.topics import wait_for_topics

    def waiting(line: str) -> None:
        err.print(f"[yellow]{line}[/]", highlight=False)

    try:
        reports = asyncio.run(wait_for_topics(bootstrap, waiting))
    except Exception as exc:  # only a refused login or TLS session ends the wait
        err.print(f"[bold red]error:[/] Kafka at {bootstrap}: {describe_failure(exc, bootstrap)}")
        raise typer.Exit(2) from None
    for rep in reports:
        if rep.action != "exists":
            console.print(f"topic {rep.name}: {rep.action} {rep.detail}", highlight=False)
    return reports


async def _connect(
    bootstrap: str,
    instruments: dict[str, Sequence[Instrument]],
    settings: Settings,
    registry: CollectorRegistry,
    record: Path | None,
    markets: dict[str, Markets] | None,
) -> None:
    from connectors.app import run_connect
    from connectors.backfill import Backfiller, make_exchange

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    urls = {v: settings.ws_url(v) for v in instruments}
    backfiller = None
    if markets is not None:
        exchanges = {v: make_exchange(v, markets[v], settings.rest_url(v)) for v in instruments}
        backfiller = Backfiller(
            exchanges,
            instruments,
            None,
            interval_s=settings.bar_interval_s,
            lookback_bars=settings.correlation_window_bars,
        )
    try:
        await run_connect(
            bootstrap, instruments, urls, stop, registry, record_dir=record, backfill=backfiller
        )
    finally:
        if backfiller is not None:
            await backfiller.close()


def replay(
    files: Annotated[list[Path], typer.Argument(help="recordings written by connect --record")],
    speed: Annotated[
        float | None, typer.Option(help="X times real time (default: as fast as possible)")
    ] = None,
    venues: Annotated[str | None, typer.Option(help="comma-separated venues")] = None,
) -> None:
    """Replay recorded frames through the live parse path onto Kafka."""
    settings, universe, chosen = _load(venues)
    try:
        instruments = resolve_instruments(settings, universe, chosen)
    except (MarketsUnavailableError, ValueError) as exc:
        raise _fail(str(exc)) from None
    bootstrap = bootstrap_or_exit(settings)
    try:
        count = asyncio.run(_replay(bootstrap, files, instruments, speed))
    except RecordingError as exc:
        raise _fail(str(exc), 2) from None
    console.print(f"replayed {count} frames onto {bootstrap}")


async def _replay(
    bootstrap: str,
    files: list[Path],
    instruments: dict[str, Sequence[Instrument]],
    speed: float | None,
) -> int:
    from connectors.app import replay_files
    from connectors.metrics import ConnectorMetrics
    from connectors.sink import KafkaSink

    registry = CollectorRegistry()
    sink = KafkaSink(bootstrap, ConnectorMetrics.create(CollectorRegistry()))
    await sink.start()
    try:
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("replaying", total=None)

            class _Advance:
                def advance(self) -> None:
                    bar.advance(task)

            return await replay_files(files, instruments, sink, registry, speed, _Advance())
    finally:
        await sink.stop()
