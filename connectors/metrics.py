"""Prometheus metrics of the connectors. Labels come only from bounded, configured sets.

Every metric is created on a registry passed in, so tests use a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True, slots=True)
class ConnectorMetrics:
    """The connector metric families, registered on one registry."""

    ticks: Counter
    filtered: Counter
    deadletters: Counter
    connection_up: Gauge
    reconnects: Counter
    gaps: Counter
    last_message: Gauge
    produced: Counter
    produce_failures: Counter
    dropped: Counter
    buffer_size: Gauge
    produce_latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ConnectorMetrics:
        """Register every family on ``registry``."""
        return cls(
            ticks=Counter(
                "firesale_connector_events",
                "Canonical events parsed from venue frames.",
                ["venue", "kind"],
                registry=registry,
            ),
            filtered=Counter(
                "firesale_connector_filtered",
                "Well-formed items about instruments outside the universe (not errors).",
                ["venue"],
                registry=registry,
            ),
            deadletters=Counter(
                "firesale_connector_deadletters",
                "Frames or items that could not become events, by reason.",
                ["venue", "reason"],
                registry=registry,
            ),
            connection_up=Gauge(
                "firesale_connector_connection_up",
                "1 while the connection is open and subscribed.",
                ["venue", "connection"],
                registry=registry,
            ),
            reconnects=Counter(
                "firesale_connector_reconnects",
                "Reconnections after a drop, a stale feed or a scheduled rollover.",
                ["venue", "connection", "cause"],
                registry=registry,
            ),
            gaps=Counter(
                "firesale_connector_gaps",
                "Gap markers published (data may be missing).",
                ["venue", "connection"],
                registry=registry,
            ),
            last_message=Gauge(
                "firesale_connector_last_message_timestamp_seconds",
                "Receive time of the last frame on the connection.",
                ["venue", "connection"],
                registry=registry,
            ),
            produced=Counter(
                "firesale_producer_messages",
                "Messages acknowledged by Kafka (acks=all).",
                ["topic"],
                registry=registry,
            ),
            produce_failures=Counter(
                "firesale_producer_maybe_delivered",
                "Sends that failed or timed out: the message may or may not be in Kafka.",
                ["topic"],
                registry=registry,
            ),
            dropped=Counter(
                "firesale_producer_dropped",
                "Messages dropped because the buffer stayed full (Kafka unreachable too long).",
                ["topic"],
                registry=registry,
            ),
            buffer_size=Gauge(
                "firesale_producer_buffer_messages",
                "Messages waiting in the bounded producer buffer.",
                registry=registry,
            ),
            produce_latency=Histogram(
                "firesale_producer_latency_seconds",
                "Time from enqueue to Kafka acknowledgement.",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=registry,
            ),
        )
