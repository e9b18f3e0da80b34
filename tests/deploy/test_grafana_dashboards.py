"""The Grafana dashboards: committed JSON = generated JSON, every panel is complete, every query
is valid PromQL (real ``promtool``) over metrics and labels our processes really export, and the
query idioms do what they claim (``promtool test rules`` on synthetic series).

promtool comes from Debian's ``prometheus`` package (``make tools``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connectors.metrics import ConnectorMetrics
from connectors.okx.parse import OkxParser
from deploy.grafana import build
from deploy.grafana.boards_market import SAMPLED_VENUES
from deploy.grafana.kit import DATASOURCE_UID
from signals.detector_params import DetectorParams
from streams.events import Liquidation
from streams.metrics import PipelineMetrics
from tests.connectors import binance_cases
from tests.connectors.fake_okx import okx_fixture
from tests.connectors.test_bybit_parse import frame as bybit_frame
from tests.connectors.test_bybit_parse import parse as bybit_parse
from tests.connectors.test_okx_parse import ALL as OKX_INSTRUMENTS
from tests.promtool import promtool_path

GRAFANA = Path(build.__file__).resolve().parent
PROVISIONING = GRAFANA / "provisioning"

# Template variables as a query would see them with "All" selected; Grafana's interval macros
# as typical values (Grafana docs, "Global variables").
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$venue": ".*",
    "$asset": ".*",
    "$side": ".*",
    "$class_pair": ".*",
}
# Series Prometheus itself adds for every scrape target (Prometheus docs, "Jobs and instances").
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
# Families no panel needs to show, and why.
NOT_ON_A_DASHBOARD = {
    "firesale_connector_filtered_total": "well-formed items outside the universe: not an error",
}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def boards() -> dict[str, dict[str, Any]]:
    """The committed dashboards' JSON models by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(build.DASHBOARDS_DIR.glob("*.json"))
    }


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows are layout only)."""
    return [p for p in model["panels"] if p["type"] != "row"]


def all_exprs() -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target and annotation query of every dashboard."""
    for name, model in boards().items():
        for title, ref_id, expr in build.panel_targets(model):
            yield f"{name} / {title} / {ref_id}", expr
        for annotation in model.get("annotations", {}).get("list", []):
            yield f"{name} / annotation {annotation['name']}", annotation["expr"]


def substitute(expr: str) -> str:
    """``expr`` with every Grafana variable replaced (longest names first: $__range_ms...)."""
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def panel_expr(board_file: str, title: str, ref_id: str = "A") -> str:
    """The substituted expr of one panel target."""
    for t, r, expr in build.panel_targets(boards()[board_file]):
        if (t, r) == (title, ref_id):
            return substitute(expr)
    raise AssertionError(f"no target {ref_id} in panel {title!r} of {board_file}")


def exported_series() -> dict[str, set[str]]:
    """Series name → label names, as Prometheus scrapes them from the worker and connectors.

    Every family is given one child per label set and a value, then rendered by
    prometheus_client and parsed back, so the names are the exposition's own (``_total``,
    ``_bucket``, ``_created``...).
    """
    registry = CollectorRegistry()
    families = [
        *vars_of(PipelineMetrics.create(registry)),
        *vars_of(ConnectorMetrics.create(registry)),
    ]
    for metric in families:
        # prometheus_client keeps label names in _labelnames (no public accessor).
        label_names: tuple[str, ...] = metric._labelnames
        child = metric.labels(*["x"] * len(label_names)) if label_names else metric
        if hasattr(child, "inc"):
            child.inc()
        elif hasattr(child, "observe"):
            child.observe(0.1)
        else:
            child.set(1)
    text = generate_latest(registry).decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def vars_of(metrics: object) -> list[Any]:
    """The metric objects of a frozen metrics dataclass."""
    return [getattr(metrics, name) for name in metrics.__dataclass_fields__]  # type: ignore[attr-defined]


def family(series_name: str) -> str:
    """The family a histogram's series belongs to (other names are their own family)."""
    return re.sub(r"_(bucket|sum|count)$", "", series_name)


