"""Kafka over SASL_SSL (SCRAM-SHA-512/256 + TLS) and mutual TLS, end to end, on a broker of its own.

The broker keeps its PLAINTEXT listener (inter-broker traffic and the launcher's readiness check)
and adds two listeners whose certificate is signed by a CA made here: SASL_SSL (SCRAM-SHA-512
and SCRAM-SHA-256 users) and SSL with client certificates required (mutual TLS). firesale's
clients are pointed at those two listeners only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.metrics import ConnectorMetrics
from connectors.sink import KafkaSink
from deploy.kafka import broker
from streams.config import load_settings
from streams.events import DeadLetter, PriceTick, encode
from streams.kafka_security import client_kwargs

pytestmark = pytest.mark.kafka

USER = "firesale"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # unique: any occurrence in an output is a leak
USER_256 = "firesale-256"  # a second user, with a SCRAM-SHA-256 credential only
PASSWORD_256 = f"pw256-{uuid.uuid4().hex}"

_CLIENT_KEY = ec.generate_private_key(ec.SECP256R1())
CLIENT_KEY_PEM = _CLIENT_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
# the base64 lines of the client's private key file: none may appear in an output
CLIENT_KEY_LINES = [line for line in CLIENT_KEY_PEM.decode().splitlines() if "-----" not in line]


def _pem_props(pem: bytes) -> str:
    """A PEM block as one Java properties value (``\\n`` escapes; Kafka's PEM parser, KIP-651)."""
    return "\\n".join(pem.decode().strip().splitlines())


@dataclass(frozen=True, slots=True)
class Certs:
    """The test PKI: files for the clients, properties values for the broker."""

    ca_file: Path
    ca_props: str  # the CA, as the SSL listener's PEM truststore
    server_chain: str
    server_key: str
    client_cert_file: Path  # CN=firesale-client, signed by the CA
    client_key_file: Path


def _make_certs(out: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firesale test CA")])

    def issue(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey, *extensions: x509.ExtensionType
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        for ext in extensions:
            builder = builder.add_extension(ext, critical=isinstance(ext, x509.BasicConstraints))
        return builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca = issue(ca_name, ca_key.public_key(), x509.BasicConstraints(ca=True, path_length=None))
    key = ec.generate_private_key(ec.SECP256R1())
    server = issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        key.public_key(),
        x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        ),
    )
    client = issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firesale-client")]),
        _CLIENT_KEY.public_key(),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
    )
    ca_file = out / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    client_cert_file = out / "client.pem"
    client_cert_file.write_bytes(client.public_bytes(pem))
    client_key_file = out / "client-key.pem"
    client_key_file.write_bytes(CLIENT_KEY_PEM)
    client_key_file.chmod(0o600)
    pkcs8 = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Certs(
        ca_file=ca_file,
        ca_props=_pem_props(ca.public_bytes(pem)),
        server_chain=_pem_props(server.public_bytes(pem) + ca.public_bytes(pem)),
        server_key=_pem_props(pkcs8),
        client_cert_file=client_cert_file,
        client_key_file=client_key_file,
    )


