"""What ``firesale run`` runs once Kafka and its topics are up: the live connectors.

Each configured venue whose market metadata can be loaded (ccxt REST, or the disk cache) is
connected; a venue that cannot be reached is reported in one clear line and left out, so one
exchange's outage (or an offline machine) never stops the rest. Stream workers join here with
the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, start_http_server

from connectors.base import Instrument
from connectors.markets import Markets, MarketsUnavailableError
from streams.config import Settings, Universe

log = logging.getLogger("firesale")


def available_venues(
    settings: Settings,
    universe: Universe,
    report: Callable[[str], None],
) -> tuple[dict[str, Sequence[Instrument]], dict[str, Markets]]:
    """Instruments (and markets) of every configured venue that can be reached."""
    from streams.cli_connect import resolve_instruments

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


async def run_service(
    settings: Settings,
    universe: Universe,
    bootstrap: str,
    report: Callable[[str], None],
) -> None:
    """Run the connectors until SIGINT/SIGTERM; return after a clean stop."""
    from connectors.app import run_connect
    from connectors.backfill import Backfiller, make_exchange

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_bind, registry=registry)
        report(f"metrics on http://{settings.metrics_bind}:{settings.metrics_port}/metrics")
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
