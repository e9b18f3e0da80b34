"""Real Prometheus, Alertmanager and a webhook receiver for the deploy tests, plus test copies
of the shipped configs.

Test copies keep everything that is under test (jobs, rule files, routes, grouping, inhibition)
and change only what a test must: ports, scrape/evaluation intervals, Alertmanager's waits and
its receivers (each becomes a webhook to :class:`WebhookReceiver` at ``/<receiver name>``, so the
route an alert took shows in the request path).

The tools come from Debian's packages (``make tools``); :func:`tool_path` says so when one is
missing.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from deploy.kafka.broker import free_port, port_is_free
from tests.promtool import INSTALL_HINT

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"

Json = Any
Predicate = Callable[[Sequence["Notification"]], bool]


class ToolMissingError(RuntimeError):
    """A Prometheus tool is not on PATH; the message says how to install it."""


class StackError(RuntimeError):
    """A process of the test stack did not start or answer; the message carries its log tail."""


def tool_path(name: str) -> str:
    """Path of ``name`` (promtool, prometheus, alertmanager, amtool) on PATH, or a clear error."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def run_tool(args: Sequence[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a tool (first element looked up with :func:`tool_path`) and capture its output."""
    return subprocess.run(
        [tool_path(args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def load_yaml(path: Path) -> Json:
    """A YAML file as plain data."""
    with path.open() as f:
        return yaml.safe_load(f)


def write_yaml(path: Path, doc: Json) -> Path:
    """Write ``doc`` as YAML to ``path`` and return it."""
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def free_port_pair() -> int:
    """A free port whose successor is free too (``firesale run``: connectors P, worker P+1)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise StackError("no two consecutive free ports found in 50 tries")


# --- configs -------------------------------------------------------------------------------


def prometheus_test_config(
    connectors: Sequence[str],
    workers: Sequence[str],
    alertmanager: str,
    interval: str = "1s",
) -> Json:
    """The shipped prometheus.yml with these targets, intervals and absolute rule paths."""
    doc = copy.deepcopy(load_yaml(PROMETHEUS_YML))
    doc["global"].update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    doc["rule_files"] = [str(PROMETHEUS_YML.parent / p) for p in doc["rule_files"]]
    doc["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    targets = {"firesale-connectors": list(connectors), "firesale-workers": list(workers)}
    for job in doc["scrape_configs"]:
        job["static_configs"] = [{"targets": targets.pop(job["job_name"])}]
    if targets:
        raise StackError(f"prometheus.yml has no scrape job for {sorted(targets)}")
    return doc


def alertmanager_test_config(
    webhook_url: str,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
) -> Json:
    """The shipped alertmanager.yml with every receiver a webhook to ``webhook_url/<name>``
    and every route's waits shortened; routes, grouping and inhibit rules unchanged."""
    doc = copy.deepcopy(load_yaml(ALERTMANAGER_YML))
    doc["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [{"url": f"{webhook_url}/{r['name']}", "send_resolved": True}],
        }
        for r in doc["receivers"]
    ]
    timings = {
        "group_wait": group_wait,
        "group_interval": group_interval,
        "repeat_interval": repeat_interval,
    }

    def shorten(route: dict[str, Any], root: bool) -> None:
        for key, value in timings.items():
            if root or key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child, False)

    shorten(doc["route"], True)
    return doc


# --- webhook receiver ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """One webhook call from Alertmanager (payload format version 4)."""

    path: str
    """``/<receiver name>``."""
    received_s: float
    """``time.time()`` when it arrived."""
    payload: Json

    @property
    def status(self) -> str:
        """``firing`` or ``resolved`` (of the group)."""
        return str(self.payload["status"])

    def alerts(self, alertname: str) -> list[Json]:
        """The alerts of this notification named ``alertname``."""
        return [a for a in self.payload["alerts"] if a["labels"].get("alertname") == alertname]


@dataclass
class WebhookReceiver:
    """A local HTTP server that records every JSON POST (what a pager would get)."""

    notifications: list[Notification] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:<port>``)."""
        if self._server is None:
            raise StackError("webhook receiver not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> WebhookReceiver:
        """Listen on a free port in a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                note = Notification(self.path, time.time(), json.loads(body))
                with receiver._lock:
                    receiver.notifications.append(note)
                    receiver._lock.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def snapshot(self) -> list[Notification]:
        """The notifications so far."""
        with self._lock:
            return list(self.notifications)

    def wait_for(
        self, done: Predicate, timeout_s: float, alive: Callable[[], str | None] = lambda: None
    ) -> list[Notification]:
        """Block until ``done(notifications)``; :class:`StackError` on timeout or when ``alive``
        returns a reason to give up (a process died)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not done(self.notifications):
                left = deadline - time.monotonic()
                problem = alive()
                if problem is not None or left <= 0:
                    got = [(n.path, n.status, _names(n)) for n in self.notifications]
                    raise StackError(f"{problem or f'timed out after {timeout_s} s'}; got {got}")
                self._lock.wait(min(left, 1.0))
            return list(self.notifications)


def _names(note: Notification) -> list[str]:
    return sorted({a["labels"].get("alertname", "?") for a in note.payload["alerts"]})


# --- processes -----------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child when the test process dies (no orphan servers)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1 (prctl(2))


@dataclass
class Server:
    """A Prometheus or Alertmanager process on a free local port, with its log file."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process' log."""
        return self.log.read_text(errors="replace")[-chars:]

    def problem(self) -> str | None:
        """Why the process is unusable (it exited), or None."""
        code = self.proc.poll()
        return None if code is None else f"{self.name} exited {code}: {self.log_tail()}"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until ``/-/ready`` answers 200 (both servers have it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (problem := self.problem()) is not None:
                raise StackError(problem)
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise StackError(f"{self.name} not ready after {timeout_s} s: {self.log_tail()}")

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Json:
        """GET ``path`` (with query ``params``) as JSON."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Json) -> int:
        """POST ``body`` as JSON; the HTTP status."""
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, args: Sequence[str], workdir: Path, port: int) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [tool_path(name), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            preexec_fn=_die_with_parent,
        )
    return Server(name, port, proc, log)


def start_alertmanager(config: Json, workdir: Path) -> Server:
    """A real Alertmanager on a free port with ``config``, clustering off, storage in
    ``workdir``; returns once it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_yaml(workdir / "alertmanager.yml", config)
    port = free_port()
    server = _spawn(
        "alertmanager",
        [
            f"--config.file={path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # empty: no gossip cluster (a single test instance)
            "--log.level=info",
        ],
        workdir,
        port,
    )
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def start_prometheus(config: Json, workdir: Path) -> Server:
    """A real Prometheus on a free port with ``config``, its TSDB in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_yaml(workdir / "prometheus.yml", config)
    port = free_port()
    server = _spawn(
        "prometheus",
        [
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=info",
        ],
        workdir,
        port,
    )
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


# --- Alertmanager API v2 --------------------------------------------------------------------


def am_alert(labels: Mapping[str, str], ends_at: str | None = None, **annotations: str) -> Json:
    """An alert as Prometheus posts it to ``/api/v2/alerts`` (``ends_at`` ISO = resolved)."""
    alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations)}
    if ends_at is not None:
        alert["endsAt"] = ends_at
    return alert


def am_states(server: Server) -> dict[tuple[str, str], Json]:
    """Alertmanager's alerts by (alertname, venue or ""): ``{"state", "inhibitedBy",
    "silencedBy", "fingerprint"}`` (state ``active`` or ``suppressed``)."""
    out: dict[tuple[str, str], Json] = {}
    for alert in server.get("/api/v2/alerts"):
        labels = alert["labels"]
        key = (labels["alertname"], labels.get("venue", ""))
        out[key] = {**alert["status"], "fingerprint": alert["fingerprint"]}
    return out


# --- Prometheus HTTP API --------------------------------------------------------------------


def prom_query(server: Server, expr: str, at_s: float | None = None) -> list[Json]:
    """``/api/v1/query`` result (vector or scalar as a one-element list)."""
    params = {"query": expr}
    if at_s is not None:
        params["time"] = f"{at_s:.3f}"
    doc = server.get("/api/v1/query", params)
    if doc["status"] != "success":
        raise StackError(f"query {expr!r} failed: {doc}")
    data = doc["data"]
    return [data["result"]] if data["resultType"] in ("scalar", "string") else data["result"]


def prom_query_range(
    server: Server, expr: str, start_s: float, end_s: float, step_s: float
) -> list[Json]:
    """``/api/v1/query_range`` result (one entry per series, ``values`` = [[t, "v"], ...])."""
    doc = server.get(
        "/api/v1/query_range",
        {"query": expr, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": f"{step_s:g}"},
    )
    if doc["status"] != "success":
        raise StackError(f"query_range {expr!r} failed: {doc}")
    result: list[Json] = doc["data"]["result"]
    return result


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], str | None]
) -> None:
    """Poll ``check`` every 0.5 s; :class:`StackError` naming ``what`` on timeout or death."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if (problem := alive()) is not None:
            raise StackError(f"waiting for {what}: {problem}")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not after {timeout_s} s")
        time.sleep(0.5)