def promql_references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """Metric names in ``expr`` with the labels matched on each, and the grouping labels.

    A small lexer, enough for our queries: strings, ranges and matchers are taken out, then
    every identifier that is not a function call, keyword or number is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    matched: dict[str, set[str]] = {}
    for name, body in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", text):
        matched.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    grouping: set[str] = set()
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        grouping.update(x.strip() for x in clause.split(",") if x.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w.])\d[\w.]*", " ", text)  # numbers (1e9, 0.99)
    for name in re.findall(r"(?<![\w:])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", text):
        if name.lower() not in PROMQL_WORDS:
            matched.setdefault(name, set())
    return matched, grouping


# --- generated = committed -------------------------------------------------------------------


def test_committed_dashboards_are_the_generated_ones() -> None:
    assert build.check() == []
    assert sorted(boards()) == [
        "correlation.json",
        "liquidations.json",
        "overview.json",
        "pipeline.json",
    ]
    assert build.main(["--check"]) == 0


def test_check_reports_drift_missing_and_stray_files(tmp_path: Path) -> None:
    written = build.write(tmp_path)
    assert build.check(tmp_path) == []
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    overview = tmp_path / "overview.json"
    model = json.loads(overview.read_text())
    model["panels"][1]["title"] = "edited in the UI"
    overview.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
    (tmp_path / "pipeline.json").unlink()
    (tmp_path / "old.json").write_text("{}")
    assert build.check(tmp_path) == [
        f"{overview}: differs from the generated dashboard",
        f"{tmp_path / 'pipeline.json'}: missing",
        f"{tmp_path / 'old.json'}: not generated by deploy/grafana/build.py",
    ]
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
    assert len(written) == 4


# --- structure -------------------------------------------------------------------------------


def test_every_panel_has_title_description_datasource_and_targets() -> None:
    seen = 0
    for name, model in boards().items():
        ids = [p["id"] for p in model["panels"]]
        assert ids == list(range(1, len(ids) + 1)), name
        for panel in panels(model):
            where = f"{name} / {panel.get('title')!r}"
            assert panel["title"].strip(), where
            assert len(panel["description"]) > 20, where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            targets = panel["targets"]
            assert targets, where
            assert [t["refId"] for t in targets] == list("ABCDEFGH"[: len(targets)]), where
            assert all(t["expr"].strip() for t in targets), where
            seen += 1
    assert seen == 39


def test_datasource_variable_defaults_to_the_provisioned_prometheus() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (datasource,) = provisioned["datasources"]
    assert (datasource["uid"], datasource["type"]) == (DATASOURCE_UID, "prometheus")
    assert datasource["url"] == "${FIRESALE_PROMETHEUS_URL}"
    for name, model in boards().items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        ds = variables["datasource"]
        assert (ds["type"], ds["query"], ds["current"]["value"]) == (
            "datasource",
            "prometheus",
            DATASOURCE_UID,
        ), name


def test_dashboard_provider_loads_the_generated_folder() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "firesale.yml").read_text())
    (files,) = provider["providers"]
    assert files["type"] == "file"
    assert files["options"]["path"] == "/var/lib/grafana/dashboards/firesale"
    assert files["allowUiUpdates"] is False
    uids = sorted(m["uid"] for m in boards().values())
    assert uids == [
        "firesale-correlation",
        "firesale-liquidations",
        "firesale-overview",
        "firesale-pipeline",
    ]


def test_score_thresholds_are_the_detectors() -> None:
    (score,) = [p for p in panels(boards()["overview.json"]) if p["title"] == "Co-selling score"]
    steps = score["fieldConfig"]["defaults"]["thresholds"]["steps"]
    for interval_s in (1, 60, 300):
        cosell = DetectorParams.for_bar_interval(interval_s).cosell
        assert [s["value"] for s in steps] == [None, cosell.theta_off, cosell.theta_on]
    assert [s["value"] for s in steps] == [None, 0.4, 0.65]
    assert "θ_on = 0.65" in score["description"]


def test_sampled_venues_are_the_parsers_sampled_feeds() -> None:
    """The completeness panels name the venues whose parsers mark liquidations ``sampled``."""
    binance = binance_cases.parse(
        binance_cases.make_parser(), binance_cases.fixture("binance_forceOrder.json")
    )
    bybit = bybit_parse(bybit_frame("bybit_allLiquidation.json"))
    okx = OkxParser(OKX_INSTRUMENTS).parse(okx_fixture("okx_liquidation-orders.json"), 0)
    completeness = {
        venue: {e.completeness for e in result.events if isinstance(e, Liquidation)}
        for venue, result in (("binance", binance), ("bybit", bybit), ("okx", okx))
    }
    assert completeness == {"binance": {"sampled"}, "bybit": {"complete"}, "okx": {"sampled"}}
    assert set(SAMPLED_VENUES) == {v for v, c in completeness.items() if c == {"sampled"}}
    liquidations = boards()["liquidations.json"]
    assert 'venue=~"binance|okx"' in panel_expr("liquidations.json", "Share from sampled feeds")
    assert "lower bound" in liquidations["description"]


# --- PromQL ----------------------------------------------------------------------------------


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_path(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = list(all_exprs())
    rules = {
        "groups": [
            {
                "name": "dashboard_queries",
                "rules": [
                    {"record": f"dashboard:query_{i}:check", "expr": substitute(expr)}
                    for i, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    result = run_promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    assert len(exprs) == 56

    # The same check fails on a broken query: the test can fail.
    rules["groups"][0]["rules"] = [{"record": "dashboard:broken", "expr": exprs[0][1][:-1]}]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(rules))
    broken = run_promtool("check", "rules", "broken.yml", cwd=tmp_path)
    assert broken.returncode == 1
    assert "parse error" in broken.stdout + broken.stderr


def test_queries_use_only_exported_metrics_and_labels() -> None:
    series = exported_series() | PROMETHEUS_SERIES
    assert "firesale_liquidation_notional_usd_total" in series
    assert series["firesale_tick_signal_latency_seconds_bucket"] == {"le"}
    used: set[str] = set()
    for where, expr in all_exprs():
        matched, grouping = promql_references(expr)
        assert matched, f"{where}: no metric in {expr!r}"
        for name, labels in matched.items():
            assert name in series, f"{where}: {name} is not exported"
            assert labels <= series[name] | TARGET_LABELS, f"{where}: {name}{sorted(labels)}"
        known = set().union(*(series[n] for n in matched)) | TARGET_LABELS
        assert grouping <= known, f"{where}: grouping by {sorted(grouping - known)}"
        used.update(matched)
    for name, model in boards().items():
        for variable in model["templating"]["list"]:
            if variable["type"] == "query":
                query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
                assert query is not None, f"{name}: ${variable['name']}"
                metric, label = query.groups()
                assert label in series[metric], f"{name}: ${variable['name']}"
    families = {family(n) for n in series if not n.endswith("_created")} - {"up"}
    shown = {family(n) for n in used}
    assert families - shown - set(NOT_ON_A_DASHBOARD) == set(), "families on no dashboard"


def test_the_lexer_finds_names_labels_and_typos() -> None:
    matched, grouping = promql_references(
        'histogram_quantile(0.99, sum by (le) (rate(firesale_x_bucket{a=~"b|c"}[5m]))) '
        'or on() label_replace(vector(0), "reason", "none", "", "") / firesael_typo'
    )
    assert matched == {"firesale_x_bucket": {"a"}, "firesael_typo": set()}
    assert grouping == {"le"}


# --- what the idioms do, on synthetic series (promtool test rules) ----------------------------


def test_zero_fallback_and_signal_owner_on_synthetic_series(tmp_path: Path) -> None:
    """``zero_if_absent``: a 'none' 0 only while the counter has no series; ``market``: the
    signal of the worker that signalled last, not an idle replica's 0 nor a stale old owner's."""
    dead = panel_expr("pipeline.json", "Dead letters by reason (last 15m)")
    score = panel_expr("overview.json", "Co-selling score")
    worker = 'job="firesale-workers", instance="{}"'
    tests: dict[str, Any] = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": "firesale_connector_events_total{venue=\"okx\"}", "values": "0+1x30"}
                ],
                "promql_expr_test": [
                    {"expr": dead, "eval_time": "20m",
                     "exp_samples": [{"labels": '{reason="none"}', "value": 0}]},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'firesale_connector_deadletters_total{venue="okx", '
                               'reason="malformed_json"}', "values": "0+1x30"},
                    # w1 owns the bars now: its last signal is always "now" (60 s a step).
                    {"series": f"firesale_last_signal_timestamp_seconds{{{worker.format('w1')}}}",
                     "values": "0+60x30"},
                    {"series": f"firesale_cosell_score{{{worker.format('w1')}}}",
                     "values": "0.7x30"},
                    # w2 never held the partition: default gauges, 0.
                    {"series": f"firesale_last_signal_timestamp_seconds{{{worker.format('w2')}}}",
                     "values": "0x30"},
                    {"series": f"firesale_cosell_score{{{worker.format('w2')}}}",
                     "values": "0x30"},
                    # w3 owned it until minute 1: its last score is stale.
                    {"series": f"firesale_last_signal_timestamp_seconds{{{worker.format('w3')}}}",
                     "values": "60x30"},
                    {"series": f"firesale_cosell_score{{{worker.format('w3')}}}",
                     "values": "0.9x30"},
                ],
                "promql_expr_test": [
                    {"expr": dead, "eval_time": "20m",
                     "exp_samples": [{"labels": '{venue="okx", reason="malformed_json"}',
                                      "value": 15}]},
                    {"expr": score, "eval_time": "20m", "exp_samples": [{"value": 0.7}]},
                ],
            },
            {
                # Only the stale old owner: no signal at all (a plain max() would say 0.9).
                "interval": "1m",
                "input_series": [
                    {"series": f"firesale_last_signal_timestamp_seconds{{{worker.format('w3')}}}",
                     "values": "60x30"},
                    {"series": f"firesale_cosell_score{{{worker.format('w3')}}}",
                     "values": "0.9x30"},
                ],
                "promql_expr_test": [{"expr": score, "eval_time": "20m", "exp_samples": []}],
            },
        ],
    }  # fmt: skip
    (tmp_path / "idioms.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_promtool("test", "rules", "idioms.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

    # The same test with the stale owner's value expected fails: the check can fail.
    tests["tests"][2]["promql_expr_test"][0]["exp_samples"] = [{"value": 0.9}]
    (tmp_path / "wrong.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    wrong = run_promtool("test", "rules", "wrong.yml", cwd=tmp_path)
    assert wrong.returncode == 1
    assert "exp: {} 9E-01\n        got: nil" in wrong.stdout + wrong.stderr
