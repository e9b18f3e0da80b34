"""The embedded local Kafka broker: Apache Kafka 4.x jars from Maven Central, KRaft, one node.

``firesale kafka start`` and ``make run`` use it when ``FIRESALE_KAFKA_BOOTSTRAP`` is unset, and the
test suite starts one per session. The broker jars are resolved once with Maven
(``deploy/kafka/pom.xml``, ``maven-dependency-plugin:copy-dependencies``) into a cache directory;
later starts need no network.

Layout of a broker's *home* directory (default ``.kafka/`` in the working directory)::

    server.properties  log4j2.properties  data/  logs/broker.log  broker.json (pid file)

The recipe (main classes, KRaft settings, small-machine sizing) follows
``shared/notes/streaming.md`` section A, which cites Apache Kafka's own scripts and test harnesses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

KAFKA_VERSION = "4.4.0"
"""Pinned Apache Kafka version (must match ``deploy/kafka/pom.xml``)."""

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA_MAJOR = 17
PID_FILE = "broker.json"

JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    # Two cores: the serial collector avoids a pool of GC threads fighting the Python workers.
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.req.name = kafka.request.logger
logger.req.level = WARN
logger.cleaner.name = org.apache.kafka.storage.internals.log.LogCleaner
logger.cleaner.level = WARN
"""


class KafkaLauncherError(Exception):
    """Root of every error raised by the embedded broker launcher."""


class JavaNotFoundError(KafkaLauncherError):
    """No usable Java runtime (17 or later) on PATH."""


class MavenNotFoundError(KafkaLauncherError):
    """The broker jars are not cached and Maven is not available to fetch them."""


class BrokerStartError(KafkaLauncherError):
    """The broker process did not come up (the message carries the tail of its log)."""


class BrokerNotRunningError(KafkaLauncherError):
    """No broker recorded in the pid file is alive."""


NO_BROKER_HINT = (
    "or set FIRESALE_KAFKA_BOOTSTRAP=host:port to use an existing Kafka cluster instead of the "
    "embedded broker"
)


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """What the pid file records about a running broker."""

    pid: int
    port: int
    controller_port: int
    home: str
    kafka_version: str
    started_at: float

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"


