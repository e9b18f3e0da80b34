"""The embedded broker launcher and its CLI, on real Java processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.kafka import broker

pytestmark = pytest.mark.kafka

FIRESALE = [sys.executable, "-m", "streams"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FIRESALE, *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=180,
        check=False,
    )


def _java_pids_for(home: Path) -> list[int]:
    """Live Java processes whose command line mentions ``home`` (must be none after stop)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if (
            "kafka.Kafka" in cmdline
            and str(home) in cmdline
            and broker.process_alive(int(proc.name))
        ):
            pids.append(int(proc.name))
    return pids


def test_cli_start_status_stop_twice_leaves_no_java_process(tmp_path: Path) -> None:
    home = tmp_path / "kafka-home"
    port = broker.free_port()
    for round_ in (1, 2):
        started = _cli("kafka", "start", "--port", str(port), "--data-dir", str(home))
        assert started.returncode == 0, started.stderr
        assert f"bootstrap 127.0.0.1:{port}" in started.stdout
        status = _cli("kafka", "status", "--data-dir", str(home))
        assert status.returncode == 0, status.stderr
        assert f"Kafka {broker.KAFKA_VERSION} up: bootstrap 127.0.0.1:{port}" in status.stdout
        assert len(_java_pids_for(home)) == 1, f"round {round_}"
        stopped = _cli("kafka", "stop", "--data-dir", str(home))
        assert stopped.returncode == 0, stopped.stderr
        assert _java_pids_for(home) == []
        after = _cli("kafka", "status", "--data-dir", str(home))
        assert after.returncode == 1
        assert "no embedded broker running" in after.stderr
    # The second start reused the formatted data directory (same cluster, no re-format).
    assert (home / "data" / "meta.properties").exists()
    assert not (home / broker.PID_FILE).exists()


def test_attached_broker_dies_with_its_parent(tmp_path: Path) -> None:
    home = tmp_path / "attached"
    code = (
        "import sys, time; from pathlib import Path; from deploy.kafka import broker; "
        f"i = broker.start(Path({str(home)!r}), None, detach=False); print(i.pid, flush=True); "
        "time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    java_pid = int(parent.stdout.readline())
    assert broker.process_alive(java_pid)
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
    parent.wait()
    deadline = time.monotonic() + 30
    while broker.process_alive(java_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not broker.process_alive(java_pid), "orphan Java broker left behind"


def test_stop_without_broker_is_a_clear_error(tmp_path: Path) -> None:
    result = _cli("kafka", "stop", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"no running broker recorded in {tmp_path}" in result.stderr


def test_port_in_use_is_refused_before_java_starts(tmp_path: Path, kafka_bootstrap: str) -> None:
    port = kafka_bootstrap.rpartition(":")[2]
    result = _cli("kafka", "start", "--port", port, "--data-dir", str(tmp_path / "h"))
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr


@pytest.mark.parametrize("kind", ["missing", "too-old"])
def test_missing_or_old_java_says_what_to_install(tmp_path: Path, kind: str) -> None:
    java_home = tmp_path / "jdk"
    if kind == "too-old":
        (java_home / "bin").mkdir(parents=True)
        fake = java_home / "bin" / "java"
        fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
        fake.chmod(0o755)
    env = {**os.environ, "JAVA_HOME": str(java_home)}
    result = _cli("kafka", "start", "--data-dir", str(tmp_path / "h"), env=env)
    assert result.returncode == 1
    expected = "Java 17+ not found: install a JDK" if kind == "missing" else "Java 11 at"
    assert expected in result.stderr
    assert "FIRESALE_KAFKA_BOOTSTRAP" in result.stderr


def test_missing_maven_with_empty_cache_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker.shutil, "which", lambda name: None)
    with pytest.raises(broker.MavenNotFoundError) as info:
        broker.resolve_jars(tmp_path / "empty-cache")
    message = str(info.value)
    assert "jars are not cached" in message
    assert "install Maven" in message
    assert "FIRESALE_KAFKA_BOOTSTRAP" in message


def test_cluster_id_starting_with_dash_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # url-safe base64 of a first byte 0xF8 starts with "-": once read by the storage tool as
    # an option, which failed about one start in 64.
    import uuid

    monkeypatch.setattr(broker.uuid, "uuid4", lambda: uuid.UUID(bytes=b"\xf8" + b"\x01" * 15))
    home = tmp_path / "dash"
    info = broker.start(home, None, detach=False)
    try:
        meta = (home / "data" / "meta.properties").read_text()
        assert "cluster.id=-AEBAQEBAQEBAQEBAQEBAQ" in meta
        assert broker.admin_call_succeeds(info.bootstrap)
    finally:
        broker.stop(home)


def test_resolve_bootstrap_prefers_the_configured_cluster(tmp_path: Path) -> None:
    assert broker.resolve_bootstrap("k1:9092", tmp_path) == "k1:9092"
    with pytest.raises(broker.BrokerNotRunningError, match="set FIRESALE_KAFKA_BOOTSTRAP"):
        broker.resolve_bootstrap(None, tmp_path)  # nothing configured, nothing running