@dataclass(frozen=True, slots=True)
class Cluster:
    """The FIRESALE_* environments that reach the module's broker, one per secured listener."""

    sasl_env: dict[str, str]  # SASL_SSL, SCRAM-SHA-512 user
    mtls_env: dict[str, str]  # SSL with the client certificate


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A broker with a SASL_SSL and a mutual-TLS SSL listener."""
    tmp = tmp_path_factory.mktemp("kafka-sasl")
    certs = _make_certs(tmp)
    sasl_port, ssl_port = broker.free_port(), broker.free_port()
    # Listener-prefixed keys override the global ones for that listener only
    # (https://kafka.apache.org/documentation/#brokerconfigs, "listener.name.<name>.");
    # PEM stores: KIP-651. The SCRAM JAAS entry is per listener and per mechanism.
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    extra = f"""\
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={jaas}
ssl.keystore.type=PEM
ssl.keystore.certificate.chain={certs.server_chain}
ssl.keystore.key={certs.server_key}
listener.name.ssl.ssl.client.auth=required
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.certificates={certs.ca_props}
"""
    home = tmp / "kafka"
    started = time.monotonic()
    broker.start(
        home,
        None,
        detach=False,
        extra_listeners=[f"SASL_SSL://127.0.0.1:{sasl_port}", f"SSL://127.0.0.1:{ssl_port}"],
        extra_properties=extra,
        format_args=[
            "--add-scram",
            f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
            "--add-scram",
            f"SCRAM-SHA-256=[name={USER_256},password={PASSWORD_256}]",
        ],
    )
    print(f"SASL_SSL + SSL broker up in {time.monotonic() - started:.1f} s")
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FIRESALE_")},
        "FIRESALE_KAFKA_SSL_CAFILE": str(certs.ca_file),
        "FIRESALE_CACHE_DIR": str(tmp / "cache"),
        "FIRESALE_KAFKA_HOME": str(tmp / "no-embedded"),
        "FIRESALE_METRICS_PORT": "0",
    }
    sasl_env = base | {
        "FIRESALE_KAFKA_BOOTSTRAP": f"127.0.0.1:{sasl_port}",
        "FIRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FIRESALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FIRESALE_KAFKA_SASL_USERNAME": USER,
        "FIRESALE_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    mtls_env = base | {
        "FIRESALE_KAFKA_BOOTSTRAP": f"127.0.0.1:{ssl_port}",
        "FIRESALE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "FIRESALE_KAFKA_SSL_CERTFILE": str(certs.client_cert_file),
        "FIRESALE_KAFKA_SSL_KEYFILE": str(certs.client_key_file),
    }
    try:
        yield Cluster(sasl_env=sasl_env, mtls_env=mtls_env)
    finally:
        broker.stop(home)


@pytest.fixture
def secure(cluster: Cluster) -> dict[str, str]:
    """The environment of the SASL_SSL listener (SCRAM-SHA-512 user)."""
    return cluster.sasl_env


@pytest.fixture
def mtls(cluster: Cluster) -> dict[str, str]:
    """The environment of the SSL listener, with the client certificate and key."""
    return cluster.mtls_env


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _no_leak(*texts: str) -> None:
    """No password, and no line of the client's private key file, in any of ``texts``."""
    for text in texts:
        assert PASSWORD not in text
        assert PASSWORD_256 not in text
        for line in CLIENT_KEY_LINES:
            assert line not in text


def test_a_topics_create_over_sasl_ssl(secure: dict[str, str]) -> None:
    done = _cli(secure, "topics", "create")
    assert done.returncode == 0, done.stdout + done.stderr
    actions = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert actions["bars.v1"] == "created", done.stdout
    assert actions["ticks.price.v1"] == "created", done.stdout
    again = _cli(secure, "topics", "create")
    assert again.returncode == 0, again.stdout + again.stderr
    again_actions = {line.split()[1]: line.split()[0] for line in again.stdout.splitlines()}
    assert again_actions["bars.v1"] == "exists", again.stdout  # it read them back over SASL_SSL
    _no_leak(done.stdout, done.stderr, again.stdout, again.stderr)


