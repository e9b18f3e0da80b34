"""Topics as code, created on the real broker: idempotent, drift reported."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.topics import DAY_MS, INTERNAL_TOPICS, TOPICS, TopicSpec, ensure_topics, topic

pytestmark = pytest.mark.kafka

EXPECTED = {
    "ticks.price.v1",
    "ticks.liquidation.v1",
    "ticks.funding.v1",
    "ticks.deadletter.v1",
    "ticks.gap.v1",
    "bars.v1",
    "signals.correlation.v1",
    "signals.cosell.v1",
    "signals.liquidation.v1",
    "signals.funding.v1",
}


def test_registry_holds_every_topic_of_the_design() -> None:
    assert {t.name for t in TOPICS} == EXPECTED
    assert topic("bars.v1").partitions == 1  # the whole market in one place
    with pytest.raises(KeyError, match="unknown topic 'bars'"):
        topic("bars")


def test_market_inputs_share_one_partition_and_checkpoints_are_compacted() -> None:
    # faust gives co-partitioned topics (same partition count) to the same worker: the market
    # stage needs bars, liquidations, funding and gaps together, in one ordered log each.
    for name in ("bars.v1", "ticks.liquidation.v1", "ticks.funding.v1", "ticks.gap.v1"):
        assert topic(name).partitions == 1, name
    assert topic("ticks.price.v1").partitions == 3  # the tick stage scales out over these
    (state,) = INTERNAL_TOPICS
    assert (state.name, state.partitions, state.cleanup_policy) == ("worker.state.v1", 1, "compact")


async def test_create_is_idempotent_and_applies_configs(kafka_bootstrap: str) -> None:
    everything = EXPECTED | {"worker.state.v1"}
    first = await ensure_topics(kafka_bootstrap)
    second = await ensure_topics(kafka_bootstrap)
    assert {r.name for r in first} == everything
    assert {r.action for r in first} <= {"created", "exists"}
    assert {(r.name, r.action) for r in second} == {(n, "exists") for n in everything}

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(sorted(EXPECTED))}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "ticks.liquidation.v1")]
        )
    finally:
        await admin.close()
    for spec in TOPICS:
        assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
    entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
    assert entries["retention.ms"] == str(30 * DAY_MS)
    assert entries["cleanup.policy"] == "delete"


async def test_drift_is_reported_not_silently_changed(kafka_bootstrap: str) -> None:
    name = f"test.drift.{uuid.uuid4().hex[:8]}"
    original = TopicSpec(name, 2, DAY_MS, "delete", "k", "price", "test")
    assert [r.action for r in await ensure_topics(kafka_bootstrap, [original])] == ["created"]
    changed = TopicSpec(name, 4, 2 * DAY_MS, "compact", "k", "price", "test")
    (report,) = await ensure_topics(kafka_bootstrap, [changed])
    assert report.action == "drift"
    assert "partitions 2 (registry 4)" in report.detail
    assert f"retention.ms={DAY_MS} (registry {2 * DAY_MS})" in report.detail
    assert "cleanup.policy=delete (registry compact)" in report.detail


async def test_unreachable_broker_fails_clearly() -> None:
    with pytest.raises(Exception, match=r"(?i)unable to bootstrap|connect"):
        await ensure_topics("127.0.0.1:1", timeout_ms=2000)
