"""What every venue package provides, and the shared types its pure parser returns.

A venue package (``connectors/<venue>/``) has:

- ``schemas.py``: the wire fields as the exchange names them, each with its meaning and unit.
- ``parse.py``: a :class:`VenueParser` — raw frame in, canonical events out. Pure: no socket,
  no clock, no logger; the receive time is passed in. It may hold state where the protocol
  needs it (Bybit ticker snapshots merged with deltas).
- ``client.py``: the :class:`ConnectionSpec` list for a universe (URLs, subscribe messages,
  keepalive rule); the shared supervisor (``connectors/supervisor.py``) does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from streams.events import Funding, Liquidation, PriceTick

TickEvent = PriceTick | Liquidation | Funding

RejectReason = Literal[
    "malformed_json",  # not JSON / not UTF-8 / not the expected top-level shape
    "missing_field",  # a required field is absent or empty
    "bad_type",  # a field has the wrong type or does not parse as a number/int
    "absurd_value",  # NaN/inf, non-positive price, zero or negative quantity, bad timestamp
    "unknown_message",  # valid JSON, but no known channel/event type
    "venue_error",  # the venue sent an error message (e.g. OKX event=error)
    "oversize",  # the frame exceeds the size limit
]
"""Bounded set of dead-letter reasons (also a metric label)."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """One venue instrument the universe watches, with the metadata its parser needs.

    ``contract_size`` converts the venue's size unit to base units (OKX ``ctVal``: 0.01 BTC per
    ``BTC-USDT-SWAP`` contract; 1.0 where sizes are already in base units, as on Binance and
    Bybit linear). ``funding_interval_hours`` is the settlement cycle when known.
    """

    venue: str
    symbol: str
    asset: str
    asset_class: Literal["crypto", "equity", "metal", "fx", "rates"]
    contract_size: float = 1.0
    funding_interval_hours: float | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """A frame (or one item of a batch) that could not become an event."""

    reason: RejectReason
    detail: str
    channel: str = "unknown"


@dataclass(slots=True)
class ParseResult:
    """What one raw frame turned into.

    ``control`` is set for protocol messages that carry no data (``ack``, ``pong``, ``error``);
    ``filtered`` counts well-formed items about instruments outside the universe (e.g. the
    all-symbol Binance ``!forceOrder@arr`` stream): not an error, but counted.
    """

    events: list[TickEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    control: Literal["ack", "pong", "error", "info"] | None = None
    filtered: int = 0


class VenueParser(Protocol):
    """A venue's pure frame parser."""

    venue: str

    def parse(self, raw: str | bytes, ts_recv_ns: int) -> ParseResult:
        """Turn one raw WebSocket frame into events and rejects. Never raises."""
        ...


KeepaliveKind = Literal["server_ping", "text_ping", "json_ping"]


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A venue's keepalive rule.

    - ``server_ping``: the server sends protocol ping frames; ``websockets`` answers them
      (Binance: every 3 min, pong within 10 min).
    - ``text_ping``: the client sends ``payload`` (e.g. ``ping``) when idle for
      ``interval_s`` and expects the text ``pong`` (OKX: < 30 s).
    - ``json_ping``: the client sends the JSON ``payload`` every ``interval_s``
      (Bybit: ``{"op":"ping"}`` every 20 s).
    """

    kind: KeepaliveKind
    interval_s: float
    payload: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """One WebSocket connection a venue needs, and how to keep it healthy.

    ``channels`` name what flows on it (for gap markers and metrics). ``stale_after_s``: no
    data for this long means the connection is dead even if the socket is open.
    ``max_lifetime_s``: the venue closes connections after this long (Binance: 24 h); the
    supervisor opens the replacement before then and switches over without a gap.
    """

    name: str
    venue: str
    url: str
    channels: tuple[str, ...]
    subscribe: tuple[str, ...]
    keepalive: Keepalive
    parser_factory: Callable[[], VenueParser]
    stale_after_s: float = 60.0
    max_lifetime_s: float | None = None
    subscribe_ack_expected: int = 0


class MarketError(ValueError):
    """A universe symbol has no usable market on a venue; the message names it and what to do.

    Each venue's ``markets`` module raises a subclass of this one error.
    """


def instruments_by_symbol(instruments: Sequence[Instrument]) -> Mapping[str, Instrument]:
    """Index instruments by the venue's own symbol."""
    return {i.symbol: i for i in instruments}
