"""The Pipeline health dashboard: feeds, the Kafka producer, the stream workers.

Counters of rare failures (reconnects, gaps, dead letters, drops, late ticks, forced bars) are
shown as counts over the last 15 minutes, a window that reads the same at every zoom level, and
as 0 ("none") before the first failure has created their series.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.prometheus import Dataquery

from deploy.grafana.kit import (
    board,
    flag_mappings,
    label_variable,
    q,
    stat_panel,
    thresholds,
    timeline,
    ts,
    zero_if_absent,
)

RARE_WINDOW = "15m"


def _recent(metric: str, by: str, label: str) -> str:
    """How many times ``metric`` (a counter) rose in the last 15 minutes, by ``by``."""
    return zero_if_absent(f"sum by ({by}) (increase({metric}[{RARE_WINDOW}]))", label)


def _quantiles(histogram: str, legend: str) -> list[Dataquery]:
    """Median and 99th percentile of a histogram over the panel's rate interval."""
    return [
        q(
            f"histogram_quantile({p}, sum by (le) (rate({histogram}_bucket[$__rate_interval])))",
            f"{legend} p{round(p * 100)}",
        )
        for p in (0.5, 0.99)
    ]


def pipeline() -> Dashboard:
    """Is data flowing from the venues through Kafka to the signals, and how late is it."""
    venue = '{venue=~"$venue"}'
    return board(
        "firesale-pipeline",
        "firesale / Pipeline health",
        "Venue feeds (connectors), the Kafka producer, and the stream workers: lag, latency, "
        "degraded bars.",
        [label_variable("venue", "firesale_connector_events_total")],
        [
            (
                "Feeds",
                [
                    ts(
                        "Scrape targets up",
                        "Prometheus' own 'up' for every firesale scrape target (1 = scraped).",
                        [q('up{job=~".*firesale.*"}', "{{job}} {{instance}}")],
                        width=8,
                        min_val=0,
                        max_val=1,
                    ),
                    timeline(
                        "Venue connections",
                        "1 while a venue WebSocket is open and subscribed.",
                        [
                            q(
                                f"firesale_connector_connection_up{venue}",
                                "{{venue}} {{connection}}",
                            )
                        ],
                        flag_mappings("down", "up", off_color="red", on_color="green"),
                        width=8,
                        height=8,
                    ),
                    ts(
                        "Last message age",
                        "Seconds since the last frame on each connection; a quiet feed is "
                        "reconnected by the staleness watchdog.",
                        [
                            q(
                                f"time() - firesale_connector_last_message_timestamp_seconds"
                                f"{venue}",
                                "{{venue}} {{connection}}",
                            )
                        ],
                        unit="s",
                        width=8,
                        min_val=0,
                    ),
                    ts(
                        "Events by venue and kind (/s)",
                        "Canonical events parsed from venue frames (price, liquidation, "
                        "funding...).",
                        [
                            q(
                                "sum by (venue, kind) (rate(firesale_connector_events_total"
                                f"{venue}[$__rate_interval]))",
                                "{{venue}} {{kind}}",
                            )
                        ],
                        unit="suffix:/s",
                        stack=True,
                        width=12,
                    ),
                    ts(
                        f"Reconnects and gaps (last {RARE_WINDOW})",
                        "Reconnections by cause (drop, stale feed, scheduled rollover) and gap "
                        "markers published: data may be missing around a gap.",
                        [
                            q(
                                _recent(
                                    f"firesale_connector_reconnects_total{venue}",
                                    "venue, cause",
                                    "venue",
                                ),
                                "reconnect {{venue}} {{cause}}",
                            ),
                            q(
                                _recent(f"firesale_connector_gaps_total{venue}", "venue", "venue"),
                                "gap {{venue}}",
                            ),
                        ],
                        width=6,
                        min_val=0,
                    ),
                    ts(
                        f"Dead letters by reason (last {RARE_WINDOW})",
                        "Frames that could not become events, dead-lettered to "
                        "ticks.deadletter.v1 with their reason.",
                        [
                            q(
                                _recent(
                                    f"firesale_connector_deadletters_total{venue}",
                                    "venue, reason",
                                    "reason",
                                ),
                                "{{venue}} {{reason}}",
                            )
                        ],
                        width=6,
                        min_val=0,
                    ),
                ],
            ),
            (
                "Kafka producer (connectors)",
                [
                    ts(
                        "Messages acknowledged by topic (/s)",
                        "Messages Kafka acknowledged (acks=all).",
                        [
                            q(
                                "sum by (topic) (rate(firesale_producer_messages_total"
                                "[$__rate_interval]))",
                                "{{topic}}",
                            )
                        ],
                        unit="suffix:/s",
                        width=6,
                    ),
                    ts(
                        "Producer latency",
                        "From enqueue to Kafka acknowledgement, median and 99th percentile.",
                        _quantiles("firesale_producer_latency_seconds", "ack"),
                        unit="s",
                        width=6,
                        min_val=0,
                    ),
                    ts(
                        "Producer buffer",
                        "Messages waiting in the bounded producer buffer; when it stays full, "
                        "messages are dropped.",
                        [
                            q(
                                "max by (instance) (firesale_producer_buffer_messages)",
                                "{{instance}}",
                            )
                        ],
                        width=6,
                        min_val=0,
                    ),
                    ts(
                        f"Dropped and maybe-delivered (last {RARE_WINDOW})",
                        "Dropped: the buffer stayed full (Kafka unreachable too long). "
                        "Maybe delivered: a send failed or timed out, the message may or may "
                        "not be in Kafka.",
                        [
                            q(
                                _recent("firesale_producer_dropped_total", "topic", "topic"),
                                "dropped {{topic}}",
                            ),
                            q(
                                _recent(
                                    "firesale_producer_maybe_delivered_total", "topic", "topic"
                                ),
                                "maybe delivered {{topic}}",
                            ),
                        ],
                        width=6,
                        min_val=0,
                    ),
                ],
            ),
            (
                "Stream workers",
                [
                    ts(
                        "Consumer lag (records)",
                        "Records between the workers' positions and the end of each input "
                        "partition, summed by topic.",
                        [q("sum by (topic) (firesale_consumer_lag_records)", "{{topic}}")],
                        width=8,
                        min_val=0,
                    ),
                    ts(
                        "Event-time lag",
                        "Processing time minus the event time of the last record read, per "
                        "input topic (the slowest worker).",
                        [q("max by (topic) (firesale_event_time_lag_seconds)", "{{topic}}")],
                        unit="s",
                        width=8,
                    ),
                    stat_panel(
                        "Since the last signal",
                        "Seconds since any worker published a bar's signal record; above "
                        "three bars the pipeline is stalled.",
                        [q("time() - max(firesale_last_signal_timestamp_seconds)", "age")],
                        unit="s",
                        width=8,
                        height=8,
                        steps=thresholds((None, "green"), (300, "orange"), (900, "red")),
                    ),
                    ts(
                        "Tick → signal latency",
                        "From the Kafka time of the tick that closed a bar to that bar's "
                        "signal record: median and 99th percentile.",
                        _quantiles("firesale_tick_signal_latency_seconds", "tick→signal"),
                        unit="s",
                        width=8,
                        min_val=0,
                    ),
                    ts(
                        "Bar → signal lag",
                        "From a bar's end (event time) to its signal record (processing time).",
                        _quantiles("firesale_bar_signal_lag_seconds", "bar→signal"),
                        unit="s",
                        width=8,
                        min_val=0,
                    ),
                    ts(
                        "Bars processed (/min)",
                        "Cross-sections processed by the market detector.",
                        [q("sum(rate(firesale_bars_total[$__rate_interval])) * 60", "bars")],
                        width=8,
                        min_val=0,
                    ),
                    ts(
                        f"Degraded bars (last {RARE_WINDOW})",
                        "Late ticks: older than the last closed bar, counted, not merged. "
                        "Early ticks: stamped more than 5 s after their receive time (venue "
                        "clock ahead), counted and left out. "
                        "Side input forced: bars processed without waiting longer for "
                        "liquidations, funding or gaps; their figures may miss late records.",
                        [
                            q(
                                _recent("firesale_late_ticks_total", "asset", "asset"),
                                "late ticks {{asset}}",
                            ),
                            q(
                                _recent("firesale_early_ticks_total", "asset", "asset"),
                                "early ticks {{asset}}",
                            ),
                            q(
                                _recent("firesale_side_input_forced_total", "input", "input"),
                                "forced {{input}}",
                            ),
                        ],
                        width=12,
                        min_val=0,
                    ),
                    ts(
                        f"Recovery and time jumps (last {RARE_WINDOW})",
                        "Records re-read from Kafka to rebuild state after a restart or "
                        "rebalance, and times event time leapt ahead and the bar grid restarted.",
                        [
                            q(
                                _recent(
                                    "firesale_recovery_replayed_records_total", "topic", "topic"
                                ),
                                "replayed {{topic}}",
                            ),
                            q(
                                f"sum(increase(firesale_event_time_jumps_total[{RARE_WINDOW}]))",
                                "event-time jumps",
                            ),
                        ],
                        width=12,
                        min_val=0,
                    ),
                ],
            ),
        ],
    )
