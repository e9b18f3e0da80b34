"""The ``firesale`` command line."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from deploy.kafka import broker
from streams import cli_connect, cli_worker
from streams.config import ConfigError, Settings, Universe, load_settings, load_universe
from streams.logfilter import quiet_repeats
from streams.topics import TOPICS, ensure_topics

app = typer.Typer(
    name="firesale",
    help="Streaming cross-asset fire-sale detector.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="The embedded local Kafka broker (KRaft, one node).")
topics_app = typer.Typer(help="Kafka topics, as registered in streams/topics.py.")
config_app = typer.Typer(help="Inspect and validate the configuration.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="broker home (config, data, logs, pid file); default FIRESALE_KAFKA_HOME"
    ),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="host:port of Kafka; default FIRESALE_KAFKA_BOOTSTRAP"),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _universe(settings: Settings) -> Universe:
    try:
        return load_universe(settings.universe)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _bootstrap(settings: Settings, override: str | None) -> str:
    try:
        return broker.resolve_bootstrap(override or settings.kafka_bootstrap, settings.kafka_home)
    except broker.BrokerNotRunningError as exc:
        raise _fail(str(exc)) from None


@kafka_app.command("start")
def kafka_start(
    port: Annotated[
        int | None, typer.Option(help="client port; default FIRESALE_KAFKA_PORT")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Start the embedded broker in the background and wait until it answers."""
    settings = _settings()
    home = data_dir or settings.kafka_home
    started = time.monotonic()
    try:
        info = broker.start(home, port if port is not None else settings.kafka_port or None)
    except broker.KafkaLauncherError as exc:
        raise _fail(str(exc)) from None
    took = time.monotonic() - started
    console.print(
        f"Kafka {info.kafka_version} running: bootstrap [bold]{info.bootstrap}[/] "
        f"(pid {info.pid}, home {info.home}, ready in {took:.1f} s)",
        highlight=False,
    )


@kafka_app.command("stop")
def kafka_stop(data_dir: DataDirOpt = None) -> None:
    """Stop the embedded broker (SIGTERM, then wait)."""
    home = data_dir or _settings().kafka_home
    try:
        info = broker.stop(home)
    except broker.BrokerNotRunningError as exc:
        raise _fail(str(exc)) from None
    console.print(f"Kafka stopped (pid {info.pid})", highlight=False)


@kafka_app.command("status")
def kafka_status(data_dir: DataDirOpt = None) -> None:
    """Say whether the embedded broker runs and answers; exit 1 when it does not."""
    home = data_dir or _settings().kafka_home
    info, answers = broker.status(home)
    if info is None:
        raise _fail(f"no embedded broker running in {home.resolve()}")
    if not answers:
        raise _fail(f"broker pid {info.pid} runs but does not answer on {info.bootstrap}")
    console.print(
        f"Kafka {info.kafka_version} up: bootstrap {info.bootstrap}, pid {info.pid}, "
        f"up {time.time() - info.started_at:.0f} s, home {info.home}",
        highlight=False,
    )


@topics_app.command("create")
def topics_create(bootstrap: BootstrapOpt = None) -> None:
    """Create every registered topic that is missing (idempotent) and report drift."""
    target = _bootstrap(_settings(), bootstrap)
    from streams.kafka_security import describe_failure, quiet_kafka_client

    try:
        with quiet_kafka_client():
            reports = asyncio.run(ensure_topics(target))
    except Exception as exc:
        raise _fail(f"topic creation on {target} failed: {describe_failure(exc, target)}") from None
    for rep in reports:
        colour = {"created": "green", "exists": "dim", "drift": "yellow"}[rep.action]
        detail = f" — {rep.detail}" if rep.detail else ""
        console.print(f"[{colour}]{rep.action:8}[/] {rep.name}{detail}", highlight=False)


