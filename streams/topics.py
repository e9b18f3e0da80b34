"""Every Kafka topic firesale uses, as code: partitions, retention, cleanup policy, key, schema.

Source topics are never left to broker auto-creation (the embedded broker disables it):
``firesale topics create`` creates what is missing and reports what already exists, including
any drift between the registry and the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

DAY_MS = 24 * 3600 * 1000

CleanupPolicy = Literal["delete", "compact", "compact,delete"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name (with schema version), layout and contract."""

    name: str
    partitions: int
    retention_ms: int
    cleanup_policy: CleanupPolicy
    key: str
    schema: str
    description: str

    @property
    def configs(self) -> dict[str, str]:
        """Topic-level configs passed to the broker at creation."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "ticks.price.v1",
        3,
        3 * DAY_MS,
        "delete",
        "venue:symbol",
        "price",
        "trade/mark/index/mid prices from every venue",
    ),
    TopicSpec(
        "ticks.liquidation.v1",
        1,  # low volume, read whole by the market stage (co-partitioned with bars.v1)
        30 * DAY_MS,
        "delete",
        "venue:symbol",
        "liquidation",
        "forced liquidations; liquidated_side is the position closed",
    ),
    TopicSpec(
        "ticks.funding.v1",
        1,  # low volume, read whole by the market stage (co-partitioned with bars.v1)
        30 * DAY_MS,
        "delete",
        "venue:symbol",
        "funding",
        "perpetual funding rates, annualized, with open interest when known",
    ),
    TopicSpec(
        "ticks.deadletter.v1",
        1,
        14 * DAY_MS,
        "delete",
        "venue:channel",
        "deadletter",
        "frames that could not be turned into events, with the reason",
    ),
    TopicSpec(
        "ticks.gap.v1",
        1,
        30 * DAY_MS,
        "delete",
        "venue:channel",
        "gap",
        "gap markers: a venue channel may have missed data between two times",
    ),
    TopicSpec(
        "bars.v1",
        1,
        30 * DAY_MS,
        "delete",
        "asset",
        "bar",
        "event-time bars of every asset; one partition so one worker sees the whole market",
    ),
    TopicSpec(
        "signals.correlation.v1",
        1,
        90 * DAY_MS,
        "compact",
        "subject (market)",
        "signal.correlation",
        "latest per-bar cross-asset correlation figures (compacted: newest record per subject)",
    ),
    TopicSpec(
        "signals.cosell.v1",
        1,
        365 * DAY_MS,
        "delete",
        "signal id",
        "signal.cosell",
        "co-selling score and cosell.start/update/end events",
    ),
    TopicSpec(
        "signals.liquidation.v1",
        1,
        365 * DAY_MS,
        "delete",
        "signal id",
        "signal.liquidation",
        "liquidation cascade start/peak/end events",
    ),
    TopicSpec(
        "signals.funding.v1",
        1,
        365 * DAY_MS,
        "delete",
        "signal id",
        "signal.funding",
        "funding stress flip/extreme events",
    ),
)

INTERNAL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "worker.state.v1",
        1,
        365 * DAY_MS,
        "compact",
        "app_id:topic:partition",
        "internal",
        "stream-worker checkpoints (bar builders per price partition); not a public contract",
    ),
)

BY_NAME: Mapping[str, TopicSpec] = {t.name: t for t in TOPICS}


def topic(name: str) -> TopicSpec:
    """The registered topic called ``name`` (KeyError naming the known topics otherwise)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_NAME)}") from None


@dataclass(frozen=True, slots=True)
class TopicReport:
    """What ``ensure_topics`` did with one topic."""

    name: str
    action: Literal["created", "exists", "drift"]
    detail: str = ""


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec] = TOPICS + INTERNAL_TOPICS,
    timeout_ms: int = 30_000,
) -> list[TopicReport]:
    """Create the missing topics; report existing ones and any drift from the registry.

    Idempotent: a second call creates nothing. Drift (another partition count, retention or
    cleanup policy on the cluster) is reported, never silently "fixed": changing partitions
    re-keys data and needs an operator.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    specs = list(specs)
    from streams.kafka_security import client_kwargs

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **client_kwargs()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        reports: list[TopicReport] = []
        if missing:
            resp = await admin.create_topics(
                [NewTopic(s.name, s.partitions, 1, topic_configs=s.configs) for s in missing],
                timeout_ms=timeout_ms,
            )
            for name, code, *rest in resp.topic_errors:
                if code == 0:
                    reports.append(TopicReport(name, "created"))
                elif code == 36:
                    # TOPIC_ALREADY_EXISTS: our metadata was stale or another creator won the
                    # race; compare it with the registry like any existing topic.
                    existing.add(name)
                else:
                    message = rest[0] if rest else ""
                    raise RuntimeError(f"creating topic {name} failed: error {code} {message}")
        present = [s for s in specs if s.name in existing]
        if present:
            described = {
                t["topic"]: t for t in await admin.describe_topics([s.name for s in present])
            }
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
            )
            actual: dict[str, dict[str, str]] = {}
            for resp in configs:
                for _code, _msg, _type, name, entries in resp.resources:
                    actual[name] = {e[0]: e[1] for e in entries}
            for s in present:
                drift = []
                n_parts = len(described[s.name]["partitions"])
                if n_parts != s.partitions:
                    drift.append(f"partitions {n_parts} (registry {s.partitions})")
                for key, want in s.configs.items():
                    have = actual.get(s.name, {}).get(key)
                    if have != want:
                        drift.append(f"{key}={have} (registry {want})")
                if drift:
                    reports.append(TopicReport(s.name, "drift", "; ".join(drift)))
                else:
                    reports.append(TopicReport(s.name, "exists"))
        if any(r.action == "created" for r in reports):
            # Return only once the new topics are visible in metadata, so that producers
            # started right after `topics create` never see UNKNOWN_TOPIC_OR_PARTITION.
            await _describe_settled(admin, [r.name for r in reports if r.action == "created"])
        return reports
    finally:
        await admin.close()


async def _describe_settled(
    admin: Any, names: list[str], timeout_s: float = 15.0
) -> dict[str, dict[str, Any]]:
    """``describe_topics`` until every topic reports its partitions (metadata can lag creation)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        settled = all(
            t.get("error_code", 0) == 0 and t["partitions"] for t in described.values()
        ) and set(described) >= set(names)
        if settled or asyncio.get_running_loop().time() > deadline:
            return described
        await asyncio.sleep(0.2)


async def wait_for_topics(
    bootstrap: str,
    report: Callable[[str], None],
    first_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
    attempt_timeout_ms: int = 10_000,
) -> list[TopicReport]:
    """:func:`ensure_topics`, retried with exponential backoff until Kafka answers.

    A worker or connector started before its broker (containers starting together, a broker
    being restarted) waits and says so, once per attempt, instead of exiting.
    """
    delay = first_delay_s
    attempt = 1
    while True:
        try:
            return await ensure_topics(bootstrap, timeout_ms=attempt_timeout_ms)
        except Exception as exc:  # aiokafka raises several types for "cannot reach"
            from streams.kafka_security import is_auth_failure, tls_refusal

            # wrong credentials or certificates do not fix themselves: no retry
            if is_auth_failure(exc) or tls_refusal(bootstrap) is not None:
                raise
            reason = str(exc) or type(exc).__name__
            report(
                f"Kafka at {bootstrap} unreachable (attempt {attempt}: {reason}); "
                f"retrying in {delay:.0f} s (check FIRESALE_KAFKA_BOOTSTRAP)"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)
        attempt += 1
