"""The container image, deploy/docker-compose.yml and the Kubernetes manifests (deploy/k8s/).

No Docker daemon is needed: the Dockerfile is linted (hadolint) and its build context, health
check and runtime layout are exercised without it; compose is validated against the Compose
Specification schema (check-jsonschema's vendored copy); kustomize renders with kubectl and the
result is validated against the Kubernetes OpenAPI schemas (kubernetes-validate ships them).
The Prometheus Operator objects have no schema there: their rule groups go through promtool.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploy.k8s import build_rules
from deploy.kafka.broker import free_port
from streams.config import load_settings, load_universe
from streams.topics import INTERNAL_TOPICS, TOPICS
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.test_bybit_markets import ccxt_markets, raw_row
from tests.promtool import promtool_path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
FIXTURES = REPO / "tests" / "fixtures" / "exchanges"
BIN = Path(sys.executable).parent
UID = 10001  # the image's user (Dockerfile FIRESALE_UID)
METRICS_PORT = 9464
JOBS = {"firesale-connectors", "firesale-workers"}
# Kubernetes versions the manifests must be valid for: an old supported one and the newest
# kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Prometheus Operator custom resources: no schema in kubernetes-validate, checked below.
CRD_KINDS = {"PrometheusRule", "ServiceMonitor"}


def _tool(name: str) -> str:
    """A console script of this virtualenv (dev extra) or PATH; fails saying how to get it."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make install` installs the dev extra that provides it")
    return found


# --- Dockerfile ---------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions((REPO / "Dockerfile").read_text()):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _healthcheck_cmd() -> list[str]:
    """The exec-form command of the runtime stage's HEALTHCHECK."""
    (args,) = [a for i, a in _stages()[-1] if i == "HEALTHCHECK"]
    cmd: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return cmd


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_is_multi_stage_non_root_without_java() -> None:
    instructions = _instructions((REPO / "Dockerfile").read_text())
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm")
    build, runtime = _stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    # The image's user is the fixed non-root uid.
    assert ("ARG", f"FIRESALE_UID={UID}") in runtime
    assert [a for i, a in runtime if i == "USER"] == ["${FIRESALE_UID}:${FIRESALE_UID}"]
    last = dict(runtime)  # the last instruction of each kind
    assert json.loads(last["ENTRYPOINT"]) == ["firesale"]
    assert json.loads(last["CMD"]) == ["worker"]
    assert last["WORKDIR"] == "/var/lib/firesale"
    assert last["EXPOSE"] == str(METRICS_PORT)
    env = " ".join(a for i, a in runtime if i == "ENV").split()
    for setting in (
        "FIRESALE_METRICS_BIND=0.0.0.0",
        f"FIRESALE_METRICS_PORT={METRICS_PORT}",
        "FIRESALE_CACHE_DIR=/var/cache/firesale",
        "HOME=/var/lib/firesale",
    ):
        assert setting in env
    # The runtime installs exactly the build stage's wheels, from no index; nothing installs a
    # JVM (Kafka runs in its own container).
    runs = [a for i, a in runtime if i == "RUN"]
    assert [r for r in runs if "--mount=type=bind,from=build,source=/wheels" in r and
            "pip install --no-index --no-deps /wheels/*.whl" in r]  # fmt: skip
    every_run = " ".join(a for i, a in instructions if i == "RUN")
    assert not re.search(r"openjdk|jre|jdk|temurin|java|apt-get", every_run)


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # allow-list
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = set()
    for ins, args in _stages()[0]:
        if ins == "COPY":
            *sources, _dest = args.split()
            copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    assert copied == allowed
    for path in copied:
        assert (REPO / path).exists(), path


