"""End to end: a running firesale (the fire-sale scenario) → a real Prometheus scraping it and
evaluating deploy/prometheus/rules → a real Alertmanager with deploy/alertmanager's routes and
inhibitions → a local webhook standing in for PagerDuty and Slack.

The co-selling page must arrive on the PagerDuty route with its labels and annotations (the
score in the description is the one Prometheus scraped), after the worker published
``cosell.start`` inside the labelled fire sale; the resolved notification must follow the
worker's ``cosell.end`` in the recovery. On the same run, every query of every Grafana
dashboard must return data.

Timing: the scenario is 26 h calm (the detectors' warm-up) → 2 h fire sale → 6 h recovery of
simulated time. At ``SPEED`` = 1500 its events are produced in 82 s; the worker, the bottleneck
on two cores, has processed them about 110 s after the start (5-minute bars: 408 bars).
Measured: flag up at 74 s, page 2 s later; flag down at 106 s, resolved 1 s later; the module
takes about 2 minutes. The window is bounded: once the source has finished it reports its
feeds down, so FiresaleFeedDown fires (and inhibits market alerts) about 200 s after the start.
Kafka is a broker of this module's own:
on the session broker, ``ticks.*`` hold other tests' scenarios whose event times lie hours
ahead, and a worker with a new consumer group reads them from the log start — its watermark
would then drop this run's ticks as late (streams/demo.py says the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.kafka import broker
from streams.events import SignalEvent, decode
from tests.deploy.stack import (
    DEPLOY,
    FiresaleRun,
    Notification,
    Server,
    WebhookReceiver,
    alertmanager_test_config,
    prom_query,
    prom_query_range,
    prometheus_test_config,
    start_alertmanager,
    start_firesale_run,
    start_prometheus,
    tool_path,
)

pytestmark = pytest.mark.kafka

SPEED = 1500.0
BAR_INTERVAL_S = 300  # the demo's bars: the detectors' spans are in time, bars are CPU
COSELL = "FiresaleCoSellingActive"
RUNBOOK = (
    "https://github.com/firesale/firesale/blob/main/deploy/runbooks/FiresaleCoSellingActive.md"
)
FIRING_TIMEOUT_S = 240.0  # from the start of the run
RESOLVED_TIMEOUT_S = 120.0  # from the page
DESCRIPTION = re.compile(
    r"^The co-selling flag is up with score (\d\.\d\d) \(0\.\.1; the worker raises the flag at "
    r">= 0\.65 and lowers it after 6 bars under 0\.40\)\. Correlations, breadth of selling and "
    r"liquidations point to forced selling across asset classes\.$"
)


@dataclass
class Stack:
    """The running pieces, and the co-selling notifications once they came."""

    run: FiresaleRun
    prometheus: Server
    alertmanager: Server
    hook: WebhookReceiver
    bootstrap: str
    cycle: tuple[Notification, Notification] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def problem(self) -> str | None:
        """The first process that died, with its log tail."""
        return self.run.problem() or self.prometheus.problem() or self.alertmanager.problem()

    def cosell_cycle(self) -> tuple[Notification, Notification]:
        """The first co-selling page and the first resolved notification after it."""
        if self.cycle is None:
            left = FIRING_TIMEOUT_S - (time.time() - self.run.started_s)
            notes = self.hook.wait_for(lambda ns: _first(ns, "firing") is not None, left,
                                       self.problem)  # fmt: skip
            firing = _first(notes, "firing")
            assert firing is not None
            notes = self.hook.wait_for(
                lambda ns: _first(ns, "resolved", after=firing) is not None,
                RESOLVED_TIMEOUT_S,
                self.problem,
            )
            resolved = _first(notes, "resolved", after=firing)
            assert resolved is not None
            self.cycle = firing, resolved
        return self.cycle


def _first(
    notes: Sequence[Notification], status: str, after: Notification | None = None
) -> Notification | None:
    """The first notification carrying the co-selling alert in ``status`` (after ``after``)."""
    seen = after is None
    for note in notes:
        if note is after:
            seen = True
            continue
        if seen and any(a["status"] == status for a in note.alerts(COSELL)):
            return note
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Kafka, Alertmanager + webhook, ``firesale run --scenario fire-sale``, Prometheus."""
    for tool in ("prometheus", "alertmanager"):
        tool_path(tool)  # before starting anything: a clear "make tools" error
    home = tmp_path_factory.mktemp("alerting-e2e")
    with contextlib.ExitStack() as stop:
        info = broker.start(home / "kafka", None, detach=False)
        stop.callback(broker.stop, home / "kafka")
        hook = WebhookReceiver().start()
        stop.callback(hook.stop)
        am = start_alertmanager(alertmanager_test_config(hook.url), home / "alertmanager")
        stop.callback(am.stop)
        env = {
            "FIRESALE_APP_ID": f"alerting-e2e-{uuid.uuid4().hex[:12]}",
            "FIRESALE_BAR_INTERVAL_S": str(BAR_INTERVAL_S),
            "FIRESALE_CACHE_DIR": str(home / "cache"),  # faust's data dir: ours alone
        }
        run = start_firesale_run(info.bootstrap, home / "run", "fire-sale", SPEED, env)
        stop.callback(run.stop)
        config = prometheus_test_config(
            connectors=[f"127.0.0.1:{run.metrics_port}"],
            workers=[f"127.0.0.1:{run.metrics_port + 1}"],
            alertmanager=f"127.0.0.1:{am.port}",
        )
        prometheus = start_prometheus(config, home / "prometheus")
        stop.callback(prometheus.stop)
        yield Stack(run, prometheus, am, hook, info.bootstrap)


async def _read_all(bootstrap: str, topic: str) -> list[SignalEvent]:
    """Every record of a one-partition topic, decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[SignalEvent] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                out += [decode(SignalEvent, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


def _iso_s(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _flag_edges(stack: Stack, until_s: float) -> tuple[float, float]:
    """Scrape times at which Prometheus first saw the flag up, and down again after."""
    window_s = int(until_s - stack.run.started_s) + 5
    series = prom_query(stack.prometheus, f"firesale_cosell_active[{window_s}s]", until_s)
    assert len(series) == 1, series  # one worker: its raw samples
    points = [(float(t), float(v)) for t, v in series[0]["values"]]
    assert points[0][1] == 0.0, points[:5]  # down before the fire sale
    up = next(t for t, v in points if v == 1.0)
    down = next(t for t, v in points if t > up and v == 0.0)
    return up, down


def test_cosell_page_arrives_with_its_labels_and_annotations_then_resolves(
    stack: Stack,
) -> None:
    firing, resolved = stack.cosell_cycle()
    t0 = stack.run.started_s

    # The page: the PagerDuty route (severity=critical), exactly our labels and annotations.
    assert firing.path == "/pagerduty"
    assert firing.payload["receiver"] == "pagerduty"
    assert firing.payload["groupLabels"] == {"alertname": COSELL}
    [alert] = firing.alerts(COSELL)
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": COSELL, "severity": "critical", "team": "markets",
                               "kind": "market"}  # fmt: skip
    notes = alert["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert notes["summary"] == "Fire sale: assets of several classes are being sold together"
    assert notes["runbook_url"] == RUNBOOK
    match = DESCRIPTION.match(notes["description"])
    assert match is not None, notes["description"]
    # The score quoted is what Prometheus had scraped from the worker when the alert fired.
    fired_s = _iso_s(alert["startsAt"])
    [score] = prom_query(stack.prometheus, "max(firesale_cosell_score)", fired_s)
    assert match.group(1) == f"{float(score['value'][1]):.2f}"
    assert float(match.group(1)) >= 0.4  # the flag is only up above θ_off (or for 6 bars)

    # Resolved: the same alert, ended, on the same route.
    assert resolved.path == "/pagerduty"
    [ended] = resolved.alerts(COSELL)
    assert ended["status"] == "resolved"
    assert ended["fingerprint"] == alert["fingerprint"]
    assert ended["labels"] == alert["labels"]
    assert _iso_s(ended["endsAt"]) > fired_s

    # Both follow the flag as Prometheus scraped it, within a few seconds (scrape 1 s,
    # evaluation 1 s, Alertmanager group_wait/group_interval 1 s in the test copy).
    up_s, down_s = _flag_edges(stack, resolved.received_s)
    stack.timings |= {
        "flag up (run s)": up_s - t0,
        "page (run s)": firing.received_s - t0,
        "page latency s": firing.received_s - up_s,
        "flag down (run s)": down_s - t0,
        "resolved (run s)": resolved.received_s - t0,
        "resolved latency s": resolved.received_s - down_s,
    }
    print("timings:", json.dumps({k: round(v, 1) for k, v in stack.timings.items()}))
    assert -1.0 <= firing.received_s - up_s <= 10.0, stack.timings
    assert -1.0 <= resolved.received_s - down_s <= 10.0, stack.timings

    # ... and the worker's signal records: the start inside the labelled fire sale, the end in
    # the recovery, each published before its notification.
    events = asyncio.run(_read_all(stack.bootstrap, "signals.cosell.v1"))
    start = next(e for e in events if e.type == "cosell.start")
    end = next(e for e in events if e.type == "cosell.end" and e.ts_event_ns > start.ts_event_ns)
    phases = stack.run.phases()
    assert set(phases) == {"calm", "fire_sale", "recovery"}, stack.run.log_text()[-2000:]
    fire_start, fire_end = phases["fire_sale"]
    recovery_start, recovery_end = phases["recovery"]
    assert fire_start <= start.ts_event_ns / 1e9 < fire_end
    assert recovery_start <= end.ts_event_ns / 1e9 < recovery_end
    assert start.ts_emit_ns / 1e9 <= firing.received_s
    assert end.ts_emit_ns / 1e9 <= resolved.received_s


# --- every dashboard query on the same run --------------------------------------------------

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
NO_DATA_IN_A_SCENARIO: set[str] = set()  # every panel must show data on a scenario run
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval with 1 s scrapes is at most this
_BUILTIN = re.compile(r"\$\{?(__rate_interval|__interval|__range_s|__range_ms|__range)\}?")


def expand(expr: str, variables: list[str], range_s: int) -> str:
    """A panel query as Grafana would send it with every variable on "All".

    ``$__rate_interval``/``$__interval`` become 1m, ``$__range`` the run's length; a template
    variable must sit in a label matcher, which then matches anything (``=~".*"``).

    Examples
    --------
    >>> expand('rate(x{venue=~"$venue", side="${side}"}[$__rate_interval])',
    ...        ["venue", "side"], 300)
    'rate(x{venue=~".*", side=~".*"}[1m])'
    >>> expand("increase(x[$__range])", [], 300)
    'increase(x[300s])'
    """
    builtins = {"__rate_interval": RATE_INTERVAL, "__interval": RATE_INTERVAL,
                "__range": f"{range_s}s", "__range_s": str(range_s),
                "__range_ms": str(range_s * 1000)}  # fmt: skip
    out = _BUILTIN.sub(lambda m: builtins[m.group(1)], expr)
    for name in variables:
        ref = rf"(?:\${name}\b|\$\{{{name}(?::\w+)?\}}|\[\[{name}\]\])"
        out = re.sub(rf'(\w+)\s*=~?\s*"{ref}"', r'\1=~".*"', out)
        if re.search(ref, out):
            raise AssertionError(f"${name} used outside a label matcher in {expr!r}")
    return out


def _panel_queries(doc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(title, expr, instant) of every panel target (rows included) and annotation."""
    out: list[tuple[str, str, bool]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel.get("title", "?"), target["expr"],
                                bool(target.get("instant"))))  # fmt: skip
            walk(panel.get("panels", []))

    walk(doc.get("panels", []))
    for ann in doc.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            out.append((f"annotation {ann.get('name')}", ann["expr"], False))
    return out


def _has_value(result: list[Any]) -> bool:
    """At least one finite number in an instant or range result (NaN shows nothing)."""
    for series in result:
        values = series.get("values") or [series.get("value")]
        if any(v is not None and math.isfinite(float(v[1])) for v in values):
            return True
    return False


def test_every_dashboard_query_returns_data_on_the_running_stack(stack: Stack) -> None:
    assert [p.name for p in DASHBOARDS] == [
        "correlation.json",
        "liquidations.json",
        "overview.json",
        "pipeline.json",
    ]
    stack.cosell_cycle()  # the run went through the fire sale and its recovery
    now = time.time()
    range_s = int(now - stack.run.started_s) + 1
    empty: list[str] = []
    checked = 0
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        variables = [v["name"] for v in doc.get("templating", {}).get("list", [])
                     if v.get("type") != "datasource"]  # fmt: skip
        for title, raw, instant in _panel_queries(doc):
            expr = expand(raw, variables, range_s)
            if instant:
                result = prom_query(stack.prometheus, expr, now)
            else:
                result = prom_query_range(stack.prometheus, expr, stack.run.started_s, now, 5)
            checked += 1
            exempt = any(name in expr for name in NO_DATA_IN_A_SCENARIO)
            if _has_value(result) == exempt:  # data where none can be is news too
                empty.append(f"{path.name} / {title}: {expr} (exempt: {exempt})")
    assert checked >= 40, checked
    assert empty == [], "panels without data on the scenario run:\n" + "\n".join(empty)


def test_the_stack_is_still_healthy(stack: Stack) -> None:
    """Nothing died during the run (a crash would make the other assertions meaningless)."""
    stack.cosell_cycle()
    assert stack.problem() is None
    targets = stack.prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health == {"firesale-connectors": "up", "firesale-workers": "up"}


def test_no_ops_alert_fired_while_the_scenario_ran(stack: Stack) -> None:
    """The pipeline kept up: no feed, lag, stall or no-signal page until the co-selling episode
    resolved. (Later the scenario source, finished, reports its feeds down: FiresaleFeedDown
    2 minutes after its last event.)"""
    _, resolved = stack.cosell_cycle()
    during = [n for n in stack.hook.snapshot() if n.received_s <= resolved.received_s]
    ops = [
        (n.path, a["labels"]["alertname"])
        for n in during
        for a in n.payload["alerts"]
        if a["labels"].get("kind") == "ops"
    ]
    assert ops == []
    names = sorted({a["labels"]["alertname"] for n in during for a in n.payload["alerts"]})
    print("alerts notified during the run:", names)
    assert COSELL in names