def test_b_sink_produces_and_tail_reads_over_sasl_ssl(secure: dict[str, str]) -> None:
    assert _cli(secure, "topics", "create").returncode == 0
    settings = load_settings(secure)
    reason = f"sasl-{uuid.uuid4().hex[:8]}"
    letter = DeadLetter(
        venue="binance", channel="test", ts_recv_ns=time.time_ns(), reason=reason, raw="{}"
    )

    async def produce() -> int:
        sink = KafkaSink(
            settings.kafka_bootstrap or "",
            ConnectorMetrics.create(__import__("prometheus_client").CollectorRegistry()),
            **client_kwargs(settings),
        )
        await sink.start()
        await sink.put("ticks.deadletter.v1", b"binance:test", encode(letter))
        await sink.flush()
        await sink.stop()
        return sink.delivered

    assert asyncio.run(produce()) == 1
    done = _cli(secure, "tail", "ticks.deadletter.v1", "--from-beginning", "--max", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert (got["venue"], got["channel"], got["reason"]) == ("binance", "test", reason)
    _no_leak(done.stdout, done.stderr)


def test_c_worker_over_sasl_ssl_makes_a_bar(secure: dict[str, str], tmp_path: Path) -> None:
    assert _cli(secure, "topics", "create").returncode == 0
    metrics_port = broker.free_port()
    env = {
        **secure,
        "FIRESALE_APP_ID": f"sasl-{uuid.uuid4().hex[:8]}",
        "FIRESALE_BAR_INTERVAL_S": "1",
        "FIRESALE_BAR_GRACE_S": "0",
        "FIRESALE_METRICS_PORT": str(metrics_port),
        "FIRESALE_LOG_LEVEL": "DEBUG",
    }
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "worker on" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        settings = load_settings(secure)
        t0 = time.time_ns() // 10**9 * 10**9

        async def produce() -> None:
            sink = KafkaSink(
                settings.kafka_bootstrap or "",
                ConnectorMetrics.create(__import__("prometheus_client").CollectorRegistry()),
                **client_kwargs(settings),
            )
            await sink.start()
            base = {"venue": "binance", "symbol": "BTCUSDT", "asset": "BTC",
                    "asset_class": "crypto", "kind": "mark"}  # fmt: skip
            for i, price in enumerate((100.0, 101.0)):
                ts = t0 + i * 10**9 + 500_000_000
                tick = PriceTick(ts_event_ns=ts, ts_recv_ns=ts, price=price, **base)  # type: ignore[arg-type]
                await sink.put("ticks.price.v1", b"binance:BTCUSDT", encode(tick))
            await sink.flush()
            await sink.stop()

        asyncio.run(produce())
        done = _cli(env | {"FIRESALE_METRICS_PORT": "0"}, "tail", "bars.v1", "--from-beginning",
                    "--max", "1", "--json", timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()[-3000:]
        bar = json.loads(done.stdout.strip().splitlines()[-1])
        assert (bar["asset"], bar["bar_start_ns"], bar["close"], bar["stale"]) == (
            "BTC",
            t0,
            100.0,
            False,
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            metrics_text = resp.read().decode()
        assert "firesale_" in metrics_text
        _no_leak(metrics_text, done.stdout, done.stderr)
    finally:
        proc.terminate()
        proc.wait(60)
    text = log.read_text()
    assert f"worker on {secure['FIRESALE_KAFKA_BOOTSTRAP']}" in text  # the SASL_SSL port only
    _no_leak(text)


def test_d_wrong_password_is_refused_plainly(secure: dict[str, str]) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    done = _cli(secure | {"FIRESALE_KAFKA_SASL_PASSWORD": wrong}, "topics", "create", timeout=90)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "authentication failed" in out.lower(), out
    assert "Traceback" not in out, out
    assert wrong not in out
    assert PASSWORD not in out
    # firesale's own last line says so and names the settings to check
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: topic creation on {secure['FIRESALE_KAFKA_BOOTSTRAP']} failed: authentication "
            "failed: Kafka refused the SASL login (check FIRESALE_KAFKA_SASL_USERNAME"
        )
    ), out
    # a worker does not wait forever on a wrong password: it exits saying why
    worker = _cli(
        secure | {"FIRESALE_KAFKA_SASL_PASSWORD": wrong, "FIRESALE_APP_ID": "sasl-wrong"},
        "worker",
        timeout=90,
    )
    wout = worker.stdout + worker.stderr
    assert worker.returncode == 2, wout
    assert "authentication failed: Kafka refused the SASL login" in wout, wout
    assert "Traceback" not in wout, wout
    assert wrong not in wout
    # and neither does tail
    tailed = _cli(secure | {"FIRESALE_KAFKA_SASL_PASSWORD": wrong}, "tail", "bars.v1", "--max", "1")
    tout = tailed.stdout + tailed.stderr
    assert tailed.returncode != 0, tout
    assert "authentication failed: Kafka refused the SASL login" in tout, tout
    assert "Traceback" not in tout, tout
    assert wrong not in tout


def test_e_password_not_in_help_or_config_show(secure: dict[str, str]) -> None:
    shown = _cli(secure, "config", "show")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "kafka_sasl_password" in shown.stdout
    assert "**********" in shown.stdout
    assert USER in shown.stdout  # the user name is not secret; the table shows real values
    helped = _cli(secure, "--help")
    assert helped.returncode == 0
    _no_leak(shown.stdout, shown.stderr, helped.stdout, helped.stderr)
    assert PASSWORD not in repr(load_settings(secure))


def test_bad_security_settings_name_their_keys(tmp_path: Path) -> None:
    from streams.config import ConfigError

    secret = f"pw-{uuid.uuid4().hex}"
    with pytest.raises(ConfigError) as missing_file:
        load_settings({"FIRESALE_KAFKA_SSL_CAFILE": str(tmp_path / "x.pem")})
    assert f"FIRESALE_KAFKA_SSL_CAFILE: Value error, {tmp_path / 'x.pem'} does not exist" in str(
        missing_file.value
    )
    with pytest.raises(ConfigError) as no_user:
        load_settings(
            {"FIRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FIRESALE_KAFKA_SASL_PASSWORD": secret}
        )
    assert "FIRESALE_KAFKA_SASL_USERNAME must be set when FIRESALE_KAFKA_SECURITY_PROTOCOL is " \
        "SASL_SSL" in str(no_user.value)  # fmt: skip
    assert "FIRESALE_KAFKA_SASL_PASSWORD" not in str(no_user.value)  # it is set
    assert secret not in str(no_user.value)
    with pytest.raises(ConfigError) as bad_mechanism:
        load_settings({"FIRESALE_KAFKA_SASL_MECHANISM": "GSSAPI"})
    assert "FIRESALE_KAFKA_SASL_MECHANISM: Input should be 'SCRAM-SHA-512'" in str(
        bad_mechanism.value
    )
    # PLAINTEXT (the default) adds nothing to the clients' arguments
    assert client_kwargs(load_settings({})) == {}
    sasl = client_kwargs(
        load_settings(
            {
                "FIRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "FIRESALE_KAFKA_SASL_USERNAME": "u",
                "FIRESALE_KAFKA_SASL_PASSWORD": secret,
            }
        )
    )
    assert sasl == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": secret,
    }


