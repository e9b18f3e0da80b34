"""Configuration: ``FIRESALE_*`` environment variables plus a TOML universe file.

Settings that vary per deployment (broker address, ports, window sizes) come from the environment
(:class:`Settings`); *what* is watched (assets, their asset classes, the venues and symbols that
price them) comes from the universe file (:class:`Universe`). Invalid configuration fails at start
with a :class:`ConfigError` whose message names the key and the problem.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AssetClass = Literal["crypto", "equity", "metal", "fx", "rates"]
ASSET_CLASSES: tuple[str, ...] = get_args(AssetClass)
Venue = Literal["binance", "bybit", "okx", "hyperliquid"]
VENUES: tuple[str, ...] = get_args(Venue)
Session = Literal["24/7", "cme_equity", "cme_metals"]
SESSIONS: tuple[str, ...] = get_args(Session)

ENV_PREFIX = "FIRESALE_"
DEFAULT_UNIVERSE = "default universe (streams/universe.toml)"


class ConfigError(Exception):
    """Configuration is invalid; the message names the offending key."""


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaSecuritySettings(BaseSettings):
    """How clients authenticate to Kafka and encrypt the connection (``FIRESALE_KAFKA_*``).

    A settings class of its own so that :func:`streams.kafka_security.client_kwargs` can read
    just these keys from the environment where no full :class:`Settings` is at hand.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL (SASL_* need username/password)",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-512", description="SASL mechanism: SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (never printed)"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA bundle to verify the brokers (unset = system CAs)"
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS)"
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of the client certificate"
    )

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _check_readable(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        if not value.exists():
            raise ValueError(f"{value} does not exist")
        if not value.is_file() or not os.access(value, os.R_OK):
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _check_sasl(self) -> KafkaSecuritySettings:
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                f"{ENV_PREFIX}{k.upper()}"
                for k in ("kafka_sasl_username", "kafka_sasl_password")
                if not getattr(self, k)
            ]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} must be set when {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL"
                    f" is {self.kafka_security_protocol}"
                )
        return self


