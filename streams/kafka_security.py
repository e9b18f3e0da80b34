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


def describe_failure(exc: BaseException) -> str:
    """``exc`` as one line for an operator: names the settings to check on a refused login."""
    if is_auth_failure(exc):
        return f"authentication failed: Kafka refused the SASL login ({AUTH_FAILED_HINT})"
    return str(exc) or type(exc).__name__