def test_f_mutual_tls_creates_topics_and_a_sink_record_is_tailed(mtls: dict[str, str]) -> None:
    done = _cli(mtls, "topics", "create")
    assert done.returncode == 0, done.stdout + done.stderr
    actions = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert actions["ticks.deadletter.v1"] in ("created", "exists"), done.stdout
    assert actions["bars.v1"] in ("created", "exists"), done.stdout
    # new records only: earlier tests' records in the topic do not count
    tailer = subprocess.Popen(
        [sys.executable, "-m", "streams", "tail", "ticks.deadletter.v1", "--max", "1", "--json"],
        env=mtls, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tailer.stderr is not None
        first = tailer.stderr.readline()  # "tailing ... (new records only)", once positioned
        assert first.startswith(
            f"tailing ticks.deadletter.v1 on {mtls['FIRESALE_KAFKA_BOOTSTRAP']}"
        )
        settings = load_settings(mtls)
        reason = f"mtls-{uuid.uuid4().hex[:8]}"
        letter = DeadLetter(
            venue="okx", channel="mtls", ts_recv_ns=time.time_ns(), reason=reason, raw="{}"
        )

        async def produce() -> int:
            sink = KafkaSink(
                settings.kafka_bootstrap or "",
                ConnectorMetrics.create(__import__("prometheus_client").CollectorRegistry()),
                **client_kwargs(settings),
            )
            await sink.start()
            await sink.put("ticks.deadletter.v1", b"okx:mtls", encode(letter))
            await sink.flush()
            await sink.stop()
            return sink.delivered

        assert asyncio.run(produce()) == 1
        out, err = tailer.communicate(timeout=60)
    finally:
        if tailer.poll() is None:
            tailer.kill()
            tailer.wait()
    assert tailer.returncode == 0, out + err
    got = json.loads(out.strip().splitlines()[-1])
    assert (got["venue"], got["channel"], got["reason"]) == ("okx", "mtls", reason)
    shown = _cli(mtls | {"COLUMNS": "400"}, "config", "show")  # wide: paths not cut
    assert shown.returncode == 0, shown.stdout + shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "kafka_ssl_keyfile" in line)
    assert mtls["FIRESALE_KAFKA_SSL_KEYFILE"] in row, row  # its path is shown, not its contents
    _no_leak(done.stdout, done.stderr, first, out, err, shown.stdout, shown.stderr)


