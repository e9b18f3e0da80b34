"""Kafka over SASL_SSL (SCRAM-SHA-512 + TLS), end to end, on a broker of its own.

The broker keeps its PLAINTEXT listener (inter-broker traffic and the launcher's readiness check)
and adds a SASL_SSL listener whose certificate is signed by a CA made here; firesale's clients
are pointed at the SASL_SSL listener only.
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
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.metrics import ConnectorMetrics
from connectors.sink import KafkaSink
from deploy.kafka import broker
from streams.config import load_settings
from streams.events import DeadLetter, PriceTick, encode
from streams.kafka_security import client_kwargs

pytestmark = pytest.mark.kafka

USER = "firesale"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # unique: any occurrence in an output is a leak


def _pem_props(pem: bytes) -> str:
    """A PEM block as one Java properties value (``\\n`` escapes; Kafka's PEM parser, KIP-651)."""
    return "\\n".join(pem.decode().strip().splitlines())


def _make_certs(out: Path) -> tuple[Path, str, str]:
    """A CA and a server certificate for 127.0.0.1: (CA file, server chain, server key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firesale test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = out / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = _pem_props(
        cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ca_file, chain, _pem_props(pkcs8)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A broker with a SASL_SSL listener; the FIRESALE_* environment that reaches it."""
    tmp = tmp_path_factory.mktemp("kafka-sasl")
    ca_file, chain, key = _make_certs(tmp)
    sasl_port = broker.free_port()
    extra = f"""\
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.certificate.chain={chain}
ssl.keystore.key={key}
"""
    home = tmp / "kafka"
    started = time.monotonic()
    broker.start(
        home,
        None,
        detach=False,
        extra_listeners=[f"SASL_SSL://127.0.0.1:{sasl_port}"],
        extra_properties=extra,
        format_args=["--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"],
    )
    print(f"SASL_SSL broker up in {time.monotonic() - started:.1f} s")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FIRESALE_")},
        "FIRESALE_KAFKA_BOOTSTRAP": f"127.0.0.1:{sasl_port}",
        "FIRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FIRESALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FIRESALE_KAFKA_SASL_USERNAME": USER,
        "FIRESALE_KAFKA_SASL_PASSWORD": PASSWORD,
        "FIRESALE_KAFKA_SSL_CAFILE": str(ca_file),
        "FIRESALE_CACHE_DIR": str(tmp / "cache"),
        "FIRESALE_KAFKA_HOME": str(tmp / "no-embedded"),
        "FIRESALE_METRICS_PORT": "0",
    }
    try:
        yield env
    finally:
        broker.stop(home)


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
    for text in texts:
        assert PASSWORD not in text


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
