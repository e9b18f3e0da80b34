"""Shared fixtures. The real Kafka broker is started once per test session, on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kafka import broker

# Helper programs run as subprocesses by the tests; importing them needs their environment.
collect_ignore_glob = ["*_app.py"]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real Apache Kafka broker for this test session.

    ``FIRESALE_TEST_KAFKA_BOOTSTRAP`` points the suite at an existing broker instead; otherwise
    the embedded broker starts attached to this process (it cannot outlive the test run).
    """
    external = os.environ.get("FIRESALE_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    home = tmp_path_factory.mktemp("kafka")
    info = broker.start(home, None, detach=False)
    try:
        yield info.bootstrap
    finally:
        broker.stop(home)


@pytest.fixture
def repo_root() -> Path:
    """The project's root directory."""
    return Path(__file__).resolve().parent.parent
