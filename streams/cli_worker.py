"""``firesale worker``: one stream worker process (how the pipeline is deployed and scaled)."""

from __future__ import annotations

import logging

import typer
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from streams.config import ConfigError, load_settings, load_universe
from streams.logfilter import quiet_repeats
from streams.market_stage import INPUT_TOPICS as MARKET_INPUTS

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def worker() -> None:
    """Run a stream worker: ticks.* → bars.v1 → signals.* (and /metrics)."""
    from faust import Worker

    from streams.cli_connect import bootstrap_or_exit, wait_for_kafka
    from streams.metrics import PipelineMetrics
    from streams.worker import create_app

    try:
        settings = load_settings()
        universe = load_universe(settings.universe)
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    bootstrap = bootstrap_or_exit(settings)

    for rep in wait_for_kafka(bootstrap):
        if rep.action == "drift" and "partitions" in rep.detail and rep.name in MARKET_INPUTS:
            err.print(
                f"[bold red]error:[/] topic {rep.name} has {rep.detail}: the market stage needs "
                "bars.v1, ticks.liquidation.v1, ticks.funding.v1 and ticks.gap.v1 with one "
                "partition each (one worker reads them together). Recreate it, or point "
                "FIRESALE_KAFKA_BOOTSTRAP at a cluster whose topics match `firesale topics list`.",
                highlight=False,
            )
            raise typer.Exit(2)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_bind, registry=registry)
        console.print(f"metrics on http://{settings.metrics_bind}:{settings.metrics_port}/metrics")
    app, _ = create_app(
        settings, universe, bootstrap, PipelineMetrics.create(registry), app_id=settings.app_id
    )
    console.print(
        f"worker on {bootstrap}: {len(universe.assets)} assets, {settings.bar_interval_s} s bars"
    )
    quiet_repeats()  # a broker outage must not bury the lines that matter
    Worker(app, loglevel=settings.log_level.lower(), quiet=True).execute_from_commandline()
