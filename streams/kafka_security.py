"""Kafka client security (TLS, SASL/SCRAM) from ``FIRESALE_KAFKA_*`` settings, in one place.

Every Kafka client firesale makes (producers, consumers, admin clients, the faust app) takes its
security options from here, so that one setting change secures all of them. With the defaults
(``PLAINTEXT``) the options are empty and clients behave as before.

aiokafka options: https://aiokafka.readthedocs.io/en/stable/api.html (security_protocol,
sasl_mechanism, sasl_plain_username, sasl_plain_password, ssl_context); SCRAM-SHA-256/512 are
supported since aiokafka 0.7. faust maps ``faust.SASLCredentials`` / ``faust.SSLCredentials`` onto
the same options (faust/transport/drivers/aiokafka.py ``credentials_to_aiokafka_auth``).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Iterator
from typing import Any

from streams.config import ConfigError, KafkaSecuritySettings

AUTH_FAILED_HINT = (
    "check FIRESALE_KAFKA_SASL_USERNAME / FIRESALE_KAFKA_SASL_PASSWORD / "
    "FIRESALE_KAFKA_SASL_MECHANISM"
)


def security_settings() -> KafkaSecuritySettings:
    """The security keys alone, read from the environment (and ``.env``)."""
    from pydantic import ValidationError

    from streams.config import ENV_PREFIX, _describe

    try:
        return KafkaSecuritySettings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix=ENV_PREFIX)) from None


def ssl_context(settings: KafkaSecuritySettings) -> ssl.SSLContext | None:
    """A TLS context for SSL / SASL_SSL (None otherwise); verifies the broker's host name."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )
    return context


def client_kwargs(settings: KafkaSecuritySettings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` / ``AIOKafkaAdminClient``.

    ``None`` reads the ``FIRESALE_KAFKA_*`` security keys from the environment. PLAINTEXT gives
    an empty dict, so callers that pass nothing keep aiokafka's defaults.
    """
    s = security_settings() if settings is None else settings
    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(s)
    if context is not None:
        out["ssl_context"] = context
    if protocol.startswith("SASL_"):
        assert s.kafka_sasl_password is not None  # the settings validator guarantees it
        out["sasl_mechanism"] = s.kafka_sasl_mechanism
        out["sasl_plain_username"] = s.kafka_sasl_username
        out["sasl_plain_password"] = s.kafka_sasl_password.get_secret_value()
    return out


def faust_credentials(settings: KafkaSecuritySettings | None = None) -> Any:
    """``broker_credentials`` for ``faust.App`` (None for PLAINTEXT).

    faust's SASLCredentials picks SASL_SSL when given an ssl_context, SASL_PLAINTEXT otherwise.
    """
    import faust

    s = security_settings() if settings is None else settings
    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(s)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    assert s.kafka_sasl_password is not None
    return faust.SASLCredentials(
        username=s.kafka_sasl_username,
        password=s.kafka_sasl_password.get_secret_value(),
        mechanism=s.kafka_sasl_mechanism,
        ssl_context=context,
    )


class _AuthFailureWatch(logging.Filter):
    """Remembers that aiokafka logged a refused SASL login; lets every record through.

    aiokafka (client.py, logger "aiokafka") logs the broker's SaslAuthenticationFailed while
    bootstrapping and then raises a bare "Unable to bootstrap" KafkaConnectionError; this filter
    keeps the real reason. A filter, not a handler, so that where aiokafka's lines go is unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen_at = -1e9  # time.monotonic() of the last refused login

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):
            if "SaslAuthenticationFailed" in record.getMessage():
                self.seen_at = time.monotonic()
        return True


_WATCH = _AuthFailureWatch()
logging.getLogger("aiokafka").addFilter(_WATCH)


def is_auth_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause), or aiokafka's log before it, is a refused SASL login."""
    seen: BaseException | None = exc
    while seen is not None:
        if "Authentication" in type(seen).__name__ or "uthentication failed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    # recent only: a login refused long ago says nothing about a later failure
    return time.monotonic() - _WATCH.seen_at < 60.0


def tls_refusal(bootstrap: str, settings: KafkaSecuritySettings | None = None) -> str | None:
    """Why the first bootstrap server refuses our TLS session, or None (not TLS, or no refusal).

    aiokafka reports a broker that rejects the client certificate (a listener with
    ``ssl.client.auth=required``) or a server certificate we do not trust only as "Connection
    closed" / "Unable to bootstrap", keeping the TLS alert in a DEBUG line. This probe opens one
    TLS session itself: the handshake raises on an untrusted server certificate, and the first
    read returns the broker's alert (TLS 1.3 sends it after the handshake). Failure path only:
    it costs up to ~4 s.
    """
    import socket

    s = security_settings() if settings is None else settings
    context = ssl_context(s)
    if context is None:
        return None
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=3) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")) as tls,
        ):
            tls.settimeout(1.0)
            tls.recv(1)
    except ssl.SSLError as exc:
        return str(exc.reason or exc)
    except (OSError, ValueError):
        return None
    return None


def tls_hint(reason: str, settings: KafkaSecuritySettings | None = None) -> str:
    """What to change for a TLS ``reason`` from :func:`tls_refusal`."""
    s = security_settings() if settings is None else settings
    if "VERIFY_FAILED" in reason:  # our side: the broker's certificate is not trusted
        return (
            "we do not trust the broker's certificate: set FIRESALE_KAFKA_SSL_CAFILE to the CA "
            "that signed it"
        )
    if "CERTIFICATE" in reason and s.kafka_ssl_certfile is None:
        return (
            "the listener requires a client certificate: set FIRESALE_KAFKA_SSL_CERTFILE and "
            "FIRESALE_KAFKA_SSL_KEYFILE (signed by a CA the broker trusts)"
        )
    return (
        "check FIRESALE_KAFKA_SSL_CAFILE / FIRESALE_KAFKA_SSL_CERTFILE / "
        "FIRESALE_KAFKA_SSL_KEYFILE against the listener's TLS settings"
    )


def describe_failure(exc: BaseException, bootstrap: str | None = None) -> str:
    """``exc`` as one line for an operator: names the settings to check on a refused login
    or (given ``bootstrap``) a refused TLS session."""
    if is_auth_failure(exc):
        return f"authentication failed: Kafka refused the SASL login ({AUTH_FAILED_HINT})"
    reason = tls_refusal(bootstrap) if bootstrap else None
    if reason is not None:
        return f"TLS refused ({reason}): {tls_hint(reason)}"
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """Keep aiokafka's own log lines off the console (a command's error line says it all).

    A sink handler instead of a level or ``disabled``, so that the refused-login watch above
    still sees aiokafka's records.
    """
    library_log = logging.getLogger("aiokafka")
    sink, propagate = logging.NullHandler(), library_log.propagate
    library_log.addHandler(sink)
    library_log.propagate = False
    try:
        yield
    finally:
        library_log.removeHandler(sink)
        library_log.propagate = propagate
