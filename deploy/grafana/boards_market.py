"""The market dashboards: Overview, Correlation matrix and Liquidations.

Queries use the raw worker metrics (streams/metrics.py), not recording rules, so a dashboard
works against any Prometheus that scrapes the workers.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from deploy.grafana.kit import (
    Annotation,
    bars,
    board,
    flag_mappings,
    heat,
    label_variable,
    market,
    q,
    stat_panel,
    thresholds,
    timeline,
    ts,
    zero_if_absent,
)
from signals.cosell import CoSellParams

COSELL = CoSellParams()
"""The detector's defaults; the worker keeps θ_on/θ_off at every bar interval
(``DetectorParams.for_bar_interval`` rescales bar counts only, signals/detector_params.py)."""

SAMPLED_VENUES = ("binance", "okx")
"""Venues whose liquidation feed is a sample, so their sums are lower bounds: Binance pushes at
most one liquidation per symbol per second (connectors/binance/parse.py), OKX says its feed does
not carry every liquidation (connectors/okx/parse.py). Bybit's ``allLiquidation`` is complete."""

_SAMPLED = f'venue=~"{"|".join(SAMPLED_VENUES)}"'
_COMPLETE = f'venue!~"{"|".join(SAMPLED_VENUES)}"'


def _liq(extra: str = "") -> str:
    """The liquidation counter under the dashboard's filters, plus ``extra`` matchers."""
    matchers = 'venue=~"$venue", asset=~"$asset", side=~"$side"' + (f", {extra}" if extra else "")
    return f"firesale_liquidation_notional_usd_total{{{matchers}}}"


def _per_min(by: str, extra: str = "") -> str:
    """Liquidated notional in USD per minute, summed ``by`` labels (empty: one total)."""
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({_liq(extra)}[$__rate_interval])) * 60"


_LIQ = _liq()
_CORR = 'firesale_correlation_avg{class_pair=~"$class_pair"}'
_CORR_STEPS = thresholds((None, "green"), (0.5, "yellow"), (0.8, "red"))
_CASCADE = zero_if_absent(
    market('firesale_liquidation_cascade_active{asset=~"$asset", side=~"$side"}', by="asset, side"),
    "asset",
)
_FUNDING_EXTREME = zero_if_absent(
    market('firesale_funding_extreme_active{asset=~"$asset"}', by="asset"), "asset"
)

SCORE_DESCRIPTION = (
    f"Co-selling score of each bar, 0..1: breadth of assets selling beyond their own volatility "
    f"(weight {COSELL.weight_breadth}), asset classes involved ({COSELL.weight_classes}), "
    f"correlation jump ({COSELL.weight_corr}), liquidation spike ({COSELL.weight_liq}). "
    f"The fire-sale flag starts at θ_on = {COSELL.theta_on} and ends once the score has stayed "
    f"below θ_off = {COSELL.theta_off} for {COSELL.min_off_bars * 5} minutes (dashed lines; "
    "signals/cosell_params.py). Gaps: the window is still cold (NaN, never 0)."
)


def _cosell_annotations() -> list[Annotation]:
    return [
        Annotation(
            "Co-selling",
            market("firesale_cosell_active") + " > 0",
            "red",
            "Fire sale (co-selling flag up)",
            "",
        ),
        Annotation(
            "Liquidation cascades",
            market("firesale_liquidation_cascade_active", by="asset, side") + " > 0",
            "orange",
            "Liquidation cascade {{asset}} {{side}}",
            "asset,side",
        ),
    ]


def overview() -> Dashboard:
    """Is the market in a fire sale, and what is driving it."""
    return board(
        "firesale-overview",
        "firesale / Overview",
        "Co-selling score and flag, cross-asset correlation, liquidations and funding. "
        "Red regions: co-selling episodes; orange: liquidation cascades.",
        [
            label_variable("venue", "firesale_connector_events_total"),
            label_variable("asset", "firesale_funding_annualized_ratio"),
            label_variable("side", "firesale_liquidation_notional_usd_total"),
        ],
        [
            (
                "Fire-sale signal",
                [
                    ts(
                        "Co-selling score",
                        SCORE_DESCRIPTION,
                        [q(market("firesale_cosell_score"), "score")],
                        unit="percentunit",
                        width=18,
                        min_val=0,
                        max_val=1,
                        threshold_steps=thresholds(
                            (None, "green"),
                            (COSELL.theta_off, "orange"),
                            (COSELL.theta_on, "red"),
                        ),
                    ),
                    stat_panel(
                        "Fire sale now?",
                        "1 while the co-selling flag is up (firesale_cosell_active).",
                        [q(market("firesale_cosell_active"), "co-selling")],
                        width=6,
                        height=8,
                        mappings=flag_mappings("calm", "FIRE SALE"),
                        steps=thresholds((None, "green"), (1, "red")),
                    ),
                    timeline(
                        "Episodes",
                        "Co-selling flag, liquidation cascades by asset and liquidated side, "
                        "and extreme funding episodes by asset ('none': no episode yet).",
                        [
                            q(market("firesale_cosell_active"), "co-selling"),
                            q(_CASCADE, "cascade {{asset}} {{side}}"),
                            q(_FUNDING_EXTREME, "funding {{asset}}"),
                        ],
                        flag_mappings("off", "on"),
                        width=16,
                        height=7,
                    ),
                    bars(
                        "Signal events in the time range",
                        "Signal events published to the signal topics, by type (cosell.start, "
                        "liquidation.cascade.peak, funding.flip...); 'none': no event yet.",
                        [
                            q(
                                zero_if_absent(
                                    "sum by (type) (increase(firesale_signal_events_total"
                                    "[$__range]))",
                                    "type",
                                ),
                                "{{type}}",
                                instant=True,
                            )
                        ],
                        unit="short",
                        min_val=0,
                        max_val=None,
                        steps=thresholds((None, "blue")),
                        height=7,
                    ),
                ],
            ),
            (
                "Cross-asset correlation",
                [
                    ts(
                        "Correlation by class pair",
                        "Average pairwise correlation of bar returns over the rolling window, "
                        "overall ('all') and per asset-class pair. A fire sale pulls them "
                        "toward 1.",
                        [
                            q(
                                market("firesale_correlation_avg", by="class_pair"),
                                "{{class_pair}}",
                            )
                        ],
                        min_val=-1,
                        max_val=1,
                    ),
                    ts(
                        "Absorption ratio",
                        "Share of variance explained by the top eigenvectors of the "
                        "correlation matrix: up when a few factors drive everything.",
                        [q(market("firesale_absorption_ratio"), "absorption ratio")],
                        unit="percentunit",
                        width=6,
                        min_val=0,
                        max_val=1,
                    ),
                    ts(
                        "Turbulence",
                        "Mahalanobis turbulence of the last bar's returns (about 1 when calm).",
                        [q(market("firesale_turbulence"), "turbulence")],
                        width=6,
                        min_val=0,
                    ),
                ],
            ),
            (
                "Forced flow and funding",
                [
                    ts(
                        "Liquidated notional by side (USD/min)",
                        "Liquidated position side: 'long' = longs forced to sell. Sums from "
                        f"sampled feeds ({', '.join(SAMPLED_VENUES)}) are lower bounds.",
                        [q(_per_min("side"), "{{side}}")],
                        unit="currencyUSD",
                        stack=True,
                        min_val=0,
                    ),
                    ts(
                        "Funding, annualized, by venue and asset",
                        "Last perpetual funding rate, annualized. Funding that collapses or "
                        "turns negative across venues is a stress signal.",
                        [
                            q(
                                market(
                                    'firesale_funding_annualized_ratio{venue=~"$venue", '
                                    'asset=~"$asset"}',
                                    by="venue, asset",
                                ),
                                "{{venue}} {{asset}}",
                            )
                        ],
                        unit="percentunit",
                    ),
                ],
            ),
        ],
        _cosell_annotations(),
    )


def correlation() -> Dashboard:
    """Class-pair correlations over time: heatmap, current values, change."""
    by_pair = market(_CORR, by="class_pair")
    return board(
        "firesale-correlation",
        "firesale / Correlation matrix",
        "Average correlation per asset-class pair (the worker exports class-pair averages, "
        "not every asset pair). Red regions: co-selling episodes.",
        [label_variable("class_pair", "firesale_correlation_avg")],
        [
            (
                "Class-pair correlation",
                [
                    heat(
                        "Correlation by class pair over time",
                        "One row per class pair; colour = average correlation (-1 blue .. "
                        "+1 red). A fire sale shows as every row turning red together.",
                        [q(by_pair, "{{class_pair}}")],
                        min_val=-1,
                        max_val=1,
                    ),
                    bars(
                        "Correlation now",
                        "Last average correlation per class pair (colours at 0.5 and 0.8).",
                        [q(by_pair, "{{class_pair}}", instant=True)],
                        unit="short",
                        min_val=-1,
                        max_val=1,
                        steps=_CORR_STEPS,
                        height=10,
                    ),
                    ts(
                        "Correlation by class pair",
                        "The same series as lines, with their last and highest values.",
                        [q(by_pair, "{{class_pair}}")],
                        width=16,
                        height=10,
                        min_val=-1,
                        max_val=1,
                    ),
                ],
            ),
            (
                "Regime",
                [
                    ts(
                        "Correlation minus its 6 h mean",
                        "How far each class pair's correlation is from its own 6-hour "
                        "average: a regime shift shows as a jump of every pair at once. "
                        "NaN samples (window still cold) are left out of the average "
                        "(x == x is false for NaN), else one would void it for 6 hours.",
                        [
                            q(
                                market(
                                    f"{_CORR} - avg_over_time(({_CORR} == {_CORR})[6h:1m])",
                                    by="class_pair",
                                ),
                                "{{class_pair}}",
                            )
                        ],
                        width=12,
                    ),
                    ts(
                        "Absorption ratio",
                        "Share of variance in the top eigenvectors of the correlation matrix.",
                        [q(market("firesale_absorption_ratio"), "absorption ratio")],
                        unit="percentunit",
                        width=12,
                        min_val=0,
                        max_val=1,
                    ),
                ],
            ),
        ],
        _cosell_annotations(),
    )