def default_cache_dir() -> Path:
    """Where resolved jars live: ``$FIRESALE_CACHE_DIR`` or ``~/.cache/firesale``."""
    env = os.environ.get("FIRESALE_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "firesale"
    return base / f"kafka-{KAFKA_VERSION}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``.

    SO_REUSEADDR as the broker binds it: connections of a just-stopped broker lingering in
    TIME_WAIT do not make the port busy, a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def java_major_version(java: str) -> int:
    """Major version of the given ``java`` executable (``17`` for ``openjdk version "17.0.15"``)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise JavaNotFoundError(f"could not read the version of {java}: {out.stderr.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """Path of a Java 17+ runtime, from ``$JAVA_HOME`` or ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise JavaNotFoundError(
            f"Java {MIN_JAVA_MAJOR}+ not found: install a JDK (Debian: apt-get install "
            f"openjdk-17-jre-headless) {NO_BROKER_HINT}"
        )
    major = java_major_version(java)
    if major < MIN_JAVA_MAJOR:
        raise JavaNotFoundError(
            f"Java {major} at {java} is too old: Kafka {KAFKA_VERSION} needs Java "
            f"{MIN_JAVA_MAJOR}+; install a newer JDK {NO_BROKER_HINT}"
        )
    return java


def resolve_jars(cache_dir: Path | None = None) -> Path:
    """Return the directory of broker jars, fetching them with Maven on first use.

    The result is cached: when ``<cache>/lib/.complete`` exists no network is needed.
    """
    cache = cache_dir or default_cache_dir()
    lib = cache / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenNotFoundError(
            f"Kafka {KAFKA_VERSION} jars are not cached in {lib} and Maven is not installed: "
            f"install Maven (Debian: apt-get install maven) so they can be fetched from Maven "
            f"Central, {NO_BROKER_HINT}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    pom = cache / "pom.xml"
    pom.write_text(resources.files("deploy.kafka").joinpath("pom.xml").read_text())
    tmp_lib = cache / "lib.partial"
    shutil.rmtree(tmp_lib, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={tmp_lib}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BrokerStartError(
            "Maven could not resolve the Kafka jars (is Maven Central reachable?):\n"
            + "\n".join(tail)
        )
    jars = {p.name for p in tmp_lib.glob("*.jar")}
    required = (f"kafka_2.13-{KAFKA_VERSION}.jar", "log4j-core-", "log4j-slf4j")
    missing = [r for r in required if not any(j.startswith(r) for j in jars)]
    if missing:
        raise BrokerStartError(f"resolved jars lack {missing}: check deploy/kafka/pom.xml")
    shutil.rmtree(lib, ignore_errors=True)
    tmp_lib.rename(lib)
    marker.write_text(KAFKA_VERSION + "\n")
    return lib


def server_properties(
    home: Path,
    port: int,
    controller_port: int,
    extra_listeners: Sequence[str] = (),
    extra_properties: str = "",
) -> str:
    """KRaft combined broker+controller configuration sized for a 2-core machine.

    The voter set is static (``controller.quorum.voters``), not a ``--standalone`` bootstrap
    checkpoint, so a restart on a different controller port reuses the formatted data as is.
    ``extra_listeners`` (e.g. ``SASL_SSL://127.0.0.1:9093``, named after their security
    protocol) are added next to the PLAINTEXT one; ``extra_properties`` is appended (a later
    key wins in a Java properties file), e.g. the TLS and SASL settings of such a listener.
    """
    data = home / "data"
    more = "".join("," + listener for listener in extra_listeners)
    names = "".join(
        f",{n}:{n}" for n in (listener.partition(":")[0] for listener in extra_listeners)
    )
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{more}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{more}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{names}
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=4
# Source topics are created from the registry (firesale topics create), never auto-created;
# faust creates its internal changelog and repartition topics through the admin API.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=16777216
log.segment.bytes=67108864
log.retention.hours=168
{extra_properties}"""


def read_pid_file(home: Path) -> BrokerInfo | None:
    """The broker recorded in ``home``, or None when there is no pid file."""
    path = home / PID_FILE
    if not path.exists():
        return None
    try:
        return BrokerInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise KafkaLauncherError(f"corrupt pid file {path}: {exc}; delete it") from exc


def process_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError):
            return stat.read_text().split(") ", 1)[1][0] != "Z"
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """preexec_fn: ask Linux to SIGTERM the broker when the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _admin_ready(bootstrap: str, timeout_s: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    finally:
        await admin.close()


def _tcp_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def admin_call_succeeds(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """One admin round trip (describe cluster) against ``bootstrap``.

    A TCP probe comes first so that a broker still binding its port costs no client error logs.
    """
    if not _tcp_open(bootstrap):
        return False
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        # A thread of its own: the caller may be inside a running event loop (tests, run).
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _admin_ready(bootstrap, timeout_s)).result()
    except Exception:
        return False
    finally:
        quiet.setLevel(level)
    return True


def _log_tail(home: Path, lines: int = 25) -> str:
    texts = []
    for name in ("logs/broker.log", "logs/stdout.log"):
        path = home / name
        if path.exists():
            texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
    return "\n".join(texts[-lines:]) or "(no log output)"


def start(
    home: Path,
    port: int | None = None,
    *,
    detach: bool = True,
    timeout_s: float = 90.0,
    cache_dir: Path | None = None,
    extra_listeners: Sequence[str] = (),
    extra_properties: str = "",
    format_args: Sequence[str] = (),
) -> BrokerInfo:
    """Start a single-node KRaft broker in ``home`` and wait until an admin call succeeds.

    Parameters
    ----------
    home
        Directory for configuration, data, logs and the pid file (created if needed). Data
        already formatted there is reused.
    port
        Client port; ``None`` picks a free one. The controller gets its own free port.
    detach
        True: the broker outlives this process (``firesale kafka start``). False: Linux sends it
        SIGTERM when this process dies, so an embedding process (``firesale run``, the tests)
        can never leave an orphan Java process behind.
    extra_listeners, extra_properties
        More listeners and settings (see :func:`server_properties`); readiness is still
        checked on the PLAINTEXT listener.
    format_args
        More ``kafka-storage format`` arguments for a new data directory, e.g.
        ``["--add-scram", "SCRAM-SHA-512=[name=u,password=p]"]`` (SCRAM users exist in KRaft
        only once written to the metadata log; https://kafka.apache.org/documentation/#security_sasl_scram).
    """
    home = home.resolve()
    existing = read_pid_file(home)
    if existing is not None and process_alive(existing.pid):
        if admin_call_succeeds(existing.bootstrap):
            return existing
        raise BrokerStartError(
            f"a broker (pid {existing.pid}) is already recorded in {home} but does not answer; "
            f"run `firesale kafka stop --data-dir {home}`"
        )
    java = find_java()
    lib = resolve_jars(cache_dir)
    port = port or free_port()
    if not port_is_free(port):
        raise BrokerStartError(
            f"port {port} is already in use: pick another with --port, or stop what listens there"
        )
    controller_port = free_port()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(
        server_properties(home, port, controller_port, extra_listeners, extra_properties)
    )
    log4j = home / "log4j2.properties"
    log4j.write_text(LOG4J2_PROPERTIES)
    base = [
        java,
        "-cp",
        str(lib / "*"),
        *JVM_OPTS,
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={home / 'logs'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # KAFKA-15413
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run(
            [
                *base,
                "kafka.tools.StorageTool",
                "format",
                # "=" form: a url-safe base64 id may start with "-" and read as an option
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
                "--ignore-formatted",
                *format_args,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerStartError(f"formatting {home / 'data'} failed:\n{fmt.stderr[-2000:]}")
    stdout = (home / "logs" / "stdout.log").open("ab")
    proc = subprocess.Popen(
        [*base, "kafka.Kafka", str(props)],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=detach,
        preexec_fn=None if detach else _die_with_parent,
    )
    stdout.close()
    info = BrokerInfo(
        pid=proc.pid,
        port=port,
        controller_port=controller_port,
        home=str(home),
        kafka_version=KAFKA_VERSION,
        started_at=time.time(),
    )
    (home / PID_FILE).write_text(json.dumps(asdict(info)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (home / PID_FILE).unlink(missing_ok=True)
            raise BrokerStartError(
                f"Kafka exited with code {proc.returncode} during start-up; log tail:\n"
                + _log_tail(home)
            )
        if admin_call_succeeds(info.bootstrap, timeout_s=3.0):
            return info
        time.sleep(0.3)
    _terminate(proc.pid)
    (home / PID_FILE).unlink(missing_ok=True)
    raise BrokerStartError(
        f"Kafka did not answer an admin call within {timeout_s:.0f} s; log tail:\n"
        + _log_tail(home)
    )


def _terminate(pid: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM ``pid`` and wait; SIGKILL if it is still alive after ``timeout_s``.

    Returns True when the process stopped on SIGTERM alone.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while process_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(home: Path, timeout_s: float = 30.0) -> BrokerInfo:
    """Stop the broker recorded in ``home`` (SIGTERM, wait; SIGKILL after ``timeout_s``)."""
    home = home.resolve()
    info = read_pid_file(home)
    if info is None or not process_alive(info.pid):
        (home / PID_FILE).unlink(missing_ok=True)
        raise BrokerNotRunningError(f"no running broker recorded in {home}")
    _terminate(info.pid, timeout_s)
    (home / PID_FILE).unlink(missing_ok=True)
    return info


def status(home: Path) -> tuple[BrokerInfo | None, bool]:
    """The recorded broker (None if none is alive) and whether it answers an admin call."""
    info = read_pid_file(home.resolve())
    if info is None or not process_alive(info.pid):
        return None, False
    return info, admin_call_succeeds(info.bootstrap)


def resolve_bootstrap(configured: str | None, home: Path) -> str:
    """The Kafka to talk to: ``configured`` when given, else the embedded broker in ``home``."""
    if configured:
        return configured
    info, answers = status(home)
    if info is None or not answers:
        raise BrokerNotRunningError(
            "no Kafka to talk to: set FIRESALE_KAFKA_BOOTSTRAP (or pass --bootstrap), or start "
            "the embedded broker with `firesale kafka start` (`firesale run` starts it too)"
        )
    return info.bootstrap


@contextlib.contextmanager
def running(home: Path, port: int | None = None) -> Iterator[BrokerInfo]:
    """Context manager: an attached broker (dies with this process), stopped on exit."""
    info = start(home, port, detach=False)
    try:
        yield info
    finally:
        with contextlib.suppress(BrokerNotRunningError):
            stop(home)