# --- firesale run --------------------------------------------------------------------------

_PHASE = re.compile(r"^scenario phase (\w+): (\S+) → (\S+)$", re.MULTILINE)


@dataclass
class FiresaleRun:
    """``python -m streams run --scenario ...``: the scenario source on ``metrics_port`` and its
    worker child on ``metrics_port + 1``."""

    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    started_s: float
    """``time.time()`` at start."""

    def log_text(self) -> str:
        """The run's output so far (its own lines and the worker's)."""
        return self.log.read_text(errors="replace")

    def problem(self) -> str | None:
        """Why the run is unusable (it or its worker child exited), or None."""
        code = self.proc.poll()
        if code is not None:
            return f"firesale run exited {code}: {self.log_text()[-3000:]}"
        text = self.log_text()
        if "stream worker stopped" in text:  # the run goes on without it (streams/service.py)
            return f"the stream worker died: {text[-3000:]}"
        return None

    def phases(self) -> dict[str, tuple[float, float]]:
        """The labelled scenario phases as printed by the source: name -> (start, end) in unix
        seconds of *simulated* time."""
        return {
            m.group(1): (
                datetime.fromisoformat(m.group(2)).timestamp(),
                datetime.fromisoformat(m.group(3)).timestamp(),
            )
            for m in _PHASE.finditer(self.log_text())
        }

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM (as Ctrl-C would) and wait; the exit code (SIGKILL after ``timeout_s``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_firesale_run(
    bootstrap: str, workdir: Path, scenario: str, speed: float, env: Mapping[str, str]
) -> FiresaleRun:
    """Start ``firesale run --scenario`` against ``bootstrap`` with ``env`` (FIRESALE_*)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port_pair()
    full_env = {
        **os.environ,
        **env,
        "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRESALE_METRICS_PORT": str(port),
    }
    log = workdir / "firesale-run.log"
    with log.open("wb") as out:
        args = ["run", "--scenario", scenario, "--speed", f"{speed:g}"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=_die_with_parent,
        )
    return FiresaleRun(proc, log, port, time.time())
