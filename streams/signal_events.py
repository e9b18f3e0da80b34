"""Detector outputs as signal events: the envelope, the topic and the Kafka key of each.

Pure functions (no Kafka, no clock: ``ts_emit_ns`` is passed in) that turn what
:class:`signals.detector.MarketDetector` returns into :class:`streams.events.SignalEvent`
envelopes for the public ``signals.*.v1`` topics. The ``data`` of each topic is described by
``streams/schemas/signal.<topic>.v1.json`` (``tests/streams/test_signal_events.py`` validates
real detector outputs against them).

==========================  ===============================  ==============  =================
topic                       types                            subject         Kafka key
==========================  ===============================  ==============  =================
``signals.correlation.v1``  ``correlation.bar``              ``market``      subject
``signals.cosell.v1``       ``cosell.start|update|end``      ``market``      id
``signals.liquidation.v1``  ``liquidation.cascade.start|``   ``asset:side``  id
                            ``peak|end``
``signals.funding.v1``      ``funding.flip``,                ``asset``       id
                            ``funding.extreme.start|end``
==========================  ===============================  ==============  =================

Rules of the envelope: ``id`` and ``type`` come from the detector (deterministic, so a replay
produces the same ids); ``ts_event_ns`` is the event time the detector decided on (the bar's
start for per-bar records and co-selling events, the detector time ``ts_ns`` for cascades and
funding); ``data`` is the detector's ``to_dict()`` without the fields lifted into the envelope
(``id``, ``type``, ``ts_ns``), NaN as ``null``.

Keys: ``signals.correlation.v1`` is a *latest-state* topic (cleanup ``compact``): each record
supersedes the previous one, so it is keyed by subject and compaction keeps the newest figures
per subject. The event topics are histories (every start/peak/end matters): keyed by the
event ``id``, so that any compaction only ever removes a duplicate of the same event.

Examples
--------
>>> from signals.funding import FundingStressDetector
>>> det = FundingStressDetector()
>>> [flip] = det.update(0, "BTC", "okx", 0.1) + det.update(5, "BTC", "okx", -0.05)
>>> ev = funding_event(flip, ts_emit_ns=7)
>>> ev.id, ev.subject, ev.ts_event_ns, ev.data["direction"]
('funding.flip:BTC:5', 'BTC', 5, 'to_negative')
>>> topic_for(ev), key_for(ev)
('signals.funding.v1', b'funding.flip:BTC:5')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from signals.cosell import CoSellEvent
from signals.detector import BarSignals
from signals.errors import InvalidInputError
from signals.funding import FundingEvent
from signals.liquidations import CascadeEvent
from streams.events import SignalEvent

__all__ = [
    "LATEST_STATE_TOPICS",
    "MARKET",
    "SCHEMA_FOR_TOPIC",
    "TOPIC_FOR_TYPE",
    "bar_signal_events",
    "cascade_event",
    "correlation_record",
    "cosell_event",
    "funding_event",
    "key_for",
    "signal_event",
    "topic_for",
]

MARKET: Final = "market"
"""Subject of the market-wide signals (per-bar correlation record, co-selling)."""

TOPIC_FOR_TYPE: Final[Mapping[str, str]] = {
    "correlation": "signals.correlation.v1",
    "cosell": "signals.cosell.v1",
    "liquidation": "signals.liquidation.v1",
    "funding": "signals.funding.v1",
}
"""Signal type prefix (the part of ``type`` before the first dot) → topic."""

SCHEMA_FOR_TOPIC: Final[Mapping[str, str]] = {
    topic: f"signal.{prefix}" for prefix, topic in TOPIC_FOR_TYPE.items()
}
"""Topic → committed schema name (``streams.events.committed_schema(name)``)."""

LATEST_STATE_TOPICS: Final = frozenset({"signals.correlation.v1"})
"""Topics whose records supersede each other per subject: keyed by subject, compacted."""

_LIFTED = ("id", "type", "ts_ns")


def correlation_record(bar: BarSignals, ts_emit_ns: int) -> SignalEvent:
    """The per-bar ``correlation.bar`` record of :meth:`MarketDetector.on_bar`.

    ``id`` = ``correlation.bar:<bar_start_ns>``, subject ``market``, ``ts_event_ns`` = the
    bar's start; ``data`` = :meth:`BarSignals.to_dict` (every figure of the bar, the
    co-selling score and its components).

    Examples
    --------
    >>> import numpy as np
    >>> from signals.detector import MarketDetector
    >>> det = MarketDetector(["BTC", "GOLD"], ["crypto", "metal"], 60)
    >>> ev = correlation_record(det.on_bar(120_000_000_000, np.array([1e5, 4e3])), 5)
    >>> ev.id, ev.type, ev.subject, ev.ts_event_ns, ev.data["returns"]
    ('correlation.bar:120000000000', 'correlation.bar', 'market', 120000000000, \
{'BTC': None, 'GOLD': None})
    >>> key_for(ev)
    b'market'
    """
    return _envelope(
        f"correlation.bar:{bar.bar_start_ns}", "correlation.bar", bar.bar_start_ns,
        ts_emit_ns, MARKET, bar.to_dict(),
    )  # fmt: skip


def cosell_event(event: CoSellEvent, ts_emit_ns: int) -> SignalEvent:
    """A ``cosell.start`` / ``cosell.update`` / ``cosell.end`` event, subject ``market``.

    ``id`` is the detector's (``cosell.start:<episode_start_ns>``,
    ``cosell.update:<episode_start_ns>:<bar_start_ns>``, ``cosell.end:<episode_start_ns>``);
    ``ts_event_ns`` = the bar's start.

    Examples
    --------
    >>> nan = float("nan")
    >>> e = CoSellEvent("cosell.start:0", "cosell.start", 0, 0, 0.7, 0.7, 1.0, 1.0, nan, nan,
    ...                 (), ("crypto",), 0.9, nan, 0.95, 1.5, None, None, None)
    >>> ev = cosell_event(e, ts_emit_ns=3)
    >>> ev.id, ev.subject, ev.data["score"], ev.data["corr"], "type" in ev.data
    ('cosell.start:0', 'market', 0.7, None, False)
    """
    return _envelope(event.id, event.type, event.bar_start_ns, ts_emit_ns, MARKET, event.to_dict())


def cascade_event(event: CascadeEvent, ts_emit_ns: int) -> SignalEvent:
    """A ``liquidation.cascade.start|peak|end`` event, subject ``<asset>:<side>``.

    ``id`` is the detector's (``liquidation.cascade.<kind>:<asset>:<side>:<start_ns>``, peaks
    add ``:<peak_ns>``); ``ts_event_ns`` = the detector time the event was decided.

    Examples
    --------
    >>> from signals.liquidations import LiquidationCascadeDetector, LiquidationParams
    >>> det = LiquidationCascadeDetector(LiquidationParams(min_baseline_windows=1))
    >>> _ = det.advance(0)
    >>> [start] = det.update(300_000_000_000, "ETH", "long", 1e6, complete=False)
    >>> ev = cascade_event(start, ts_emit_ns=300_000_000_001)
    >>> ev.id, ev.subject, ev.data["window_notional_usd"], ev.data["completeness"]
    ('liquidation.cascade.start:ETH:long:300000000000', 'ETH:long', 1000000.0, 'sampled')
    """
    subject = f"{event.asset}:{event.side}"
    return _envelope(event.id, event.type, event.ts_ns, ts_emit_ns, subject, event.to_dict())


def funding_event(event: FundingEvent, ts_emit_ns: int) -> SignalEvent:
    """A ``funding.flip`` / ``funding.extreme.start`` / ``funding.extreme.end`` event.

    Subject = the asset; ``id`` is the detector's (``funding.flip:<asset>:<ts_ns>``,
    ``funding.extreme.start|end:<asset>:<start_ns>``); ``ts_event_ns`` = the detector time.

    Examples
    --------
    >>> from signals.funding import FundingStressDetector
    >>> [ev] = FundingStressDetector().update(9, "SOL", "bybit", -0.2)
    >>> env = funding_event(ev, ts_emit_ns=10)
    >>> env.type, env.subject, env.data["reason"], env.data["z"], env.data["venues"]
    ('funding.extreme.start', 'SOL', 'negative', None, ['bybit'])
    """
    return _envelope(event.id, event.type, event.ts_ns, ts_emit_ns, event.asset, event.to_dict())


def signal_event(event: CoSellEvent | CascadeEvent | FundingEvent, ts_emit_ns: int) -> SignalEvent:
    """The envelope of any detector event (dispatches on its class).

    Examples
    --------
    >>> from signals.funding import FundingStressDetector
    >>> [ev] = FundingStressDetector().update(9, "SOL", "bybit", -0.2)
    >>> signal_event(ev, 10) == funding_event(ev, 10)
    True
    """
    if isinstance(event, CoSellEvent):
        return cosell_event(event, ts_emit_ns)
    if isinstance(event, CascadeEvent):
        return cascade_event(event, ts_emit_ns)
    if isinstance(event, FundingEvent):
        return funding_event(event, ts_emit_ns)
    raise InvalidInputError(
        f"{type(event).__name__} is not a detector event: give a CoSellEvent, CascadeEvent "
        "or FundingEvent"
    )


def bar_signal_events(bar: BarSignals, ts_emit_ns: int) -> list[SignalEvent]:
    """Everything one :meth:`MarketDetector.on_bar` result publishes, in emission order.

    The bar's events (liquidation and funding events decided at the bar's end, then the
    co-selling events, as in ``bar.events``) and last the ``correlation.bar`` record. Events
    returned by ``on_liquidation`` / ``on_funding`` are not in it: publish them with
    :func:`signal_event` as they come.

    Examples
    --------
    >>> import numpy as np
    >>> from signals.detector import MarketDetector
    >>> det = MarketDetector(["BTC"], ["crypto"], 60)
    >>> det.on_funding(0, "BTC", "okx", -0.2)[0].type  # publish these with signal_event()
    'funding.extreme.start'
    >>> det.on_funding(300_000_000_000, "BTC", "bybit", 0.0)
    []
    >>> out = det.on_bar(900_000_000_000, [1.0])  # okx goes stale by the bar's end (960 s)
    >>> [(e.id, key_for(e)) for e in bar_signal_events(out, ts_emit_ns=961_000_000_000)]
    [('funding.extreme.end:BTC:0', b'funding.extreme.end:BTC:0'), \
('correlation.bar:900000000000', b'market')]
    """
    return [*(signal_event(e, ts_emit_ns) for e in bar.events), correlation_record(bar, ts_emit_ns)]


def topic_for(event: SignalEvent) -> str:
    """The topic of a signal event, from the prefix of its ``type``.

    Examples
    --------
    >>> topic_for(SignalEvent(id="x", type="cosell.end", ts_event_ns=0, ts_emit_ns=0,
    ...                       subject="market", data={}))
    'signals.cosell.v1'
    """
    prefix = event.type.partition(".")[0]
    try:
        return TOPIC_FOR_TYPE[prefix]
    except KeyError:
        raise InvalidInputError(
            f"signal type {event.type!r} has no topic: its prefix must be one of "
            f"{', '.join(TOPIC_FOR_TYPE)}"
        ) from None


def key_for(event: SignalEvent) -> bytes:
    """The Kafka key (UTF-8): the subject on latest-state topics, the event id otherwise.

    On ``signals.correlation.v1`` (compacted) the key is the subject, so compaction keeps the
    newest record per subject and a new consumer reading from the beginning finds the current
    figures. On the event topics the key is the ``id``: every event of the history is its own
    key, so compaction (if applied) can only drop a duplicate of the same event, and
    consumers deduplicate by it.

    Examples
    --------
    >>> ev = SignalEvent(id="cosell.end:0", type="cosell.end", ts_event_ns=0, ts_emit_ns=0,
    ...                  subject="market", data={})
    >>> key_for(ev)
    b'cosell.end:0'
    """
    if topic_for(event) in LATEST_STATE_TOPICS:
        return event.subject.encode()
    return event.id.encode()


def _envelope(
    event_id: str,
    event_type: str,
    ts_event_ns: int,
    ts_emit_ns: int,
    subject: str,
    fields: Mapping[str, object],
) -> SignalEvent:
    for name, value in (("ts_event_ns", ts_event_ns), ("ts_emit_ns", ts_emit_ns)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InvalidInputError(f"{name} is {value!r}: it must be an int >= 0 (ns since epoch)")
    data = {k: _plain(v) for k, v in fields.items() if k not in _LIFTED}
    return SignalEvent(
        id=event_id,
        type=event_type,
        ts_event_ns=int(ts_event_ns),
        ts_emit_ns=int(ts_emit_ns),
        subject=subject,
        data=data,
    )


def _plain(value: object) -> Any:
    """JSON-native copy: numpy scalars → Python, non-finite floats → None, tuples → lists."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
