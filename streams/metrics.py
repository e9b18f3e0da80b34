"""Prometheus metrics of the stream workers: the signals themselves and pipeline health.

Labels come only from bounded, configured sets (asset, venue, side, class pair, event type).
Every family is registered on the registry passed in, so tests use a fresh one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from signals.detector import BarSignals


@dataclass(frozen=True, slots=True)
class PipelineMetrics:
    """The worker metric families."""

    cosell_score: Gauge
    cosell_active: Gauge
    correlation_avg: Gauge
    absorption_ratio: Gauge
    turbulence: Gauge
    liquidations: Counter
    funding: Gauge
    late_ticks: Counter
    early_ticks: Counter
    signal_events: Counter
    last_signal: Gauge
    bar_lag: Histogram
    bars: Counter
    time_jumps: Counter
    tick_signal_latency: Histogram
    side_input_forced: Counter
    consumer_lag: Gauge
    event_time_lag: Gauge
    replayed: Counter
    cascade_active: Gauge
    funding_extreme_active: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PipelineMetrics:
        """Register every family on ``registry``."""
        return cls(
            cosell_score=Gauge(
                "firesale_cosell_score",
                "Co-selling score of the last bar, 0..1 (NaN while the window is cold).",
                registry=registry,
            ),
            cosell_active=Gauge(
                "firesale_cosell_active",
                "1 while a co-selling (fire-sale) flag is up.",
                registry=registry,
            ),
            correlation_avg=Gauge(
                "firesale_correlation_avg",
                "Average pairwise correlation of the rolling window, overall and per class pair.",
                ["class_pair"],
                registry=registry,
            ),
            absorption_ratio=Gauge(
                "firesale_absorption_ratio",
                "Share of variance in the top eigenvectors of the correlation matrix.",
                registry=registry,
            ),
            turbulence=Gauge(
                "firesale_turbulence",
                "Mahalanobis turbulence of the last bar's returns (about 1 when calm).",
                registry=registry,
            ),
            liquidations=Counter(
                "firesale_liquidation_notional_usd",
                "Liquidated notional by venue, asset and liquidated position side (USD).",
                ["venue", "asset", "side"],
                registry=registry,
            ),
            funding=Gauge(
                "firesale_funding_annualized_ratio",
                "Last annualized funding rate by venue and asset (0.1 = 10 %/year).",
                ["venue", "asset"],
                registry=registry,
            ),
            late_ticks=Counter(
                "firesale_late_ticks",
                "Price ticks older than the last closed bar (counted, not merged).",
                ["asset"],
                registry=registry,
            ),
            early_ticks=Counter(
                "firesale_early_ticks",
                "Price ticks stamped more than 5 s after their receive time (venue clock ahead): "
                "counted and left out, so they cannot push the watermark into the future.",
                ["asset"],
                registry=registry,
            ),
            signal_events=Counter(
                "firesale_signal_events",
                "Signal events published, by type.",
                ["type"],
                registry=registry,
            ),
            last_signal=Gauge(
                "firesale_last_signal_timestamp_seconds",
                "Processing time of the last bar's signal record.",
                registry=registry,
            ),
            bar_lag=Histogram(
                "firesale_bar_signal_lag_seconds",
                "From a bar's end (event time) to its signal record (processing time); "
                "0 when event time runs ahead of the worker's clock.",
                buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 300),
                registry=registry,
            ),
            bars=Counter(
                "firesale_bars",
                "Cross-sections processed by the market detector.",
                registry=registry,
            ),
            time_jumps=Counter(
                "firesale_event_time_jumps",
                "Times event time leapt hours ahead and the bar grid was restarted.",
                registry=registry,
            ),
            tick_signal_latency=Histogram(
                "firesale_tick_signal_latency_seconds",
                "From the Kafka time of the tick that closed a bar to that bar's signal record.",
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=registry,
            ),
            side_input_forced=Counter(
                "firesale_side_input_forced",
                "Bars processed without waiting longer for a side input (liquidations, "
                "funding, gaps) that had not caught up; their figures may miss late records.",
                ["input"],
                registry=registry,
            ),
            consumer_lag=Gauge(
                "firesale_consumer_lag_records",
                "Records between this worker's position and the end of each assigned partition.",
                ["topic", "partition"],
                registry=registry,
            ),
            event_time_lag=Gauge(
                "firesale_event_time_lag_seconds",
                "Processing time minus the event time of the last record read, per input topic.",
                ["topic"],
                registry=registry,
            ),
            cascade_active=Gauge(
                "firesale_liquidation_cascade_active",
                "1 while a liquidation cascade is on, by asset and liquidated side.",
                ["asset", "side"],
                registry=registry,
            ),
            funding_extreme_active=Gauge(
                "firesale_funding_extreme_active",
                "1 while an asset's funding is in an extreme episode (z or negative).",
                ["asset"],
                registry=registry,
            ),
            replayed=Counter(
                "firesale_recovery_replayed_records",
                "Records re-read from Kafka to rebuild state after a restart or rebalance.",
                ["topic"],
                registry=registry,
            ),
        )

    def observe_bar(self, signals: BarSignals, ts_emit_ns: int, interval_s: int = 0) -> None:
        """Set the signal gauges from one bar's figures (last writer wins: idempotent)."""
        self.bars.inc()
        self.cosell_score.set(signals.cosell.score)
        self.cosell_active.set(1 if signals.cosell.active else 0)
        self.correlation_avg.labels("all").set(signals.corr_avg)
        for pair, value in signals.corr_by_class_pair.items():
            self.correlation_avg.labels(pair).set(value)
        self.absorption_ratio.set(signals.absorption_ratio)
        self.turbulence.set(signals.turbulence)
        self.last_signal.set(ts_emit_ns / 1e9)
        lag_s = (ts_emit_ns - signals.bar_start_ns) / 1e9 - interval_s
        if math.isfinite(lag_s):
            # Negative only when event time runs ahead of this clock (a scenario or replay
            # at speed, exchange clock skew): no lag is measurable, observed as 0.
            self.bar_lag.observe(max(lag_s, 0.0))

    def observe_event(self, event_type: str, subject: str) -> None:
        """Count a published signal event and keep the episode gauges (cascades, funding)."""
        self.signal_events.labels(event_type).inc()
        if event_type.startswith("liquidation.cascade."):
            asset, _, side = subject.partition(":")
            if event_type.endswith(".start"):
                self.cascade_active.labels(asset, side).set(1)
            elif event_type.endswith(".end"):
                self.cascade_active.labels(asset, side).set(0)
        elif event_type == "funding.extreme.start":
            self.funding_extreme_active.labels(subject).set(1)
        elif event_type == "funding.extreme.end":
            self.funding_extreme_active.labels(subject).set(0)
