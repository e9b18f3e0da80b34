"""``firesale tail TOPIC``: print the records of any registered topic, one line each.

Each record is decoded with the event type of its topic (:mod:`streams.events`): a line holds
the event time (ISO-8601 UTC, millisecond precision), the Kafka key and a compact rendering of
the fields (``name=value``, null fields left out; for a signal its ``type``, ``subject`` and,
when it is not the key, ``id``, then its ``data``). A record that is not a valid event of its
topic (not JSON, a missing field, a tombstone...) is shown as such, with the reason, and
tailing goes on. ``--json`` prints each record's JSON on one line instead (for ``jq``) and notes
the undecodable ones on stderr.

The rendering functions are pure (:func:`render_record`, :func:`json_line`); :func:`tail` is
the consumer loop.

Examples
--------
>>> from streams.topics import topic
>>> rec = RawRecord(0, 7, 1_762_250_400_123, b"bybit:BTCUSDT",
...                 b'{"venue":"bybit","symbol":"BTCUSDT","asset":"BTC","asset_class":"crypto",'
...                 b'"ts_event_ns":1762250400000000000,"ts_recv_ns":1762250400050000000,'
...                 b'"price":101234.5,"kind":"trade"}')
>>> render_record(topic("ticks.price.v1"), rec).plain
'2025-11-04T10:00:00.000Z  bybit:BTCUSDT  venue=bybit symbol=BTCUSDT asset=BTC \
asset_class=crypto ts_recv_ns=2025-11-04T10:00:00.050Z price=101234.5 kind=trade'
>>> print(render_record(topic("ticks.price.v1"), RawRecord(0, 8, 1_762_250_400_123, None,
...                                                         b"{oops")).plain)
2025-11-04T10:00:00.123Z  -  undecodable (partition 0, offset 8): invalid PriceTick: \
(payload): Invalid JSON: key must be a string at line 1 column 2 — raw: b'{oops'
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from streams.events import EVENT_TYPES, DecodeError, SignalEvent, decode
from streams.topics import TopicSpec

__all__ = [
    "LineConsole",
    "RawRecord",
    "TailError",
    "event_type_of",
    "format_time_ns",
    "json_line",
    "render_record",
    "render_value",
    "tail",
]

NS_PER_MS = 1_000_000
PREVIEW_CHARS = 160
_TIME_FIELDS = ("ts_event_ns", "bar_start_ns", "ts_recv_ns")


class LineConsole(Console):
    """A rich console whose closed pipe (``firesale tail ... | head``) raises BrokenPipeError,
    for the caller to end quietly (rich's default exits with status 1)."""

    def on_broken_pipe(self) -> None:
        """Raise instead of exiting."""
        self.quiet = True
        raise BrokenPipeError


class TailError(RuntimeError):
    """Tailing cannot start: Kafka unreachable, topic missing. The message says what to do."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """What ``tail`` needs of a Kafka record (aiokafka's ``ConsumerRecord`` fields)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def event_type_of(spec: TopicSpec) -> type[Any]:
    """The :mod:`streams.events` type of a topic's records (``signal.cosell`` → SignalEvent).

    Examples
    --------
    >>> from streams.topics import topic
    >>> event_type_of(topic("signals.cosell.v1")).__name__
    'SignalEvent'
    """
    return EVENT_TYPES[spec.schema.partition(".")[0]]


def format_time_ns(ts_ns: int) -> str:
    """ISO-8601 UTC with milliseconds (fixed width, so that lines align).

    Examples
    --------
    >>> format_time_ns(1_762_250_400_123_456_789)
    '2025-11-04T10:00:00.123Z'
    """
    sec, rest = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{rest // NS_PER_MS:03d}Z"
    )


def render_value(name: str, value: object) -> str:
    """Compact text of one field: ``*_ns`` integers as times, floats to 8 significant digits.

    Examples
    --------
    >>> render_value("corr", {"crypto-equity": 0.912345678, "metal-metal": None})
    '{crypto-equity:0.91234568,metal-metal:null}'
    >>> render_value("start_ns", 0), render_value("selling", ["BTC", "ETH"])
    ('1970-01-01T00:00:00.000Z', '[BTC,ETH]')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and name.endswith("_ns") and value >= 0:
        return format_time_ns(value)
    if isinstance(value, float):
        return f"{value:.8g}" if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{render_value(str(k), v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(render_value("", v) for v in value) + "]"
    return str(value)


def render_record(spec: TopicSpec, record: RawRecord) -> Text:
    """One line: time, key, then the event's fields (or why it could not be decoded)."""
    key = _text(record.key) if record.key is not None else "-"
    line = Text(no_wrap=True)
    if record.value is None:
        return _undecodable(line, record, key, "tombstone (null value)")
    event_type = event_type_of(spec)
    try:
        event = decode(event_type, record.value)
    except DecodeError as exc:
        reason = str(exc)
        if len(reason) > PREVIEW_CHARS:
            reason = reason[:PREVIEW_CHARS] + "…"
        return _undecodable(line, record, key, f"{reason} — raw: {_preview(record.value)}")
    fields: dict[str, object] = orjson.loads(orjson.dumps(event))
    time_field = next((f for f in _TIME_FIELDS if f in fields), None)
    ts_ns = fields.pop(time_field) if time_field is not None else None
    line.append(_time(ts_ns, record), style="dim")
    line.append("  ")
    line.append(key, style="cyan")
    line.append("  ")
    if isinstance(event, SignalEvent):
        head = Text()
        head.append(event.type, style="bold")
        head.append(f" {event.subject}")
        if event.id != key:
            head.append(f" id={event.id}")
        line.append_text(head)
        fields = dict(event.data)
        if fields:
            line.append(" ")
    line.append(" ".join(f"{k}={render_value(k, v)}" for k, v in fields.items() if v is not None))
    return line


def json_line(spec: TopicSpec, record: RawRecord) -> tuple[str | None, str | None]:
    """``(stdout line, stderr note)`` for ``--json``: the record's JSON on one line, and a note
    when it is not a valid event of the topic (then the line is None if it is not JSON at all).

    Examples
    --------
    >>> from streams.topics import topic
    >>> json_line(topic("bars.v1"), RawRecord(0, 3, 0, b"BTC", b'{"asset": "BTC"}'))[1][:45]
    'partition 0, offset 3: invalid BarEvent: asse'
    >>> json_line(topic("bars.v1"), RawRecord(0, 4, 0, b"BTC", b"\\xff"))
    (None, "partition 0, offset 4: not JSON: b'\\\\xff'")
    """
    where = f"partition {record.partition}, offset {record.offset}"
    if record.value is None:
        return None, f"{where}: tombstone (null value)"
    try:
        parsed = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None, f"{where}: not JSON: {_preview(record.value)}"
    line = orjson.dumps(parsed).decode()
    try:
        decode(event_type_of(spec), record.value)
    except DecodeError as exc:
        return line, f"{where}: {exc}"
    return line, None


async def tail(
    bootstrap: str,
    spec: TopicSpec,
    *,
    from_beginning: bool,
    max_records: int | None,
    as_json: bool,
    emit: Callable[[Text | str], None],
    note: Callable[[str], None],
) -> int:
    """Consume ``spec``'s topic (every partition, no consumer group, nothing committed) and
    hand each record to ``emit`` (a rendered line) or ``note`` (stderr); return the count.

    Starts at the beginning or at the end (new records only) and runs until ``max_records``
    records were shown, or forever (cancel it: Ctrl-C).

    Raises
    ------
    TailError
        Kafka does not answer at ``bootstrap``, or the topic does not exist there.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaConnectionError

    from streams.kafka_security import (
        client_kwargs,
        describe_failure,
        is_auth_failure,
        tls_refusal,
    )

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        request_timeout_ms=15_000,
        **client_kwargs(),
    )
    library_log = logging.getLogger("aiokafka")
    # the error below says it all; a sink handler rather than `disabled`, so that
    # kafka_security still sees a refused login
    sink, propagate = logging.NullHandler(), library_log.propagate
    library_log.addHandler(sink)
    library_log.propagate = False
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        if is_auth_failure(exc) or tls_refusal(bootstrap) is not None:
            raise TailError(f"Kafka at {bootstrap}: {describe_failure(exc, bootstrap)}") from None
        raise TailError(
            f"cannot reach Kafka at {bootstrap} ({exc}): check --bootstrap / "
            "FIRESALE_KAFKA_BOOTSTRAP, or start the embedded broker with `firesale kafka start`"
        ) from None
    finally:
        library_log.removeHandler(sink)
        library_log.propagate = propagate
    shown = 0
    try:
        if spec.name not in await consumer.topics():
            raise TailError(
                f"topic {spec.name} does not exist on {bootstrap}: create it with "
                f"`firesale topics create --bootstrap {bootstrap}`"
            )
        consumer.subscribe([spec.name])  # no group: every partition is assigned to us
        deadline = asyncio.get_running_loop().time() + 15.0
        while not consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TailError(f"topic {spec.name} on {bootstrap} reports no partitions")
            await asyncio.sleep(0.02)
        if from_beginning:  # position fixed now: "tailing" means records from here on show
            await consumer.seek_to_beginning()
        else:
            await consumer.seek_to_end()
        start = "from the beginning" if from_beginning else "new records only"
        note(f"tailing {spec.name} on {bootstrap} ({start}); Ctrl-C to stop")
        while max_records is None or shown < max_records:
            left = None if max_records is None else max_records - shown
            batch = await consumer.getmany(timeout_ms=500, max_records=left)
            for tp in sorted(batch, key=lambda t: t.partition):
                for rec in batch[tp]:
                    if max_records is not None and shown >= max_records:
                        break
                    raw = RawRecord(rec.partition, rec.offset, rec.timestamp, rec.key, rec.value)
                    if as_json:
                        line, problem = json_line(spec, raw)
                        if problem is not None:
                            note(problem)
                        if line is not None:
                            emit(line)
                    else:
                        emit(render_record(spec, raw))
                    shown += 1
    finally:
        await consumer.stop()
    return shown


# ---------------------------------------------------------------------- internals


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _preview(raw: bytes) -> str:
    text = repr(raw[: PREVIEW_CHARS + 1])
    return text if len(raw) <= PREVIEW_CHARS else text + "…"


def _time(ts_ns: object, record: RawRecord) -> str:
    if isinstance(ts_ns, int) and not isinstance(ts_ns, bool) and ts_ns >= 0:
        return format_time_ns(ts_ns)
    return format_time_ns(max(record.timestamp_ms, 0) * NS_PER_MS)


def _undecodable(line: Text, record: RawRecord, key: str, reason: str) -> Text:
    line.append(_time(None, record), style="dim")
    line.append("  ")
    line.append(key, style="cyan")
    line.append("  ")
    line.append(
        f"undecodable (partition {record.partition}, offset {record.offset}): {reason}",
        style="red",
    )
    return line