class Settings(KafkaSecuritySettings):
    """Runtime settings, read from ``FIRESALE_<NAME>`` environment variables (and ``.env``)."""

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port] of an existing Kafka cluster; unset = start the "
        "embedded local broker",
    )
    kafka_home: Path = Field(
        default=Path(".kafka"),
        description="directory of the embedded broker (config, data, logs, pid file)",
    )
    kafka_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9092, description="client port of the embedded broker (0 = any free port)"
    )
    universe: Path | None = Field(
        default=None, description="TOML universe file; unset = the packaged default universe"
    )
    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = Field(
        default="firesale",
        description="stream workers' consumer group (two pipelines on one cluster need two ids)",
    )
    bar_interval_s: Annotated[int, Field(ge=1, le=300)] = Field(
        default=60, description="bar grid in seconds (1..300)"
    )
    bar_grace_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=2.0, description="watermark grace: how late a tick may be and still count"
    )
    side_input_wait_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0,
        description="longest a bar waits for liquidation/funding/gap inputs to catch up",
    )
    consumer_session_timeout_s: Annotated[float, Field(ge=6, le=300)] = Field(
        default=30.0,
        description="how long a silent worker keeps its partitions before the group moves them",
    )
    bar_wait_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="longest the market stage waits for an asset whose bars stopped "
        "(its bar builder moving to another worker); keep above the session timeout",
    )
    checkpoint_interval_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0,
        description="how often a worker checkpoints each price partition's bar builder",
    )
    recovery_lookback_s: Annotated[int, Field(ge=0, le=90 * 86_400)] = Field(
        default=2 * 86_400,
        description="how far back a worker re-reads the market inputs to rebuild its state",
    )
    correlation_window_bars: Annotated[int, Field(ge=3, le=10_000)] = Field(
        default=120, description="rolling correlation window W in bars"
    )
    metrics_bind: str = Field(
        default="127.0.0.1", description="address the /metrics endpoint binds to"
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9464, description="port of the /metrics endpoint (0 = disabled)"
    )
    venues: str = Field(
        default="binance,bybit,okx",
        description="comma-separated venues the connectors stream (binance, bybit, okx)",
    )
    binance_ws_url: str | None = Field(
        default=None, description="Binance USD-M WebSocket base (default wss://fstream.binance.com)"
    )
    bybit_ws_url: str | None = Field(
        default=None, description="Bybit WebSocket base (default wss://stream.bybit.com)"
    )
    okx_ws_url: str | None = Field(
        default=None, description="OKX WebSocket base (default wss://ws.okx.com:8443)"
    )
    binance_rest_url: str | None = Field(
        default=None,
        description="Binance USD-M REST base for ccxt (default https://fapi.binance.com)",
    )
    bybit_rest_url: str | None = Field(
        default=None, description="Bybit REST base for ccxt (default https://api.bybit.com)"
    )
    okx_rest_url: str | None = Field(
        default=None, description="OKX REST base for ccxt (default https://www.okx.com)"
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "firesale",
        description="cache of Kafka jars and venue market metadata",
    )
    markets_max_age_s: Annotated[float, Field(ge=0)] = Field(
        default=86_400.0, description="refetch cached venue markets older than this"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level of firesale's own loggers"
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port (e.g. kafka-1:9092)")
        return value

    @field_validator("venues")
    @classmethod
    def _check_venues(cls, value: str) -> str:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in names if v not in ("binance", "bybit", "okx")]
        if unknown or not names:
            raise ValueError(
                f"unknown venue {unknown[0] if unknown else value!r}; use binance, bybit, okx"
            )
        return ",".join(names)

    @field_validator("binance_ws_url", "bybit_ws_url", "okx_ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError(f"{value!r} is not a ws:// or wss:// URL")
        return value or None

    @field_validator("binance_rest_url", "bybit_rest_url", "okx_rest_url")
    @classmethod
    def _check_rest_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value or None

    def rest_url(self, venue: str) -> str | None:
        """The REST base URL override for ``venue`` (None = production)."""
        url: str | None = getattr(self, f"{venue}_rest_url")
        return url

    @property
    def venue_list(self) -> tuple[str, ...]:
        """The configured venues, in order."""
        return tuple(self.venues.split(","))

    def ws_url(self, venue: str) -> str | None:
        """The WebSocket base URL override for ``venue`` (None = production)."""
        url: str | None = getattr(self, f"{venue}_ws_url")
        return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read :class:`Settings`, turning validation errors into one :class:`ConfigError`.

    ``env`` replaces the process environment (tests); ``None`` reads ``os.environ``.
    """
    try:
        if env is None:
            return Settings()
        values = {
            k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)
        }
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix=ENV_PREFIX)) from None


def _describe(exc: ValidationError, prefix: str) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"]
        if not err["loc"]:  # a check across keys: its message names them; the input holds secrets
            lines.append(msg)
            continue
        key = prefix + "_".join(str(p) for p in err["loc"]).upper()
        got = err.get("input")
        if "PASSWORD" in key:
            lines.append(f"{key}: {msg}")
        else:
            lines.append(f"{key}: {msg} (got {got!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


@dataclass(frozen=True, slots=True)
class Asset:
    """One watched asset: canonical name, class, session calendar and per-venue symbols."""

    name: str
    asset_class: AssetClass
    session: Session
    symbols: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class Universe:
    """The watched assets (order is the order of correlation matrices) and where they trade."""

    assets: tuple[Asset, ...]
    source: str = DEFAULT_UNIVERSE

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical asset names in order."""
        return tuple(a.name for a in self.assets)

    @property
    def classes(self) -> tuple[str, ...]:
        """Distinct asset classes present, sorted."""
        return tuple(sorted({a.asset_class for a in self.assets}))

    def asset(self, name: str) -> Asset:
        """The asset called ``name`` (KeyError with the known names otherwise)."""
        for a in self.assets:
            if a.name == name:
                return a
        raise KeyError(f"unknown asset {name!r}; the universe has {', '.join(self.names)}")

    def by_symbol(self, venue: str) -> dict[str, Asset]:
        """Map of the venue's own symbol to the asset it prices."""
        return {a.symbols[venue]: a for a in self.assets if venue in a.symbols}


def _fail(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}")


def parse_universe(doc: Mapping[str, Any], source: str) -> Universe:
    """Validate a parsed universe document. Every error names its TOML key."""
    unknown_top = set(doc) - {"assets"}
    if unknown_top:
        raise _fail(source, sorted(unknown_top)[0], "unknown top-level key (expected [assets.*])")
    raw_assets = doc.get("assets")
    if not isinstance(raw_assets, Mapping) or not raw_assets:
        raise _fail(source, "assets", "at least one [assets.<NAME>] table is required")
    assets: list[Asset] = []
    seen_symbols: dict[tuple[str, str], str] = {}
    for name, body in raw_assets.items():
        key = f"assets.{name}"
        if not name.isascii() or not name.replace("_", "").isalnum() or name != name.upper():
            raise _fail(source, key, "asset names are upper-case letters/digits, e.g. BTC, GOLD")
        if not isinstance(body, Mapping):
            raise _fail(source, key, "must be a table")
        extra = set(body) - {"class", "session", "symbols", "description"}
        if extra:
            raise _fail(source, f"{key}.{sorted(extra)[0]}", "unknown key")
        asset_class = body.get("class")
        if asset_class not in ASSET_CLASSES:
            raise _fail(
                source,
                f"{key}.class",
                f"unknown asset class {asset_class!r}; use one of {', '.join(ASSET_CLASSES)}",
            )
        session = body.get("session", "24/7")
        if session not in SESSIONS:
            raise _fail(
                source, f"{key}.session", f"unknown session {session!r}; use one of {SESSIONS}"
            )
        symbols = body.get("symbols", {})
        if not isinstance(symbols, Mapping) or not symbols:
            raise _fail(source, f"{key}.symbols", "map at least one venue to its symbol")
        for venue, symbol in symbols.items():
            skey = f"{key}.symbols.{venue}"
            if venue not in VENUES:
                raise _fail(source, skey, f"unknown venue; use one of {', '.join(VENUES)}")
            if not isinstance(symbol, str) or not symbol.strip():
                raise _fail(source, skey, "symbol must be a non-empty string")
            other = seen_symbols.get((venue, symbol))
            if other is not None:
                raise _fail(source, skey, f"duplicate symbol {symbol!r}: already used by {other}")
            seen_symbols[(venue, symbol)] = name
        assets.append(
            Asset(
                name=name,
                asset_class=asset_class,
                session=session,
                symbols=dict(symbols),
                description=str(body.get("description", "")),
            )
        )
    return Universe(assets=tuple(assets), source=source)


def load_universe(path: Path | None = None) -> Universe:
    """Read and validate a universe TOML file (``None`` = the packaged default universe)."""
    if path is None:
        text = resources.files("streams").joinpath("universe.toml").read_text()
        source = DEFAULT_UNIVERSE
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"FIRESALE_UNIVERSE: cannot read {path}: {exc.strerror}") from None
        source = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_universe(doc, source)
