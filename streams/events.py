"""Canonical events: the wire format of every firesale topic.

Frozen, typed dataclasses; units in field names; JSON via orjson. Each topic carries one schema
version (``ticks.price.v1`` carries :class:`PriceTick`...). The committed JSON Schemas in
``streams/schemas/`` are the public contract; ``tests/streams/test_events.py`` proves that every
encoder's output validates against them.

Timestamps are integers of nanoseconds since the Unix epoch (UTC): ``ts_event_ns`` is the
exchange's time, ``ts_recv_ns`` ours. Every float must be finite: NaN and infinities are not
JSON and are refused when decoding.

>>> tick = PriceTick(venue="binance", symbol="BTCUSDT", asset="BTC", asset_class="crypto",
...                  ts_event_ns=1_760_130_000_000_000_000, ts_recv_ns=1_760_130_000_050_000_000,
...                  price=112_000.5, kind="mark")
>>> decode(PriceTick, encode(tick)) == tick
True
>>> decode(PriceTick, b'{"venue": "binance"}')
Traceback (most recent call last):
...
streams.events.DecodeError: invalid PriceTick: symbol: Field required; ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

AssetClassName = Literal["crypto", "equity", "metal", "fx", "rates"]
Name = Annotated[str, Field(min_length=1, max_length=64)]
TsNs = Annotated[int, Field(ge=0, description="nanoseconds since the Unix epoch, UTC")]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

_STRICT = ConfigDict(strict=True, extra="forbid")


class DecodeError(ValueError):
    """A payload is not a valid event of the expected type; the message says which field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTick:
    """A price observation (topic ``ticks.price.v1``)."""

    __pydantic_config__ = _STRICT

    venue: Name
    symbol: Name
    asset: Name
    asset_class: AssetClassName
    ts_event_ns: TsNs
    ts_recv_ns: TsNs
    price: PositiveFloat
    kind: Literal["trade", "mark", "index", "mid"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Liquidation:
    """A forced liquidation (topic ``ticks.liquidation.v1``).

    ``liquidated_side`` is the *position* that was closed, never the exchange's order side.
    ``completeness`` is ``sampled`` for venues that push a subset (Binance: at most one per
    symbol per second), so sums over sampled events are lower bounds.
    """

    __pydantic_config__ = _STRICT

    venue: Name
    symbol: Name
    asset: Name
    asset_class: AssetClassName
    ts_event_ns: TsNs
    ts_recv_ns: TsNs
    liquidated_side: Literal["long", "short"]
    price: PositiveFloat
    qty_base: PositiveFloat
    notional_usd: PositiveFloat
    completeness: Literal["complete", "sampled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Funding:
    """A perpetual funding-rate observation (topic ``ticks.funding.v1``).

    ``rate`` is per funding interval (0.0001 = 0.01 %); ``rate_annualized`` =
    ``rate * 24 / interval_hours * 365``.
    """

    __pydantic_config__ = _STRICT

    venue: Name
    symbol: Name
    asset: Name
    asset_class: AssetClassName
    ts_event_ns: TsNs
    ts_recv_ns: TsNs
    rate: FiniteFloat
    interval_hours: Annotated[float, Field(gt=0, le=24, allow_inf_nan=False)]
    rate_annualized: FiniteFloat
    next_funding_ts_ns: TsNs
    mark_price: PositiveFloat | None = None
    open_interest_usd: NonNegFloat | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BarEvent:
    """One asset's bar on the event-time grid (topic ``bars.v1``).

    ``close`` is the last price at or before the bar's end (previous-tick sampling); ``stale``
    means no tick arrived in the bar and the close is forward-filled.
    """

    __pydantic_config__ = _STRICT

    asset: Name
    asset_class: AssetClassName
    bar_start_ns: TsNs
    interval_s: Annotated[int, Field(ge=1, le=86_400)]
    close: PositiveFloat
    n_ticks: Annotated[int, Field(ge=0)]
    stale: bool
    #: Kafka timestamp (ns) of the tick whose arrival closed this bar; None when the idle
    #: timeout closed it. The market stage measures tick-to-signal latency from it.
    tick_produced_ns: TsNs | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalEvent:
    """A detector output (topics ``signals.*.v1``).

    ``id`` is deterministic (signal type + asset/pair + bar time): processing is at-least-once,
    so consumers drop duplicates by ``id``. ``data`` holds the signal's figures and evidence.
    """

    __pydantic_config__ = _STRICT

    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Annotated[str, Field(pattern=r"^[a-z]+(\.[a-z_]+)+$")]
    ts_event_ns: TsNs
    ts_emit_ns: TsNs
    subject: Annotated[str, Field(min_length=1, max_length=128)]
    data: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A frame that could not become an event (topic ``ticks.deadletter.v1``).

    Nothing is dropped silently: the raw frame (truncated to 64 KiB) travels with the reason.
    """

    __pydantic_config__ = _STRICT

    venue: Name
    channel: Annotated[str, Field(min_length=1, max_length=128)]
    ts_recv_ns: TsNs
    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    raw: Annotated[str, Field(max_length=65_536)]


@dataclass(frozen=True, slots=True, kw_only=True)
class GapMarker:
    """Data of a venue channel may be missing between ``from_ns`` and ``to_ns`` (``ticks.gap.v1``).

    Published by a connector after a disconnect, a stale feed or a restart: consumers must not
    read the interval as "nothing happened" (no zero returns across it; liquidation sums over
    it are lower bounds). ``from_ns`` is the receive time of the last frame before the gap,
    ``to_ns`` that of the first frame after it.
    """

    __pydantic_config__ = _STRICT

    venue: Name
    channel: Annotated[str, Field(min_length=1, max_length=128)]
    from_ns: TsNs
    to_ns: TsNs
    reason: Literal["disconnect", "stale", "restart", "lifetime"]
    ts_recv_ns: TsNs


Event = PriceTick | Liquidation | Funding | BarEvent | SignalEvent | DeadLetter | GapMarker
E = TypeVar("E", PriceTick, Liquidation, Funding, BarEvent, SignalEvent, DeadLetter, GapMarker)

SCHEMA_NAMES: dict[type[Any], str] = {
    PriceTick: "price",
    Liquidation: "liquidation",
    Funding: "funding",
    BarEvent: "bar",
    SignalEvent: "signal",
    DeadLetter: "deadletter",
    GapMarker: "gap",
}
EVENT_TYPES: dict[str, type[Any]] = {v: k for k, v in SCHEMA_NAMES.items()}
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {t: TypeAdapter(t) for t in SCHEMA_NAMES}


def encode(event: Event) -> bytes:
    """Serialize an event to compact JSON bytes (orjson; dataclasses natively)."""
    return orjson.dumps(event)


def decode(event_type: type[E], payload: bytes | str) -> E:
    """Parse and validate ``payload`` as ``event_type``.

    Raises
    ------
    DecodeError
        Not JSON, a missing or unknown field, a wrong type, a NaN, a non-positive price...
        The message names every offending field.
    """
    try:
        result: E = _ADAPTERS[event_type].validate_json(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(payload)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DecodeError(f"invalid {event_type.__name__}: {problems}") from None
    return result


def json_schema(event_type: type[Any]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event type, as generated from its annotations."""
    schema: dict[str, Any] = _ADAPTERS[event_type].json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://firesale.dev/schemas/{SCHEMA_NAMES[event_type]}.v1.json"
    return schema


def committed_schema(name: str) -> dict[str, Any]:
    """The JSON Schema committed in ``streams/schemas/<name>.v1.json``."""
    text = resources.files("streams").joinpath("schemas").joinpath(f"{name}.v1.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded
