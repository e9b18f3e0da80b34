"""The shipped Prometheus and Alertmanager configs: promtool and amtool accept them, the rule
unit tests pass (and can fail), every alert has a firing and a silent unit test and a runbook,
routes go where they should, and a real Alertmanager inhibits market alerts while the feeds or
the pipeline behind them are down (and lets them through once the cause resolves).

Tools from Debian's packages (``make tools``); a missing one fails with that hint.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.stack import (
    ALERTMANAGER_YML,
    DEPLOY,
    PROMETHEUS_YML,
    RULES_DIR,
    Notification,
    Server,
    WebhookReceiver,
    alertmanager_test_config,
    am_alert,
    am_states,
    load_yaml,
    run_tool,
    start_alertmanager,
    wait_until,
)

UNIT_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
RUNBOOK_BASE = "https://github.com/firesale/firesale/blob/main/deploy/runbooks/"
MARKET_ALERTS = {
    "FiresaleCoSellingActive": ("critical", "markets"),
    "FiresaleLiquidationCascade": ("critical", "markets"),
    "FiresaleCorrelationRegimeShift": ("warning", "markets"),
    "FiresaleFundingStress": ("warning", "markets"),
}
OPS_ALERTS = {
    "FiresaleFeedDown": ("critical", "ops"),
    "FiresaleFeedStale": ("critical", "ops"),
    "FiresalePipelineStalled": ("critical", "ops"),
    "FiresaleConsumerLag": ("critical", "ops"),
    "FiresaleNoSignal": ("critical", "ops"),
    "FiresaleDeadLetterSpike": ("warning", "ops"),
}
INHIBITING = ("FiresaleFeedDown", "FiresaleFeedStale", "FiresalePipelineStalled")


def _rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of ``rules/<kind>.yml``."""
    doc = load_yaml(RULES_DIR / f"{kind}.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


# --- promtool -------------------------------------------------------------------------------


def test_promtool_check_config_reads_both_rule_files() -> None:
    result = run_tool(["promtool", "check", "config", str(PROMETHEUS_YML)])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "SUCCESS: 2 rule files found" in out
    assert f"SUCCESS: {len(_rules('alerts'))} rules found" in out
    assert f"SUCCESS: {len(_rules('recording'))} rules found" in out
    assert len(_rules("alerts")) == 11  # ten alerts, FiresaleFeedDown has two rules
    jobs = [j["job_name"] for j in load_yaml(PROMETHEUS_YML)["scrape_configs"]]
    assert jobs == ["firesale-connectors", "firesale-workers"]


def test_promtool_check_rules() -> None:
    files = sorted(str(p) for p in RULES_DIR.glob("*.yml"))
    assert [Path(f).name for f in files] == ["alerts.yml", "recording.yml"]
    result = run_tool(["promtool", "check", "rules", *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2, result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert [p.name for p in UNIT_TESTS] == [
        "market_alerts_test.yml",
        "ops_alerts_test.yml",
        "recording_rules_test.yml",
    ]
    result = run_tool(["promtool", "test", "rules", *map(str, UNIT_TESTS)], timeout_s=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("SUCCESS") == len(UNIT_TESTS), out
    assert "FAILED" not in out


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A copy whose co-selling expectation says warning instead of critical must fail."""
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    test = tmp_path / "prometheus" / "tests" / "market_alerts_test.yml"
    text = test.read_text()
    wrong = text.replace("severity: critical", "severity: warning", 1)
    assert wrong != text
    test.write_text(wrong)
    result = run_tool(["promtool", "test", "rules", str(test)], timeout_s=120)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "FAILED" in out
    assert "alertname: FiresaleCoSellingActive, time: 2m" in out


def test_every_alert_has_labels_annotations_and_a_runbook() -> None:
    rules = _rules("alerts")
    names = {r["alert"] for r in rules}
    assert names == set(MARKET_ALERTS) | set(OPS_ALERTS)
    for rule in rules:
        name = rule["alert"]
        severity, team = (MARKET_ALERTS | OPS_ALERTS)[name]
        kind = "market" if name in MARKET_ALERTS else "ops"
        labels = rule["labels"]
        assert (labels["severity"], labels["team"], labels["kind"]) == (severity, team, kind)
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{name}.md"
        runbook = (DEPLOY / "runbooks" / f"{name}.md").read_text()
        assert runbook.startswith(f"# {name}\n"), name
        for section in ("## What it means", "## What to check", "## What to do"):
            assert section in runbook, (name, section)
        assert "```promql" in runbook, name  # concrete queries to run
    feed_alerts = [r for r in rules if r["alert"] in ("FiresaleFeedDown", "FiresaleFeedStale")]
    for rule in feed_alerts:  # per venue: grouped and inhibited by venue
        assert "venue" in rule["labels"] or "by (venue)" in rule["expr"], rule["alert"]
    assert sorted(p.stem for p in (DEPLOY / "runbooks").glob("*.md")) == sorted(names)


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: dict[str, list[dict[str, Any]]] = {}
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    firing.setdefault(check["alertname"], []).extend(check["exp_alerts"])
                else:
                    silent.add(check["alertname"])
    names = set(MARKET_ALERTS) | set(OPS_ALERTS)
    assert set(firing) == names
    assert silent == names
    for name, expected in firing.items():
        severity, team = (MARKET_ALERTS | OPS_ALERTS)[name]
        for alert in expected:
            labels, annotations = alert["exp_labels"], alert["exp_annotations"]
            assert (labels["severity"], labels["team"]) == (severity, team), name
            assert labels["kind"] == ("market" if name in MARKET_ALERTS else "ops"), name
            assert set(annotations) == {"summary", "description", "runbook_url"}, name


# --- amtool ---------------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    result = run_tool(["amtool", "check-config", str(ALERTMANAGER_YML)])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "SUCCESS" in out
    assert " - 3 inhibit rules" in out
    assert " - 2 receivers" in out


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=FiresaleCoSellingActive", "severity=critical", "kind=market"], "pagerduty"),
        (["alertname=FiresaleFeedStale", "severity=critical", "venue=okx"], "pagerduty"),
        (["alertname=FiresaleFundingStress", "severity=warning", "kind=market"], "slack"),
        (["alertname=FiresaleDeadLetterSpike", "severity=warning", "venue=okx"], "slack"),
        (["alertname=SomethingElse"], "slack"),  # no severity: the default route
    ],
)
def test_amtool_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = run_tool(
        ["amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


# --- a real Alertmanager --------------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[Server, WebhookReceiver]]:
    """The shipped alertmanager.yml (receivers -> local webhook, 1 s waits), running."""
    hook = WebhookReceiver().start()
    try:
        server = start_alertmanager(alertmanager_test_config(hook.url), tmp_path / "am")
        try:
            yield server, hook
        finally:
            server.stop()
    finally:
        hook.stop()


def _labels(name: str, **extra: str) -> dict[str, str]:
    severity, team = (MARKET_ALERTS | OPS_ALERTS)[name]
    kind = "market" if name in MARKET_ALERTS else "ops"
    return {"alertname": name, "severity": severity, "team": team, "kind": kind, **extra}


MARKET = [
    _labels("FiresaleCoSellingActive"),
    _labels("FiresaleLiquidationCascade", asset="BTC", side="long"),
    _labels("FiresaleCorrelationRegimeShift", class_pair="all"),
    _labels("FiresaleFundingStress", asset="ETH"),
]
SOURCE_LABELS = {
    "FiresaleFeedDown": _labels("FiresaleFeedDown", venue="okx"),
    "FiresaleFeedStale": _labels("FiresaleFeedStale", venue="bybit"),
    "FiresalePipelineStalled": _labels("FiresalePipelineStalled"),
}


def _sent(notes: list[Notification]) -> dict[str, str]:
    """alertname -> receiver path of every firing alert notified so far."""
    return {
        a["labels"]["alertname"]: n.path
        for n in notes
        for a in n.payload["alerts"]
        if a["status"] == "firing"
    }


@pytest.mark.parametrize("source", INHIBITING)
def test_market_alerts_are_inhibited_while_the_feeds_or_pipeline_are_down(
    alertmanager: tuple[Server, WebhookReceiver], source: str
) -> None:
    server, hook = alertmanager
    cause = SOURCE_LABELS[source]
    control = _labels("FiresaleConsumerLag", topic="ticks.price.v1")  # ops, never a target
    assert server.post("/api/v2/alerts", [am_alert(cause)]) == 200
    wait_until(lambda: (source, cause.get("venue", "")) in am_states(server), 10,
               f"{source} in Alertmanager", server.problem)  # fmt: skip
    assert server.post("/api/v2/alerts", [am_alert(m) for m in [*MARKET, control]]) == 200

    notes = hook.wait_for(
        lambda ns: {source, "FiresaleConsumerLag"} <= set(_sent(list(ns))), 20, server.problem
    )
    time.sleep(3)  # three group_interval (1 s) flushes more: an inhibited alert would be out
    states = am_states(server)
    cause_fp = states[source, cause.get("venue", "")]["fingerprint"]
    for market in MARKET:
        status = states[market["alertname"], ""]
        assert status["state"] == "suppressed", (market["alertname"], status)
        assert status["inhibitedBy"] == [cause_fp], market["alertname"]
    assert states[source, cause.get("venue", "")]["state"] == "active"
    assert states["FiresaleConsumerLag", ""]["state"] == "active"
    notes = hook.snapshot()
    assert _sent(notes) == {source: "/pagerduty", "FiresaleConsumerLag": "/pagerduty"}

    # The cause resolves: the market alerts go out, each by its severity's route.
    now = datetime.now(UTC).isoformat()
    assert server.post("/api/v2/alerts", [am_alert(cause, ends_at=now)]) == 200
    notes = hook.wait_for(
        lambda ns: {m["alertname"] for m in MARKET} <= set(_sent(list(ns))), 20, server.problem
    )
    assert _sent(notes) == {
        source: "/pagerduty",
        "FiresaleConsumerLag": "/pagerduty",
        "FiresaleCoSellingActive": "/pagerduty",
        "FiresaleLiquidationCascade": "/pagerduty",
        "FiresaleCorrelationRegimeShift": "/slack",
        "FiresaleFundingStress": "/slack",
    }
    resolved = [n for n in notes if n.status == "resolved" and n.alerts(source)]
    assert [n.path for n in resolved] == ["/pagerduty"]
    assert all(s["state"] == "active" for s in am_states(server).values())


def test_feed_down_inhibits_the_same_venue_stale_and_stalled_inhibits_no_signal(
    alertmanager: tuple[Server, WebhookReceiver],
) -> None:
    server, hook = alertmanager
    down_okx = _labels("FiresaleFeedDown", venue="okx")
    stalled = _labels("FiresalePipelineStalled")
    assert server.post("/api/v2/alerts", [am_alert(down_okx), am_alert(stalled)]) == 200
    wait_until(lambda: len(am_states(server)) == 2, 10, "two causes", server.problem)
    targets = [
        _labels("FiresaleFeedStale", venue="okx"),
        _labels("FiresaleFeedStale", venue="bybit"),
        _labels("FiresaleNoSignal"),
    ]
    assert server.post("/api/v2/alerts", [am_alert(t) for t in targets]) == 200
    wait_until(lambda: len(am_states(server)) == 5, 10, "five alerts", server.problem)
    hook.wait_for(lambda ns: any(n.alerts("FiresaleFeedStale") for n in ns), 20, server.problem)
    time.sleep(3)
    states = am_states(server)
    assert states["FiresaleFeedStale", "okx"]["state"] == "suppressed"
    assert states["FiresaleFeedStale", "okx"]["inhibitedBy"] == [
        states["FiresaleFeedDown", "okx"]["fingerprint"]
    ]
    assert states["FiresaleFeedStale", "bybit"]["state"] == "active"  # another venue: paged
    assert states["FiresaleNoSignal", ""]["state"] == "suppressed"
    assert states["FiresaleNoSignal", ""]["inhibitedBy"] == [
        states["FiresalePipelineStalled", ""]["fingerprint"]
    ]
    stale = [
        (n.path, a["labels"]["venue"])
        for n in hook.snapshot()
        for a in n.alerts("FiresaleFeedStale")
    ]
    assert stale == [("/pagerduty", "bybit")]
    assert not any(n.alerts("FiresaleNoSignal") for n in hook.snapshot())


def test_runbook_links_in_the_rules_match_the_file_names() -> None:
    """runbook_url is a fixed repository link (no external label needed to render it)."""
    text = (RULES_DIR / "alerts.yml").read_text()
    links = re.findall(r'runbook_url: "([^"]+)"', text)
    assert len(links) == len(_rules("alerts"))
    for link in links:
        assert link.startswith(RUNBOOK_BASE)
        assert (DEPLOY / "runbooks" / link.removeprefix(RUNBOOK_BASE)).is_file(), link