def _without_client_certificate(mtls: dict[str, str]) -> dict[str, str]:
    drop = ("FIRESALE_KAFKA_SSL_CERTFILE", "FIRESALE_KAFKA_SSL_KEYFILE")
    return {k: v for k, v in mtls.items() if k not in drop}


def test_g_mutual_tls_without_a_client_certificate_is_refused(mtls: dict[str, str]) -> None:
    """The broker's TLS alert (bad_certificate) reaches the operator with the settings to set,
    as one line; aiokafka alone says only "Unable to bootstrap"."""
    env = _without_client_certificate(mtls)
    done = _cli(env, "topics", "create", timeout=90)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    assert done.stdout == "", out
    bootstrap = mtls["FIRESALE_KAFKA_BOOTSTRAP"]
    (line,) = done.stderr.strip().splitlines()  # firesale's error alone
    assert line.startswith(f"error: topic creation on {bootstrap} failed: TLS refused ("), line
    assert "CERTIFICATE" in line, line  # the alert's name, e.g. SSLV3_ALERT_BAD_CERTIFICATE
    assert line.endswith(
        "the listener requires a client certificate: set FIRESALE_KAFKA_SSL_CERTFILE and "
        "FIRESALE_KAFKA_SSL_KEYFILE (signed by a CA the broker trusts)"
    ), line
    # the worker does not wait for a certificate to appear: it exits at once, saying the same
    started = time.monotonic()
    worker = _cli(env, "worker", timeout=90)
    wout = worker.stdout + worker.stderr
    assert worker.returncode == 2, wout
    assert time.monotonic() - started < 30, wout
    assert "TLS refused (" in wout, wout
    assert "FIRESALE_KAFKA_SSL_CERTFILE" in wout, wout
    assert "Traceback" not in wout, wout
    _no_leak(out, wout)


def test_h_scram_sha_256_user_logs_in(secure: dict[str, str]) -> None:
    env = secure | {
        "FIRESALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "FIRESALE_KAFKA_SASL_USERNAME": USER_256,
        "FIRESALE_KAFKA_SASL_PASSWORD": PASSWORD_256,
    }
    done = _cli(env, "topics", "create")
    assert done.returncode == 0, done.stdout + done.stderr
    actions = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert actions["bars.v1"] in ("created", "exists"), done.stdout
    assert actions["ticks.price.v1"] in ("created", "exists"), done.stdout
    # the user has a SCRAM-SHA-256 credential only: the same password over SHA-512 is refused,
    # so the login above really went through SCRAM-SHA-256
    other = _cli(env | {"FIRESALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, "topics", "create")
    oout = other.stdout + other.stderr
    assert other.returncode != 0, oout
    assert "authentication failed: Kafka refused the SASL login" in oout, oout
    assert "Traceback" not in oout, oout
    _no_leak(done.stdout, done.stderr, oout)
