"""Small helpers over Grafana's foundation SDK so the dashboards read as a list of panels.

Every panel queries the dashboard's ``$datasource`` variable (default: the provisioned Prometheus,
uid ``prometheus``), has a description, and keeps its PromQL in ``targets[].expr`` where tests and
the end-to-end query check find it. Panels are laid out by the SDK: rows of 24 grid units.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    FieldColor,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.variants import Dataquery as Dataquery_
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE_UID = "prometheus"
"""uid of the provisioned datasource (provisioning/datasources/prometheus.yml)."""

# A bare instant-vector selector: metric name and optional matchers, no operators.
_SELECTOR = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?")

DS = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")


class _PanelBuilder(typing.Protocol):
    """The methods every SDK panel builder shares (title, targets, unit, size...)."""

    def title(self, title: str) -> typing.Self: ...
    def description(self, description: str) -> typing.Self: ...
    def datasource(self, datasource: dashboard.DataSourceRef) -> typing.Self: ...
    def unit(self, unit: str) -> typing.Self: ...
    def with_target(self, target: cogbuilder.Builder[Dataquery_]) -> typing.Self: ...
    def span(self, w: int) -> typing.Self: ...
    def height(self, h: int) -> typing.Self: ...


PanelT = typing.TypeVar("PanelT", bound=_PanelBuilder)


def q(expr: str, legend: str = "", *, instant: bool = False) -> Dataquery:
    """A Prometheus target: a range query unless ``instant``."""
    target = Dataquery().expr(expr).legend_format(legend or "__auto")
    if instant:
        return target.instant().format(PromQueryFormat.TABLE)
    return target.range()


def zero_if_absent(expr: str, label: str) -> str:
    """``expr``, or a single 0 series labelled ``label="none"`` when ``expr`` has no series.

    A labelled counter or gauge of prometheus_client has no series until its first use
    (children are created lazily), so "no dead letters yet" would read "No data". ``or on()``
    adds the zero only when the left side is empty: a plain ``or vector(0)`` would match no
    labelled series and always add it (Prometheus docs, "Logical/set binary operators").

    Examples
    --------
    >>> print(zero_if_absent("sum by (reason) (x)", "reason"))
    (sum by (reason) (x)) or on() label_replace(vector(0), "reason", "none", "", "")
    """
    return f'({expr}) or on() label_replace(vector(0), "{label}", "none", "", "")'


def market(expr: str, by: str = "") -> str:
    """``expr`` from the worker(s) that produced a signal in the last 15 minutes.

    Every worker replica exports the unlabelled signal gauges, but only the one holding the
    single ``bars.v1`` partition sets them; the others keep the default 0. 15 minutes is three
    bars at the longest bar interval (300 s).

    Examples
    --------
    >>> print(market("x"))
    max (x and on(instance) (time() - firesale_last_signal_timestamp_seconds < 900))
    >>> print(market("a - b", by="pair").split(" on(")[0])
    max by (pair) ((a - b) and
    """
    fresh = "(time() - firesale_last_signal_timestamp_seconds < 900)"
    if not _SELECTOR.fullmatch(expr):
        expr = f"({expr})"
    return f"max{f' by ({by})' if by else ''} ({expr} and on(instance) {fresh})"


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return (
        ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=v, color=c) for v, c in steps])
    )


def flag_mappings(
    off: str, on: str, off_color: str = "green", on_color: str = "red"
) -> list[dashboard.ValueMapping]:
    """0/1 flags shown as words and colours (by default: ``off`` green, ``on`` red)."""
    return [
        dashboard.ValueMap(
            options={
                "0": dashboard.ValueMappingResult(text=off, color=off_color, index=0),
                "1": dashboard.ValueMappingResult(text=on, color=on_color, index=1),
            }
        )
    ]


def _common(
    panel: PanelT,
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    unit: str,
    width: int,
    height: int,
) -> PanelT:
    panel = panel.title(title).description(description).datasource(DS).unit(unit)
    for ref_id, target in zip("ABCDEFGH", targets, strict=False):
        panel = panel.with_target(target.ref_id(ref_id))
    return panel.span(width).height(height)


def ts(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    min_val: float | None = None,
    max_val: float | None = None,
    stack: bool = False,
    threshold_steps: ThresholdsConfig | None = None,
) -> timeseries.Panel:
    """A time series panel (lines; stacked areas when ``stack``)."""
    panel = _common(timeseries.Panel(), title, description, targets, unit, width, height)
    panel = panel.legend(
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT if width >= 12 else common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    ).tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if stack:
        panel = panel.fill_opacity(40).stacking(
            common_b.StackingConfig().mode(common.StackingMode.NORMAL)
        )
    if threshold_steps is not None:
        panel = panel.thresholds(threshold_steps).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    return panel


def timeline(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    mappings: list[dashboard.ValueMapping],
    *,
    width: int = 12,
    height: int = 6,
) -> statetimeline.Panel:
    """A state timeline for 0/1 flags (one lane per series)."""
    panel = _common(statetimeline.Panel(), title, description, targets, "short", width, height)
    return (
        panel.mappings(mappings)
        .thresholds(thresholds((None, "green"), (1, "red")))
        .color_scheme(FieldColor().mode(dashboard.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
    )


def stat_panel(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    unit: str = "short",
    width: int = 6,
    height: int = 6,
    steps: ThresholdsConfig | None = None,
    mappings: list[dashboard.ValueMapping] | None = None,
) -> stat.Panel:
    """A stat panel: the last value of each series, coloured by thresholds."""
    panel = _common(stat.Panel(), title, description, targets, unit, width, height)
    panel = panel.color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(
        common.BigValueGraphMode.NONE
    )
    if steps is not None:
        panel = panel.thresholds(steps)
    if mappings is not None:
        panel = panel.mappings(mappings)
    return panel


def bars(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    unit: str,
    min_val: float,
    max_val: float | None,
    steps: ThresholdsConfig,
    width: int = 8,
    height: int = 8,
) -> bargauge.Panel:
    """A horizontal bar gauge of the last value of each series (``max_val`` None: automatic)."""
    panel = _common(bargauge.Panel(), title, description, targets, unit, width, height)
    panel = (
        panel.min(min_val)
        .thresholds(steps)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
    )
    return panel if max_val is None else panel.max(max_val)


def heat(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    min_val: float,
    max_val: float,
    width: int = 24,
    height: int = 10,
) -> heatmap.Panel:
    """A heatmap of already-bucketed series: one row per series (no Grafana-side binning)."""
    panel = _common(heatmap.Panel(), title, description, targets, "short", width, height)
    return panel.calculate(False).color(
        heatmap.HeatmapColorOptions()
        .mode(HeatmapColorMode.SCHEME)
        .scheme("RdBu")
        .reverse(True)
        .min(min_val)
        .max(max_val)
        .steps(64)
    )


def datasource_variable() -> DatasourceVariable:
    """``$datasource``: any Prometheus, defaulting to the provisioned one."""
    return (
        DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(dashboard.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
    )


def label_variable(name: str, metric: str, label: str | None = None) -> QueryVariable:
    """A multi-select of a label's values seen on ``metric``; "All" matches ``.*``."""
    return (
        QueryVariable(name)
        .label(name)
        .datasource(DS)
        .query(
            {
                "qryType": 1,
                "query": f"label_values({metric}, {label or name})",
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            }
        )
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
    )


class PromAnnotation(dashboard.AnnotationQuery):
    """A Prometheus annotation query with the datasource's own options.

    Grafana's Prometheus datasource reads ``titleFormat``, ``tagKeys`` and ``step`` from the
    annotation object itself; the SDK's model has no fields for them. Consecutive samples of
    the series become one region (Grafana docs, "Prometheus annotations").
    """

    def __init__(self, name: str, expr: str, color: str, title_format: str, tag_keys: str) -> None:
        super().__init__(name=name, datasource=DS, enable=True, icon_color=color, expr=expr)
        self.title_format = title_format
        self.tag_keys = tag_keys

    def to_json(self) -> dict[str, object]:
        """The SDK's payload plus the Prometheus options."""
        payload = super().to_json()
        payload.update(titleFormat=self.title_format, tagKeys=self.tag_keys, step="60s")
        return payload


class Annotation(cogbuilder.Builder[dashboard.AnnotationQuery]):
    """Builder wrapper so :class:`PromAnnotation` goes through ``Dashboard.annotation``."""

    def __init__(self, name: str, expr: str, color: str, title_format: str, tag_keys: str) -> None:
        self._internal = PromAnnotation(name, expr, color, title_format, tag_keys)

    def build(self) -> dashboard.AnnotationQuery:
        """The annotation model."""
        return self._internal


def board(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[cogbuilder.Builder[dashboard.VariableModel]],
    rows: Sequence[tuple[str, Sequence[cogbuilder.Builder[dashboard.Panel]]]],
    annotations: Sequence[Annotation] = (),
) -> Dashboard:
    """A dashboard: shared tags, time range and refresh; ``rows`` of panels, laid out in order."""
    d = (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["firesale"])
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
    )
    for variable in variables:
        d = d.with_variable(variable)
    for annotation in annotations:
        d = d.annotation(annotation)
    for row_title, panels in rows:
        d = d.with_row(Row(row_title))
        for panel in panels:
            d = d.with_panel(panel)
    return d