@topics_app.command("list")
def topics_list() -> None:
    """Show the topic registry."""
    table = Table("topic", "partitions", "retention", "cleanup", "key", "schema")
    for t in TOPICS:
        table.add_row(
            t.name,
            str(t.partitions),
            f"{t.retention_ms / 86_400_000:g} d",
            t.cleanup_policy,
            t.key,
            f"streams/schemas/{t.schema}.v1.json",
        )
    console.print(table)


@config_app.command("show")
def config_show() -> None:
    """Validate the configuration and print the effective settings and universe."""
    settings = _settings()
    universe = _universe(settings)
    table = Table("setting", "value", "environment variable")
    for name in Settings.model_fields:
        table.add_row(name, repr(getattr(settings, name)), f"FIRESALE_{name.upper()}")
    console.print(table)
    assets = Table("asset", "class", "session", "symbols", title=f"universe: {universe.source}")
    for a in universe.assets:
        symbols = ", ".join(f"{v}:{s}" for v, s in a.symbols.items())
        assets.add_row(a.name, a.asset_class, a.session, symbols)
    console.print(assets)


@app.command("run")
def run(
    scenario: Annotated[
        str | None,
        typer.Option(help="a synthetic market instead of the live venues: fire-sale | calm"),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="scenario/replay speed, X times real time (default: as fast as possible)"
        ),
    ] = None,
    replay: Annotated[
        list[Path] | None,
        typer.Option(
            help="recorded frames (connect --record) instead of the live venues; repeatable"
        ),
    ] = None,
) -> None:
    """Run the service: Kafka (embedded unless FIRESALE_KAFKA_BOOTSTRAP is set), its topics,
    the live connectors of every reachable venue (or --scenario, or --replay FILE) and a
    stream worker.

    Stops cleanly on Ctrl-C or SIGTERM, and the embedded broker with it.
    """
    from connectors.markets import MarketsUnavailableError
    from streams.service import run_service

    if scenario is not None and replay:
        raise _fail("--scenario and --replay are two sources: give one", 2)
    settings = _settings()
    universe = _universe(settings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    quiet_repeats()  # a broker outage must not bury the lines that matter
    embedded = settings.kafka_bootstrap is None
    home = settings.kafka_home
    if embedded and scenario is not None:
        # A synthetic market gets a broker of its own, emptied first: its event clock runs
        # ahead of real time, so a second run on the same logs and worker checkpoints would
        # start behind the first one's watermark and be dropped as late.
        home = home.with_name(home.name + "-scenario")
        shutil.rmtree(home, ignore_errors=True)
    try:
        if embedded:
            console.print(f"starting the embedded Kafka in {home} ...")
            info = broker.start(home, settings.kafka_port or None, detach=False)
            bootstrap = info.bootstrap
            console.print(f"embedded Kafka {info.kafka_version} on {bootstrap} (pid {info.pid})")
        else:
            bootstrap = settings.kafka_bootstrap or ""
        for rep in asyncio.run(ensure_topics(bootstrap)):
            console.print(f"topic {rep.name}: {rep.action} {rep.detail}", highlight=False)
        console.print(
            f"universe: {len(universe.assets)} assets in {len(universe.classes)} classes "
            f"({', '.join(universe.classes)})"
        )
        asyncio.run(
            run_service(
                settings, universe, bootstrap, console.print, scenario, speed, replay=replay or ()
            )
        )
    except broker.KafkaLauncherError as exc:
        raise _fail(str(exc)) from None
    except (MarketsUnavailableError, ValueError) as exc:  # a bad recording is a ValueError
        if not replay:
            raise
        raise _fail(f"--replay: {exc}", 2) from None
    finally:
        if embedded:
            try:
                broker.stop(home)
                console.print("embedded Kafka stopped")
            except broker.BrokerNotRunningError:
                pass


@app.command("demo")
def demo(
    speed: Annotated[
        float | None, typer.Option(min=1, help="X times real time (default 700: ~3 min)")
    ] = None,
    seconds: Annotated[float | None, typer.Option(min=1, help="stop after N seconds")] = None,
    no_live: Annotated[bool, typer.Option("--no-live", help="plain snapshots (no TTY)")] = False,
) -> None:
    """The synthetic fire sale at high speed, with a live view of prices, correlations,
    the co-selling score and flags. Kafka: a fresh embedded broker unless
    FIRESALE_KAFKA_BOOTSTRAP is set. Ctrl-C stops everything."""
    from streams import demo as d

    settings = _settings()
    try:
        d.demo(settings, _universe(settings), console, speed=speed or d.DEFAULT_SPEED,
               seconds=seconds, live=not no_live)  # fmt: skip
    except (broker.KafkaLauncherError, d.DemoError) as exc:
        raise _fail(str(exc)) from None


@app.command("tail")
def tail(
    topic_name: Annotated[str, typer.Argument(metavar="TOPIC", help="a registered topic")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="start at the oldest record, not the end")
    ] = False,
    bootstrap: BootstrapOpt = None,
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="stop after N records")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="each record's JSON on one line (notes on stderr)")
    ] = False,
) -> None:
    """Print a topic's records, one line each: time (UTC), key, fields. Ctrl-C stops.

    Records that are not valid events of the topic are shown as such, with the reason.
    """
    import os
    import sys

    from rich.text import Text

    from streams import tail as t
    from streams.topics import topic

    try:
        spec = topic(topic_name)
    except KeyError as exc:
        raise _fail(str(exc.args[0]), 2) from None
    target = _bootstrap(_settings(), bootstrap)
    out = t.LineConsole(soft_wrap=True)

    def emit(line: Text | str) -> None:
        if isinstance(line, str):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        else:
            out.print(line)

    def note(message: str) -> None:
        err_console.print(Text(message, style="dim"))

    run = t.tail(
        target, spec, from_beginning=from_beginning, max_records=max_records, as_json=as_json,
        emit=emit, note=note,
    )  # fmt: skip
    try:
        asyncio.run(run)
    except t.TailError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:  # `firesale tail ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