def liquidations() -> Dashboard:
    """Forced flow by venue, asset and side; cascades; how complete the figures are."""
    complete_note = (
        f"Liquidations from sampled feeds ({', '.join(SAMPLED_VENUES)}) are lower bounds: "
        "Binance pushes at most one liquidation per symbol per second, OKX does not promise "
        "every liquidation. Bybit's allLiquidation feed is complete."
    )
    return board(
        "firesale-liquidations",
        "firesale / Liquidations",
        "Liquidated notional (USD) by venue, asset and liquidated side. " + complete_note,
        [
            label_variable("venue", "firesale_liquidation_notional_usd_total"),
            label_variable("asset", "firesale_liquidation_notional_usd_total"),
            label_variable("side", "firesale_liquidation_notional_usd_total"),
        ],
        [
            (
                "Notional",
                [
                    ts(
                        "By liquidated side (USD/min)",
                        "'long': long positions force-closed (forced selling). " + complete_note,
                        [q(_per_min("side"), "{{side}}")],
                        unit="currencyUSD",
                        stack=True,
                        min_val=0,
                    ),
                    ts(
                        "By venue (USD/min)",
                        complete_note,
                        [q(_per_min("venue"), "{{venue}}")],
                        unit="currencyUSD",
                        stack=True,
                        min_val=0,
                    ),
                    ts(
                        "By asset and side (USD/min)",
                        complete_note,
                        [q(_per_min("asset, side"), "{{asset}} {{side}}")],
                        unit="currencyUSD",
                        stack=True,
                        min_val=0,
                    ),
                    bars(
                        "Total over the time range",
                        "Liquidated notional in the dashboard's time range by venue, asset "
                        "and side. " + complete_note,
                        [
                            q(
                                f"sum by (venue, asset, side) (increase({_LIQ}[$__range]))",
                                "{{venue}} {{asset}} {{side}}",
                                instant=True,
                            )
                        ],
                        unit="currencyUSD",
                        min_val=0,
                        max_val=None,
                        steps=thresholds((None, "blue")),
                        width=12,
                    ),
                ],
            ),
            (
                "Cascades and completeness",
                [
                    timeline(
                        "Cascades active",
                        "1 while a liquidation cascade is on, by asset and liquidated side "
                        "('none': no cascade yet).",
                        [q(_CASCADE, "{{asset}} {{side}}")],
                        flag_mappings("quiet", "CASCADE"),
                        width=12,
                        height=8,
                    ),
                    ts(
                        "Complete vs sampled feeds (USD/min)",
                        complete_note,
                        [
                            q(
                                _per_min("", _SAMPLED),
                                "sampled feeds: lower bound",
                            ),
                            q(_per_min("", _COMPLETE), "complete feeds"),
                        ],
                        unit="currencyUSD",
                        stack=True,
                        min_val=0,
                        width=8,
                    ),
                    stat_panel(
                        "Share from sampled feeds",
                        "Part of the time range's liquidated notional that comes from sampled "
                        "feeds, whose true totals are higher. " + complete_note,
                        [
                            q(
                                f"sum(increase({_liq(_SAMPLED)}[$__range])) "
                                f"/ sum(increase({_LIQ}[$__range]))",
                                "sampled share",
                            )
                        ],
                        unit="percentunit",
                        width=4,
                        height=8,
                        steps=thresholds((None, "green"), (0.5, "orange")),
                    ),
                ],
            ),
        ],
        _cosell_annotations(),
    )
