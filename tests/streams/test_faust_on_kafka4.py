"""Early proof that faust-streaming 0.15.3 + aiokafka 0.14 work against our Kafka 4.x broker.

A real faust worker process keeps a changelogged table; after the worker is stopped and a new
one starts (memory store: nothing on disk), the table must be restored from its changelog.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka

APP = Path(__file__).with_name("faust_counter_app.py")


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(APP), "worker", "-l", "info"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=log.parent,
    )


async def _send(bootstrap: str, topic: str, items: list[tuple[str, str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value.encode(), key=key.encode())
    finally:
        await producer.stop()


async def _dump(
    bootstrap: str, topic: str, path: Path, worker: subprocess.Popen[bytes], log: Path
) -> dict[str, int]:
    token = uuid.uuid4().hex
    await _send(bootstrap, topic, [("_", f"dump:{token}")])
    deadline = time.monotonic() + 90
    while True:
        if path.exists():
            reply = json.loads(path.read_text())
            if reply["token"] == token:
                result: dict[str, int] = reply["counts"]
                return result
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"faust worker produced no dump; log tail:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


def _stop(worker: subprocess.Popen[bytes]) -> int:
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


async def test_faust_table_survives_worker_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic = f"test.faust.counts.{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    dump = tmp_path / "counts.json"
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "COUNTER_BOOTSTRAP": kafka_bootstrap,
        "COUNTER_TOPIC": topic,
        "COUNTER_APP_ID": f"fs-test-counter-{suffix}",
        "COUNTER_DUMP": str(dump),
    }

    worker = _worker(env, log)
    try:
        await _send(
            kafka_bootstrap,
            topic,
            [("a", f"a{i}:1") for i in range(6)] + [("b", f"b{i}:2") for i in range(4)],
        )
        first = await _dump(kafka_bootstrap, topic, dump, worker, log)
    finally:
        code = _stop(worker)
    assert first == {"a": 6, "b": 8}
    assert code == 0, log.read_text()[-3000:]

    worker = _worker(env, log)
    try:
        await _send(kafka_bootstrap, topic, [("a", "a6:5")])
        second = await _dump(kafka_bootstrap, topic, dump, worker, log)
    finally:
        _stop(worker)
    # 6 + 5: the new worker started from the changelog, not from zero (the memory store keeps
    # nothing on disk). Entries are keyed by message id, so a redelivered message (faust is
    # at-least-once) cannot inflate the sums.
    assert second == {"a": 11, "b": 8}