app.command("connect")(cli_connect.connect)
app.command("replay")(cli_connect.replay)
app.command("worker")(cli_worker.worker)


@app.command("backtest")
def backtest(
    bars: Annotated[Path, typer.Option("--bars", help="BARS.csv: ts,asset,asset_class,close")],
    out: Annotated[Path, typer.Option("--out", help="output directory (created)")],
    liquidations: Annotated[
        Path | None, typer.Option("--liquidations", help="LIQ.csv: ts,asset,side,notional_usd")
    ] = None,
    funding: Annotated[
        Path | None, typer.Option("--funding", help="FUND.csv: ts,asset,rate_annualized")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="bar interval (5m, 1h, 1d...); default: median spacing")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="universe TOML: its asset classes override the CSV's")
    ] = None,
    liq_bucket: Annotated[
        str, typer.Option(help="LIQ rows are: auto | none (events) | a bucket length (4h)")
    ] = "auto",
    calendar: Annotated[
        str, typer.Option(help="auto | union (every bar) | common (bars where all classes trade)")
    ] = "auto",
) -> None:
    """Run the detector over history CSVs, no Kafka: OUT/signals.jsonl, bars.jsonl, report.html.

    Formats and decisions: README, "Backtest". Malformed input exits with code 2.
    """
    from streams import backtest as bt

    if calendar not in ("auto", "union", "common"):
        raise _fail(f"--calendar {calendar!r}: use auto, union or common", 2)
    try:
        result = bt.run_backtest(
            bars, out, liquidations, funding, interval, config, liq_bucket,
            cast(bt.Calendar, calendar), progress=True,
        )  # fmt: skip
    except bt.BacktestError as exc:
        raise _fail(str(exc), 2) from None
    for line in bt.summary_lines(result):
        console.print(line, highlight=False, markup=False)
    written = ", ".join(str(out / n) for n in ("signals.jsonl", "bars.jsonl", "report.html"))
    console.print(f"wrote {written}", highlight=False, markup=False)


def main() -> None:
    """Console-script entry point."""
    app()