def test_build_context_makes_a_complete_wheel(tmp_path: Path) -> None:
    """The Dockerfile's build stage on the .dockerignore context: `pip wheel` of the project."""
    ctx = tmp_path / "ctx"
    for ins, args in _stages()[0]:
        if ins != "COPY":
            continue
        *sources, _dest = args.split()
        for src in sources:
            source, target = REPO / src.rstrip("/"), ctx / src.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ctx)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("firesale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    schemas = {f"streams/schemas/{p.name}" for p in (REPO / "streams" / "schemas").glob("*.json")}
    assert schemas
    assert schemas <= names
    for needed in ("streams/universe.toml", "streams/cli.py", "deploy/kafka/broker.py"):
        assert needed in names
    for package in ("connectors", "signals", "streams", "deploy"):
        assert f"{package}/__init__.py" in names
    (entry,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "firesale = streams.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_healthcheck_command_probes_metrics(tmp_path: Path) -> None:
    """The HEALTHCHECK command succeeds against a live /metrics and fails without one."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    cmd = _healthcheck_cmd()
    assert cmd[0] == "python"
    assert "/metrics" in cmd[-1]
    registry = CollectorRegistry()
    Gauge("firesale_probe", "probe", registry=registry).set(1)
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    port = server.server_port
    env = {**os.environ, "FIRESALE_METRICS_PORT": str(port)}
    try:
        ok = subprocess.run([sys.executable, *cmd[1:]], env=env, timeout=30, check=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    down = subprocess.run(
        [sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    assert (ok.returncode, down.returncode) == (0, 1)


# --- read-only root filesystem, as the manifests run the processes ------------------------------


def _read_only_root(writable: list[Path], probe: Path, workdir: Path) -> list[str]:
    """Argv prefix: a user + mount namespace whose root filesystem is read-only except
    ``writable`` (bind-mounted onto themselves first), like readOnlyRootFilesystem plus
    emptyDirs. Exits 97 if ``probe`` can still be written (the remount did not take)."""
    script = "set -e\n"
    script += "".join(
        f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))}\n" for d in writable
    )
    script += "mount -o remount,bind,ro /\n"
    script += (
        f"if touch {shlex.quote(str(probe))} 2>/dev/null; "
        'then echo "root fs writable" >&2; exit 97; fi\n'
    )
    script += f'cd {shlex.quote(str(workdir))}\nexec "$@"\n'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]


@pytest.fixture
def read_only_env(tmp_path: Path) -> tuple[list[Path], dict[str, str], Path]:
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unprivileged user+mount namespaces are not available (unshare -rm)")
    work, cache, tmp = tmp_path / "work", tmp_path / "cache", tmp_path / "tmp"
    for d in (work, cache / "markets", tmp):
        d.mkdir(parents=True)
    universe = tmp_path / "universe.toml"  # read-only once the namespace is set up
    universe.write_text(
        textwrap.dedent("""
        [assets.ROBTC]
        class = "crypto"
        symbols = { bybit = "BTCUSDT" }

        [assets.ROROSE]
        class = "crypto"
        symbols = { bybit = "ROSEUSDT" }
        """)
    )
    markets = ccxt_markets([raw_row("BTCUSDT", "BTC"), raw_row("ROSEUSDT", "ROSE")])
    (cache / "markets" / "bybit.json").write_text(json.dumps(markets, default=str))
    env = {
        **os.environ,
        "HOME": str(work),
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
        "FIRESALE_CACHE_DIR": str(cache),
        "FIRESALE_UNIVERSE": str(universe),
        "FIRESALE_METRICS_BIND": "127.0.0.1",
    }
    return [work, cache, tmp], env, tmp_path / "probe"


def _healthy(env: dict[str, str]) -> bool:
    cmd = _healthcheck_cmd()
    result = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, check=False)
    return result.returncode == 0


def _wait_healthy(env: dict[str, str], proc: subprocess.Popen[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if _healthy(env):
            return True
        time.sleep(0.5)
    return False


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return ""
    return text


Sample = tuple[str, dict[str, str]]
# 20,000 ROSE liquidated at 0.04499, a short (tests/fixtures/exchanges/bybit_allLiquidation.json)
LIQ: Sample = (
    "firesale_liquidation_notional_usd_total",
    {"asset": "ROROSE", "side": "short", "venue": "bybit"},
)
PRODUCED: Sample = ("firesale_producer_messages_total", {"topic": "ticks.liquidation.v1"})


def _sample(text: str, sample: Sample) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name, s.labels) == sample:
                return float(s.value)
    return None


def _wait_sample(
    env: dict[str, str], proc: subprocess.Popen[str], sample: Sample, timeout_s: float
) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        value = _sample(_scrape(int(env["FIRESALE_METRICS_PORT"])), sample)
        if value is not None:
            return value
        time.sleep(0.5)
    return None


@pytest.mark.kafka
async def test_processes_run_on_a_read_only_root(
    kafka_bootstrap: str, read_only_env: tuple[list[Path], dict[str, str], Path]
) -> None:
    """`topics create`, `worker` and `connect` with only the Deployment's emptyDirs writable
    (working directory, FIRESALE_CACHE_DIR, tmp), health-checked by the image's own command."""
    writable, base_env, probe = read_only_env
    work = writable[0]
    ro = _read_only_root(writable, probe, work)
    app_id = f"ro-root-{uuid.uuid4().hex[:12]}"
    env = {**base_env, "FIRESALE_KAFKA_BOOTSTRAP": kafka_bootstrap, "FIRESALE_APP_ID": app_id}

    topics = await asyncio.to_thread(
        subprocess.run,
        [*ro, sys.executable, "-m", "streams", "topics", "create"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert topics.returncode == 0, topics.stdout + topics.stderr
    assert {line.split()[1] for line in topics.stdout.splitlines()} == {
        t.name for t in TOPICS + INTERNAL_TOPICS
    }

    fake = FakeBybit()
    url = await fake.start()
    worker_env = {**env, "FIRESALE_METRICS_PORT": str(free_port())}
    connect_env = {**env, "FIRESALE_METRICS_PORT": str(free_port()), "FIRESALE_BYBIT_WS_URL": url}
    logs = {name: work.parent / f"{name}.log" for name in ("worker", "connect")}
    with logs["worker"].open("w") as wout, logs["connect"].open("w") as cout:
        worker = subprocess.Popen(
            [*ro, sys.executable, "-m", "streams", "worker"],
            env=worker_env, stdout=wout, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        connect = subprocess.Popen(
            [*ro, sys.executable, "-m", "streams", "connect", "--venues", "bybit", "--no-backfill"],
            env=connect_env, stdout=cout, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        await fake.wait_subscribed({"allLiquidation.ROSEUSDT", "tickers.BTCUSDT"}, 60)
        await fake.broadcast((FIXTURES / "bybit_allLiquidation.json").read_text())
        worker_up = await asyncio.to_thread(_wait_healthy, worker_env, worker, 90)
        connect_up = await asyncio.to_thread(_wait_healthy, connect_env, connect, 30)
        # The liquidation goes the whole way: fake venue -> connect -> Kafka -> worker.
        liquidated = await asyncio.to_thread(_wait_sample, worker_env, worker, LIQ, 90)
        produced = _sample(_scrape(int(connect_env["FIRESALE_METRICS_PORT"])), PRODUCED)
    finally:
        for proc in (worker, connect):
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(p.wait, 60) for p in (worker, connect)]
        await fake.stop()
    out = {name: path.read_text() for name, path in logs.items()}
    for name, log in out.items():
        assert "Traceback" not in log, f"{name}: {log[-3000:]}"
    assert worker_up, out["worker"][-3000:]
    assert connect_up, out["connect"][-3000:]
    assert produced == 1.0, out["connect"][-3000:]
    assert liquidated == pytest.approx(20_000 * 0.04499), out["worker"][-3000:]
    assert codes == [0, 0], out
    for log in out.values():
        assert "Read-only file system" not in log
    # faust's data directory landed in one of the writable mounts.
    assert [p for d in writable for p in d.rglob(f"{app_id}-data") if p.is_dir()]
    assert not probe.exists()
    assert not _healthy(worker_env)  # stopped: the probe fails


# --- docker-compose ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    good = check(COMPOSE)
    assert good.returncode == 0, good.stdout + good.stderr
    # The same file with one misspelt service key must fail: the schema is really applied.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    deploy:\n", "    deploi:\n", 1))
    bad = check(broken)
    assert bad.returncode == 1
    assert "deploi" in bad.stdout + bad.stderr


def test_compose_config_when_docker_compose_is_installed() -> None:
    """`docker compose config`, where the Compose plugin exists (not on the CI machine)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker not installed")
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if plugin.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "kafka", "topics", "connectors", "workers", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "kafka", "topics", "connectors", "workers", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    assert services["kafka"]["image"] == "apache/kafka:4.4.0"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    firesale = {name: services[name] for name in ("topics", "connectors", "workers")}
    assert {n: s["command"] for n, s in firesale.items()} == {
        "topics": ["topics", "create"], "connectors": ["connect"], "workers": ["worker"],
    }  # fmt: skip
    assert services["workers"]["deploy"]["replicas"] >= 2
    for name, svc in firesale.items():
        assert svc["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
        assert svc["image"] == "${FIRESALE_IMAGE:-firesale:latest}", name
        assert "user" not in svc, name  # the image's non-root user
        assert svc["read_only"] is True, name
        env = svc["environment"]
        assert env["FIRESALE_KAFKA_BOOTSTRAP"] == "${FIRESALE_KAFKA_BOOTSTRAP:-kafka:9092}"
        assert env["FIRESALE_APP_ID"] == "${FIRESALE_APP_ID:-firesale}"
        assert env["FIRESALE_METRICS_PORT"] == str(METRICS_PORT)
        assert env["FIRESALE_METRICS_BIND"] == "0.0.0.0"
        assert f"/var/lib/firesale:uid={UID},gid={UID}" in svc["tmpfs"]
    # Writable places: per-container tmpfs, except the connectors' market cache (a volume).
    for name in ("topics", "workers"):
        assert f"/var/cache/firesale:uid={UID},gid={UID}" in firesale[name]["tmpfs"]
        assert "volumes" not in firesale[name]
    assert firesale["connectors"]["volumes"] == ["firesale-cache:/var/cache/firesale"]
    assert firesale["connectors"]["tmpfs"] == ["/tmp", f"/var/lib/firesale:uid={UID},gid={UID}"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("connectors", "workers"):
        dep = services[name]["depends_on"]["topics"]["condition"]
        assert dep == "service_completed_successfully"


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (relative to deploy/)."""
    out = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            out[target] = (DEPLOY / source).resolve()
    return out


def test_compose_mounts_the_monitoring_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prom = _mounts(services["prometheus"])
    assert prom == {
        "/etc/prometheus/prometheus.yml": DEPLOY / "prometheus" / "prometheus.compose.yml",
        "/etc/prometheus/rules": DEPLOY / "prometheus" / "rules",
    }
    assert sorted(p.name for p in prom["/etc/prometheus/rules"].glob("*.yml")) == [
        "alerts.yml",
        "recording.yml",
    ]
    am = _mounts(services["alertmanager"])
    assert am == {
        "/etc/alertmanager/alertmanager.yml": DEPLOY / "alertmanager" / "alertmanager.yml"
    }
    # Every secret file alertmanager.yml reads is mounted where it reads it.
    am_text = am["/etc/alertmanager/alertmanager.yml"].read_text()
    wanted = set(re.findall(r"_file: (/\S+)", am_text))
    assert wanted
    assert {s["target"] for s in services["alertmanager"]["secrets"]} == wanted
    grafana = _mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "firesale.yml").read_text()
    )["providers"]
    (dash_path,) = [p["options"]["path"] for p in providers]
    assert grafana[dash_path] == DEPLOY / "grafana" / "dashboards"
    assert len(list(grafana[dash_path].glob("*.json"))) >= 4
    assert services["grafana"]["environment"]["FIRESALE_PROMETHEUS_URL"] == (
        "http://prometheus:9090"
    )


def test_compose_prometheus_scrapes_the_services_by_name(compose: dict[str, Any]) -> None:
    bare = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ours = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.compose.yml").read_text())
    assert ours["global"] == bare["global"]
    assert ours["rule_files"] == bare["rule_files"]
    assert {j["job_name"] for j in ours["scrape_configs"]} == JOBS
    assert {j["job_name"] for j in bare["scrape_configs"]} == JOBS
    jobs = {j["job_name"]: j for j in ours["scrape_configs"]}
    assert jobs["firesale-connectors"]["static_configs"] == [
        {"targets": [f"connectors:{METRICS_PORT}"]}
    ]
    # Each worker replica is its own target: DNS A records of the compose service name.
    assert jobs["firesale-workers"]["dns_sd_configs"][0] | {"refresh_interval": None} == {
        "names": ["workers"], "type": "A", "port": METRICS_PORT, "refresh_interval": None,
    }  # fmt: skip
    (am,) = ours["alerting"]["alertmanagers"]
    assert am["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert {"connectors", "workers", "alertmanager"} <= set(compose["services"])
    result = subprocess.run(
        [promtool_path(), "check", "config", str(DEPLOY / "prometheus" / "prometheus.compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


# --- Kubernetes -----------------------------------------------------------------------------


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: it renders deploy/k8s (`kubectl kustomize`)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


OVERLAYS = ("base", "overlays/production")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = _render(request.param)
    return docs


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return doc


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] == "Deployment"
    }


def test_manifests_pass_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in rendered}
    assert kinds - CRD_KINDS == {"Namespace", "ConfigMap", "Service", "Deployment"} | (
        {"Secret"} & kinds
    )
    assert kinds >= CRD_KINDS
    for doc in rendered:
        if doc["kind"] in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    # The validator rejects what is wrong (a misspelt probe field), so passing means something.
    deployment = _one(rendered, "Deployment", "firesale-workers")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**deployment, "spec": {**deployment["spec"]}}
    broken["spec"]["template"] = {
        **deployment["spec"]["template"],
        "spec": {**deployment["spec"]["template"]["spec"], "containers": [
            {**container, "livenesProbe": container["livenessProbe"]},
        ]},
    }  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_workers_are_one_consumer_group(rendered: list[dict[str, Any]]) -> None:
    workers = _one(rendered, "Deployment", "firesale-workers")
    connectors = _one(rendered, "Deployment", "firesale-connectors")
    assert workers["spec"]["replicas"] >= 2
    assert connectors["spec"]["replicas"] == 1
    assert connectors["spec"]["strategy"] == {"type": "Recreate"}
    settings = _one(rendered, "ConfigMap", "firesale-settings")
    for spec in _pod_specs(rendered).values():
        for c in spec.get("initContainers", []) + spec["containers"]:
            # Settings come from the one ConfigMap: no pod can set its own app id.
            assert c["envFrom"][0] == {"configMapRef": {"name": settings["metadata"]["name"]}}
            assert "env" not in c
    app_id = settings["data"]["FIRESALE_APP_ID"]
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", app_id)
    assert load_settings(settings["data"]).app_id == app_id


def test_settings_and_universe_are_valid(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    settings = load_settings(_one(rendered, "ConfigMap", "firesale-settings")["data"])
    assert settings.kafka_bootstrap is not None
    assert (settings.metrics_bind, settings.metrics_port) == ("0.0.0.0", METRICS_PORT)
    assert str(settings.cache_dir) == "/var/cache/firesale"
    universe_cm = _one(rendered, "ConfigMap", "firesale-universe")
    text = universe_cm["data"]["universe.toml"]
    # The base ships the packaged default universe; edit a copy in an overlay to change it.
    assert text == (REPO / "streams" / "universe.toml").read_text()
    (tmp_path / "universe.toml").write_text(text)
    assert load_universe(tmp_path / "universe.toml").names == load_universe(None).names
    for spec in _pod_specs(rendered).values():
        (vol,) = [v for v in spec["volumes"] if "configMap" in v]
        assert vol["configMap"]["name"] == universe_cm["metadata"]["name"]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == vol["name"]]
        assert Path(mount["mountPath"]) / "universe.toml" == settings.universe


def test_pods_run_non_root_on_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    settings = _one(rendered, "ConfigMap", "firesale-settings")["data"]
    specs = _pod_specs(rendered)
    assert set(specs) == {"firesale-connectors", "firesale-workers"}
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert (pod["runAsUser"], pod["runAsGroup"]) == (UID, UID), name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, (name, c["name"])
            writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty_dirs}
            assert writable == {"/tmp", "/var/lib/firesale", settings["FIRESALE_CACHE_DIR"]}
            assert c["image"].split("/")[-1].startswith("firesale")
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, (name, c["name"])


def test_probes_and_services_expose_metrics(rendered: list[dict[str, Any]]) -> None:
    port = int(_one(rendered, "ConfigMap", "firesale-settings")["data"]["FIRESALE_METRICS_PORT"])
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Service"}
    # Service names are the Prometheus job names the alert rules use (job="firesale-...").
    assert set(services) == JOBS == set(deployments)
    for name, dep in deployments.items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, (name, probe)
        svc = services[name]["spec"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["selector"].items() <= pod_labels.items()
        assert svc["ports"] == [
            {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
        ]
    monitor = _one(rendered, "ServiceMonitor", "firesale")
    selector = monitor["spec"]["selector"]
    (expr,) = selector["matchExpressions"]
    for svc in services.values():
        labels = svc["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items()
        assert labels[expr["key"]] in expr["values"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "jobLabel" not in monitor["spec"]  # job = Service name


def test_production_points_at_an_existing_cluster() -> None:
    docs = _render("overlays/production")
    data = _one(docs, "ConfigMap", "firesale-settings")["data"]
    servers = data["FIRESALE_KAFKA_BOOTSTRAP"].split(",")
    assert len(servers) == 3
    assert all(s.endswith(":9092") for s in servers)
    assert data["FIRESALE_APP_ID"] == "firesale-prod"
    assert not [d for d in docs if d["kind"] == "Secret"]  # never overwrite the real one
    assert _one(docs, "Deployment", "firesale-workers")["spec"]["replicas"] == 3
    images = {c["image"] for spec in _pod_specs(docs).values() for c in spec["containers"]}
    assert images == {"registry.example.com/firesale/firesale:0.1.0"}
    for kind in CRD_KINDS:
        (doc,) = [d for d in docs if d["kind"] == kind]
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# --- PrometheusRule = deploy/prometheus/rules --------------------------------------------------


def test_prometheus_rule_is_generated_from_the_rule_files(tmp_path: Path) -> None:
    check = subprocess.run(
        [sys.executable, str(K8S / "build_rules.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    # A stale copy is caught, and so is a missing rules directory.
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(build_rules.OUTPUT.read_text() + "# edited by hand\n")
    assert build_rules.main(["--check", "--output", str(stale)]) == 1
    empty = tmp_path / "rules"
    empty.mkdir()
    with pytest.raises(build_rules.RulesError, match="no rule files"):
        build_rules.load_groups(empty)


def test_prometheus_rule_carries_the_alert_rules(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    rule = _one(rendered, "PrometheusRule", "firesale-rules")
    groups = rule["spec"]["groups"]
    rules_dir = DEPLOY / "prometheus" / "rules"
    alerts = yaml.safe_load((rules_dir / "alerts.yml").read_text())["groups"]
    recording = yaml.safe_load((rules_dir / "recording.yml").read_text())["groups"]
    assert groups == alerts + recording  # files in name order: alerts.yml, recording.yml
    names = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {
        "FiresaleCoSellingActive", "FiresaleLiquidationCascade", "FiresaleCorrelationRegimeShift",
        "FiresaleFundingStress", "FiresaleFeedDown", "FiresaleFeedStale",
        "FiresalePipelineStalled", "FiresaleConsumerLag", "FiresaleNoSignal",
        "FiresaleDeadLetterSpike",
    } <= names  # fmt: skip
    spec_file = tmp_path / "rules.yml"
    spec_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = subprocess.run(
        [promtool_path(), "check", "rules", str(spec_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in groups)
    assert f"SUCCESS: {count} rules found" in result.stdout


# --- the image itself, where a Docker daemon is available (not on the CI machine) -------------


def _docker_daemon() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    info = subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False)
    return docker if info.returncode == 0 else None


def test_image_builds_and_runs_as_non_root() -> None:
    """`docker build` (a few minutes: downloads the base image and the wheels)."""
    docker = _docker_daemon()
    if docker is None:
        pytest.skip("no Docker daemon")
    tag = f"firesale-test:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        [docker, "build", "-t", tag, str(REPO)], capture_output=True, text=True, timeout=1800,
        check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        whoami = subprocess.run(
            [docker, "run", "--rm", "--entrypoint", "id", tag, "-u"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert whoami.stdout.strip() == str(UID)
        java = subprocess.run(
            [docker, "run", "--rm", "--entrypoint", "sh", tag, "-c", "command -v java || echo no"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert java.stdout.strip() == "no"
        topics = subprocess.run(
            [docker, "run", "--rm", tag, "topics", "list"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert topics.returncode == 0
        assert "ticks.price.v1" in topics.stdout
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, check=False)
