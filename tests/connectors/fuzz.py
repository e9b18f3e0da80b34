"""Fuzzing every venue's live parse path: hostile frames in, events or dead letters out.

Each venue's parser is built the way ``firesale connect`` and ``replay`` build it
(``specs_for(...)`` → ``spec.parser_factory()``), and each result goes through a real
:class:`~connectors.runner.FrameRouter` into an in-memory sink. :meth:`Harness.feed` holds the
contract for one frame:

- ``parse`` never raises, and its safety net (the ``except Exception`` that turns a parser bug
  into a reject) never fires: either counts as an unhandled exception;
- every event survives the topic codec (``decode(encode(e)) == e``: finite prices > 0, times
  ≥ 0) and is plausible: an instrument of the universe, exchange time 2010..2100, notional =
  qty × price, funding annualised from its own rate and interval;
- every reject has a known reason and a non-empty detail, and the router publishes exactly one
  :class:`~streams.events.DeadLetter` on ``ticks.deadletter.v1`` for it, carrying the reason;
- no silent drop: a frame that gives neither events nor dead letters must be a control frame
  (ack, pong, info), about instruments outside the universe (``filtered``) or a Bybit ticker
  update of fields firesale does not read (:func:`ignored_why`).

Frames come from :class:`FrameGenerator` (a seeded ``random.Random``: fast, for the 100k run)
or from the hypothesis strategies below (shrinkable, for ``make test``). Both start from the
recorded frames in ``tests/fixtures/exchanges`` and delete fields, swap types, insert numeric
edge values as JSON literals (NaN, Infinity, -0, 1e308, 30-digit integers), garbage strings,
truncate, flip bytes, insert invalid UTF-8, nest 100,000 levels deep, pad past
``MAX_FRAME_BYTES``, or build random JSON.

The big job: ``python -m tests.connectors.fuzz --examples 100000`` (exit status 1 on any
unhandled exception or broken contract).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import orjson
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from connectors.app import specs_for
from connectors.base import ConnectionSpec, Instrument, ParseResult, RejectReason, VenueParser
from connectors.fields import MAX_TS_MS, MIN_TS_MS
from connectors.frames import MAX_FRAME_BYTES, annualized_rate
from connectors.metrics import ConnectorMetrics
from connectors.runner import TOPIC_OF, FrameRouter, raw_text
from streams.events import DeadLetter, Funding, Liquidation, PriceTick, decode, encode

Venue = Literal["binance", "bybit", "okx"]
VENUES: tuple[Venue, ...] = ("binance", "bybit", "okx")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
TS_RECV_NS = 1_760_000_000_123_456_789
DEADLETTER_TOPIC = "ticks.deadletter.v1"
REASONS = frozenset(get_args(RejectReason))

# Each parser's ``except Exception`` safety net (connectors/<venue>/parse.py ``parse``) writes
# its reject detail like this: such a reject is a crash the net hid.
SAFETY_NET = {
    "binance": re.compile(r"internal parser error: \w+: "),
    "bybit": re.compile(r"parser bug: \w+: "),
    "okx": re.compile(r"unexpected [A-Z]\w*: "),  # orjson's own messages are lower case
}

# The symbols of the recorded frames, with the metadata the parse tests use
# (tests/connectors/binance_cases.py, test_bybit_parse.py, test_okx_parse.py); the OKX client
# opens swaps only, so the X-Perp and dated-future fixtures are filtered, as they would be live.
INSTRUMENTS: dict[Venue, tuple[Instrument, ...]] = {
    "binance": (
        Instrument("binance", "BTCUSDT", "BTC", "crypto"),
        Instrument("binance", "ETHUSDT", "ETH", "crypto", funding_interval_hours=1.0),
        Instrument("binance", "XAUUSDT", "GOLD", "metal", funding_interval_hours=4.0),
        Instrument("binance", "CTKUSDT", "CTK", "crypto"),
        Instrument("binance", "SUSHIUSDT", "SUSHI", "crypto"),
    ),
    "bybit": (
        Instrument("bybit", "BTCUSDT", "BTC", "crypto", funding_interval_hours=4.0),
        Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0),
        Instrument("bybit", "SPYUSDT", "SPX", "equity", funding_interval_hours=4.0),
        Instrument("bybit", "BTC-26DEC25", "BTC", "crypto"),
    ),
    "okx": (
        Instrument("okx", "IOST-USDT-SWAP", "IOST", "crypto", contract_size=1000.0),
        Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", contract_size=0.01),
        Instrument("okx", "XAU-USDT-SWAP", "GOLD", "metal", 0.001, funding_interval_hours=8.0),
        Instrument("okx", "BTC-USD-SWAP", "BTC", "crypto", contract_size=100.0),
        Instrument("okx", "UNI-USD-SWAP", "UNI", "crypto"),
    ),
}

# -- seeds and vocabulary ------------------------------------------------------------------


def seed_frames(venue: Venue) -> dict[str, bytes]:
    """The venue's recorded frames by file name, bytes as stored (plus OKX's text ``pong``)."""
    frames = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob(f"{venue}_*.json"))}
    if venue == "okx":
        frames["pong"] = b"pong"  # OKX answers the text ping with this bare text frame
    return frames


SYMBOL_KEYS = frozenset({"s", "symbol", "instId"})


def retargeted(doc: Any, venue: Venue) -> Any | None:
    """A copy of ``doc`` about the venue's first instrument when it is about none of them.

    Some recorded frames are of symbols outside the universe (an OKX mark price of a dated
    future): the copy sends them down the event path too. None when ``doc`` needs no copy.
    """
    universe = {i.symbol for i in INSTRUMENTS[venue]}
    target = INSTRUMENTS[venue][0].symbol
    found: list[str] = []

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(value) for value in node]
        if not isinstance(node, dict):
            return node
        copy = {}
        for key, value in node.items():
            if key in SYMBOL_KEYS and isinstance(value, str):
                found.append(value)
                value = target
            elif key == "topic" and isinstance(value, str) and "." in value:  # Bybit
                value = f"{value.partition('.')[0]}.{target}"
            copy[key] = walk(value)
        return copy

    copy = walk(doc)
    return copy if found and not universe.intersection(found) else None


def _leaves(doc: Any, keys: set[str], texts: set[str]) -> None:
    if isinstance(doc, dict):
        for key, value in doc.items():
            keys.add(key)
            _leaves(value, keys, texts)
    elif isinstance(doc, list):
        for value in doc:
            _leaves(value, keys, texts)
    elif isinstance(doc, str):
        texts.add(doc)


@dataclass(frozen=True)
class Seeds:
    """A venue's seed documents and the keys and strings they use (to steer random JSON)."""

    raw: dict[str, bytes]
    docs: dict[str, Any]
    keys: tuple[str, ...]
    texts: tuple[str, ...]

    @classmethod
    @functools.cache
    def load(cls, venue: Venue) -> Seeds:
        """The venue's seeds (loaded once: callers copy a document before changing it)."""
        raw = seed_frames(venue)
        docs = {name: json.loads(data) for name, data in raw.items() if data != b"pong"}
        for name, doc in list(docs.items()):
            copy = retargeted(doc, venue)
            if copy is not None:
                docs[f"{name}@{INSTRUMENTS[venue][0].symbol}"] = copy
                raw[f"{name}@{INSTRUMENTS[venue][0].symbol}"] = json.dumps(copy).encode()
        keys: set[str] = set()
        texts: set[str] = set()
        _leaves(list(docs.values()), keys, texts)
        return cls(raw, docs, tuple(sorted(keys)), tuple(sorted(texts)))


# -- building frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class RawJson:
    """A value written into the frame as raw JSON text (``NaN``, ``-0``, a 30-digit integer)."""

    text: str


NUMERIC_LITERALS = (
    *("NaN", "Infinity", "-Infinity", "nan", "inf", "-0", "-0.0", "0", "0.0", "-1", "1"),
    *("1e308", "-1e308", "1e309", "5e-324", "1e-400", "1E2", "9007199254740993"),
    *("9223372036854775808", "18446744073709551616", "123456789012345678901234567890"),
    *("1" * 400, "-" + "9" * 40, "0.000000000000000000000000000001", "1.5", "4102444800001"),
)
GARBAGE_TEXT = (
    *("", " ", "\x00", "null", "true", "[]", "{}", "NaN", "nan", "inf", "-Infinity", "1e999"),
    *("0x1F", "1_000", " 12 ", "+1", "--1", "1.2.3", "1e", ".", "-", "²", "١٢٣", "１２３", "٣.٥"),
    *("\u202e", "\ud800", "\U0001f525" * 3, "é" * 10, "x" * 5000, "BUY", "sell", "Sell", "long"),
    *("net", "snapshot", "delta", "1568014460893", "-1568014460893", "99999999999999999999"),
)
INVALID_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80")
NESTING_DEPTHS = (100, 999, 1000, 1023, 1024, 1025, 5000, 100_000)


def render(doc: Any, ascii_only: bool = False) -> str:
    """``doc`` as compact JSON, with each :class:`RawJson` written as its raw text."""
    literals: list[str] = []

    def default(value: Any) -> str:
        if isinstance(value, RawJson):
            literals.append(value.text)
            return f"\x00LIT{len(literals) - 1}\x00"
        raise TypeError(type(value).__name__)

    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=ascii_only, default=default)
    for index, literal in enumerate(literals):
        text = text.replace(f'"\\u0000LIT{index}\\u0000"', literal, 1)
    return text


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path (dict keys and list indexes), the root's ``()`` first."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


Op = Literal["delete", "replace", "rename"]


def mutate(doc: Any, path: tuple[Any, ...], op: Op, value: Any) -> Any:
    """``doc`` with the node at ``path`` deleted, replaced by ``value`` or (a dict key) renamed.

    Changes ``doc`` in place and returns it (a new root when ``path`` is the root).
    """
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "rename" and isinstance(parent, dict):
        parent[str(value)] = parent.pop(last)
    else:
        parent[last] = value
    return doc


def wire(text: str) -> str | bytes:
    """``text`` as a WebSocket delivers it: a text frame, or bytes when it is not valid UTF-8.

    ``websockets`` decodes text frames strictly, so a lone surrogate can only arrive in a
    binary frame (as invalid UTF-8).
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def oversized(seed: bytes, kind: int) -> str | bytes:
    """A frame just past :data:`MAX_FRAME_BYTES`: bytes, ASCII text or multi-byte text."""
    if kind == 0:
        return seed + b" " * (MAX_FRAME_BYTES + 1 - len(seed))
    if kind == 1:
        return seed.decode() + " " * (MAX_FRAME_BYTES + 1 - len(seed))
    # fewer characters than the limit, more UTF-8 bytes: a length check alone would let it in
    return '{"pad":"' + "€" * (MAX_FRAME_BYTES // 3 + 1) + '"}'


def nested(depth: int, inside: Any | None) -> str:
    """``depth`` levels of ``[``, closed, alone or as a value inside the document ``inside``."""
    deep = "[" * depth + "]" * depth
    if not inside:
        return deep
    first = next(iter(inside)) if isinstance(inside, dict) else 0
    return render(mutate(inside, (first,), "replace", RawJson(deep)))


# -- the seeded generator (the 100k run) ----------------------------------------------------


class FrameGenerator:
    """Random frames for one venue from a seeded ``random.Random``: reproducible, fast.

    :meth:`frame` returns ``(strategy, raw)``; most frames are recorded frames mutated, some
    are unmutated (so stateful parsers such as Bybit's tickers keep a realistic state).
    """

    STRATEGIES: ClassVar[dict[str, float]] = {
        "fixture": 6,
        "delete": 12,
        "type_swap": 14,
        "edge_number": 18,
        "garbage_text": 10,
        "rename_key": 4,
        "truncate": 7,
        "byte_flip": 8,
        "invalid_utf8": 4,
        "random_json": 9,
        "random_data": 6,
        "deep_nesting": 1.5,
        "oversize": 0.5,
    }

    def __init__(self, venue: Venue, seed: int | random.Random = 0) -> None:
        self.seeds = Seeds.load(venue)
        self.rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        self._names = sorted(self.seeds.raw)
        self._doc_names = sorted(self.seeds.docs)
        self._strategies = list(self.STRATEGIES)
        self._weights = list(self.STRATEGIES.values())

    def frame(self) -> tuple[str, str | bytes]:
        strategy = self.rng.choices(self._strategies, self._weights)[0]
        make: Callable[[], str | bytes] = getattr(self, f"_{strategy}")
        return strategy, make()

    def _doc(self) -> Any:
        return json.loads(json.dumps(self.seeds.docs[self.rng.choice(self._doc_names)]))

    def _mutated(self, op: Op, value: Callable[[], Any]) -> str | bytes:
        doc = self._doc()
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            path = self.rng.choice(paths(doc))
            doc = mutate(doc, path, op if path else "replace", value())
        return wire(render(doc, ascii_only=self.rng.random() < 0.3))

    def _fixture(self) -> bytes:
        return self.seeds.raw[self.rng.choice(self._names)]

    def _delete(self) -> str | bytes:
        return self._mutated("delete", lambda: None)

    def _type_swap(self) -> str | bytes:
        return self._mutated("replace", lambda: self.random_value(depth=1))

    def _edge_number(self) -> str | bytes:
        def value() -> Any:
            literal = self.rng.choice(NUMERIC_LITERALS)
            return literal if self.rng.random() < 0.4 else RawJson(literal)

        return self._mutated("replace", value)

    def _garbage_text(self) -> str | bytes:
        return self._mutated("replace", lambda: self.rng.choice(GARBAGE_TEXT))

    def _rename_key(self) -> str | bytes:
        return self._mutated("rename", lambda: self.rng.choice((*self.seeds.keys, *GARBAGE_TEXT)))

    def _encoded(self) -> bytes:
        data = self._fixture() if self.rng.random() < 0.5 else self._edge_number()
        return data.encode() if isinstance(data, str) else data

    def _truncate(self) -> bytes:
        data = self._encoded()
        return data[: self.rng.randrange(len(data))]

    def _byte_flip(self) -> bytes:
        data = bytearray(self._encoded())
        for _ in range(self.rng.randint(1, 4)):
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def _invalid_utf8(self) -> bytes:
        data = self._encoded()
        at = self.rng.randrange(len(data) + 1)
        return data[:at] + self.rng.choice(INVALID_UTF8) + data[at:]

    def _random_json(self) -> str | bytes:
        return wire(render(self.random_value(depth=4), ascii_only=self.rng.random() < 0.3))

    def _random_data(self) -> str | bytes:
        """A recorded envelope (Binance ``stream``, OKX ``arg``, Bybit ``topic``), random body."""
        doc = self._doc()
        if isinstance(doc, dict) and "data" in doc:
            doc["data"] = self.random_value(depth=4)
            if self.rng.random() < 0.5:
                doc["data"] = [self.random_object(depth=3) for _ in range(self.rng.randint(0, 3))]
        return wire(render(doc, ascii_only=self.rng.random() < 0.3))

    def _deep_nesting(self) -> str:
        depth = self.rng.choice(NESTING_DEPTHS)
        return nested(depth, self._doc() if self.rng.random() < 0.5 else None)

    def _oversize(self) -> str | bytes:
        return oversized(self._fixture(), self.rng.randrange(3))

    def random_object(self, depth: int) -> dict[str, Any]:
        keys = self.rng.sample(self.seeds.keys, self.rng.randint(0, min(8, len(self.seeds.keys))))
        return {key: self.random_value(depth - 1) for key in keys}

    def random_value(self, depth: int) -> Any:
        """A JSON value whose strings and keys are mostly the venue's own (to reach deep code)."""
        pick = self.rng.randrange(10 if depth > 0 else 7)
        if pick == 0:
            return self.rng.choice((None, True, False))
        if pick == 1:
            return self.rng.choice((0, -1, 1, 2**63, -(2**64), 1e308, -0.0, 5e-324, 1.5))
        if pick == 2:
            return RawJson(self.rng.choice(NUMERIC_LITERALS))
        if pick in (3, 4):
            return self.rng.choice(self.seeds.texts)
        if pick == 5:
            return self.rng.choice(GARBAGE_TEXT)
        if pick == 6:
            return str(self.rng.choice(NUMERIC_LITERALS))
        if pick in (7, 8):
            return self.random_object(depth)
        return [self.random_value(depth - 1) for _ in range(self.rng.randint(0, 4))]


# -- hypothesis strategies (make test) -----------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NUMERIC_LITERALS),
    st.sampled_from(NUMERIC_LITERALS).map(RawJson),
    st.sampled_from(GARBAGE_TEXT),
    st.text(max_size=16),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=16,
)


@st.composite
def mutated_frames(draw: st.DrawFn, venue: Venue) -> str | bytes:
    """A recorded frame with 1-3 nodes deleted, replaced or renamed, then maybe damaged."""
    seeds = Seeds.load(venue)
    doc = json.loads(json.dumps(seeds.docs[draw(st.sampled_from(sorted(seeds.docs)))]))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        op: Op = "replace"
        if path:
            op = draw(st.sampled_from(["delete", "replace", "replace", "rename"]))
        names = st.sampled_from(seeds.keys) | st.text(max_size=6)
        doc = mutate(doc, path, op, draw(names if op == "rename" else json_values))
    text = render(doc, ascii_only=draw(st.booleans()))
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "utf8"]))
    if damage == "none" and draw(st.booleans()):
        return wire(text)  # a text frame
    data = text.encode("utf-8", "surrogatepass")
    at = draw(st.integers(min_value=0, max_value=len(data)))
    if damage == "truncate":
        return data[:at]
    if damage == "flip" and at < len(data):
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if damage == "utf8":
        return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    return data


def generated_frames(venue: Venue) -> st.SearchStrategy[str | bytes]:
    """The :class:`FrameGenerator` mix, driven by a hypothesis-controlled ``Random``."""
    return st.randoms(use_true_random=False).map(lambda rng: FrameGenerator(venue, rng).frame()[1])


# -- the contract for one frame -------------------------------------------------------------


class ContractError(AssertionError):
    """A frame broke the parse-path contract; the message shows how and the frame."""


class ParserCrashError(ContractError):
    """``parse`` raised, or its safety net caught an exception (a parser bug)."""


Outcome = Literal["events", "dead_lettered", "partial", "ignored"]
"""``partial``: a batch with some items as events and others dead-lettered."""


@dataclass(frozen=True)
class Fed:
    """What became of one frame: its outcome, the parse result, why it was ignored if so."""

    outcome: Outcome
    result: ParseResult
    ignored_why: str | None = None


class MemorySink:
    """The router's sink, in memory: every ``(topic, key, value)`` put."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    async def put(self, topic: str, key: bytes, value: bytes) -> bool:
        self.records.append((topic, key, value))
        return True


def run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine that never suspends (the router on a :class:`MemorySink`)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the router suspended: the memory sink must not await anything")


@dataclass
class Harness:
    """One venue's live parse path: its spec's parser, a router, an in-memory sink."""

    venue: Venue
    spec: ConnectionSpec
    parser: VenueParser
    router: FrameRouter
    sink: MemorySink
    registry: CollectorRegistry
    instruments: dict[str, Instrument]
    keep_records: bool = False
    """Keep what the router published in ``sink.records`` (tests look at it); else dropped."""

    @classmethod
    def create(cls, venue: Venue) -> Harness:
        instruments = INSTRUMENTS[venue]
        [spec] = specs_for(venue, instruments, None)  # few instruments: one connection
        sink = MemorySink()
        registry = CollectorRegistry()
        router = FrameRouter(sink, ConnectorMetrics.create(registry))
        by_symbol = {i.symbol: i for i in instruments}
        return cls(venue, spec, spec.parser_factory(), router, sink, registry, by_symbol)

    def prime(self) -> None:
        """Feed every recorded frame once, as a fresh connection would see its snapshots."""
        for raw in Seeds.load(self.venue).raw.values():
            self.feed(raw)

    def feed(self, raw: str | bytes, ts_recv_ns: int = TS_RECV_NS) -> Fed:
        """Parse ``raw``, route the result, check the contract; raise :class:`ContractError`."""
        try:
            result = self.parser.parse(raw, ts_recv_ns)
        except Exception as exc:
            raise ParserCrashError(f"{self.venue}: parse raised {exc!r} on {_show(raw)}") from exc
        for reject in result.rejects:
            if SAFETY_NET[self.venue].match(reject.detail):
                raise ParserCrashError(f"{self.venue}: safety net: {reject.detail} on {_show(raw)}")
        start = len(self.sink.records)
        run_sync(self.router.on_frame(self.spec, raw, ts_recv_ns, result))
        try:
            self._check(raw, ts_recv_ns, result, self.sink.records[start:])
        except AssertionError as exc:
            raise ContractError(f"{self.venue}: {exc} on {_show(raw)}") from None
        if not self.keep_records:
            del self.sink.records[start:]  # bounded memory over 100k frames
        if result.events:
            return Fed("partial" if result.rejects else "events", result)
        if result.rejects:
            return Fed("dead_lettered", result)
        return Fed("ignored", result, ignored_why(self.venue, raw, result))

    def _check(
        self,
        raw: str | bytes,
        ts_recv_ns: int,
        result: ParseResult,
        records: list[tuple[str, bytes, bytes]],
    ) -> None:
        for event in result.events:
            self._check_event(event, ts_recv_ns)
        for reject in result.rejects:
            assert reject.reason in REASONS, f"unknown reason {reject.reason!r}"
            assert reject.detail.strip(), f"empty detail in {reject}"
        published = [(topic, value) for topic, _, value in records if topic != DEADLETTER_TOPIC]
        expected = [(TOPIC_OF[type(e)], encode(e)) for e in result.events]
        assert published == expected, "the router did not publish exactly the events"
        letters = [decode(DeadLetter, v) for t, _, v in records if t == DEADLETTER_TOPIC]
        assert [letter.reason for letter in letters] == [
            f"{r.reason}: {r.detail}"[:1024] for r in result.rejects
        ], "not one dead letter per reject, with its reason"
        for letter in letters:
            assert (letter.venue, letter.ts_recv_ns) == (self.venue, ts_recv_ns)
            assert letter.raw == raw_text(raw), "dead letter does not carry the frame"
        if not result.events and not result.rejects:
            assert ignored_why(self.venue, raw, result) is not None, (
                f"silent drop: no event, no reject, control={result.control}, filtered=0"
            )

    def _check_event(self, event: PriceTick | Liquidation | Funding, ts_recv_ns: int) -> None:
        kind: Any = type(event)
        assert decode(kind, encode(event)) == event, f"{event} does not round-trip"
        inst = self.instruments.get(event.symbol)
        assert inst is not None, f"event for {event.symbol!r}, not in the universe"
        assert (event.venue, event.asset, event.asset_class) == (
            self.venue,
            inst.asset,
            inst.asset_class,
        ), f"{event} does not match its instrument {inst}"
        assert event.ts_recv_ns == ts_recv_ns
        assert MIN_TS_MS * 1_000_000 <= event.ts_event_ns <= MAX_TS_MS * 1_000_000, event
        if isinstance(event, PriceTick | Liquidation):
            assert math.isfinite(event.price), event
            assert event.price > 0, event
        if isinstance(event, Liquidation):
            assert math.isfinite(event.qty_base), event
            assert event.qty_base > 0, event
            assert math.isclose(event.notional_usd, event.qty_base * event.price, rel_tol=1e-12)
        if isinstance(event, Funding):
            assert 0 < event.interval_hours <= 24, event
            expected = annualized_rate(event.rate, event.interval_hours)
            assert math.isclose(event.rate_annualized, expected, rel_tol=1e-12, abs_tol=1e-300)
            assert MIN_TS_MS * 1_000_000 <= event.next_funding_ts_ns <= MAX_TS_MS * 1_000_000


def ignored_why(venue: Venue, raw: str | bytes, result: ParseResult) -> str | None:
    """Why a frame with no event and no reject is not a silent drop, or None when it is one.

    Control frames (ack, pong, info) and items of instruments outside the universe say so in
    the result. A Bybit ``tickers`` delta that changes only fields firesale does not read
    (``bid1Price``, ``volume24h``...) updates the parser's state and publishes nothing; the
    result cannot say so (``ParseResult`` has no flag for it), so it is recognised here by its
    topic.
    """
    if result.control in ("ack", "pong", "info"):
        return f"control {result.control}"
    if result.filtered:
        return "outside the universe"
    if venue == "bybit":
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if isinstance(doc, dict) and str(doc.get("topic")).startswith("tickers."):
            return "bybit ticker update with nothing to publish"
    return None


def _show(raw: str | bytes, limit: int = 300) -> str:
    text = repr(raw[:limit])
    return text if len(raw) <= limit else f"{text}… ({len(raw)} long)"


# -- tallies and the runner ----------------------------------------------------------------


@dataclass
class Tally:
    """What one venue's run did; ``inputs`` = events + dead_lettered + partial + ignored."""

    venue: Venue
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    events: int = 0
    dead_letters: int = 0
    unhandled: int = 0
    contract_failures: int = 0
    metric_dead_letters: float = 0.0
    failures: list[str] = field(default_factory=list)
    strategies: Counter[str] = field(default_factory=Counter)
    ignored_why: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def line(self) -> str:
        o = self.outcomes
        return (
            f"{self.venue}: inputs={self.inputs} frames_with_events={o['events'] + o['partial']} "
            f"dead_lettered={o['dead_lettered'] + o['partial']} (of which partial={o['partial']}) "
            f"ignored={o['ignored']} events={self.events} dead_letters={self.dead_letters} "
            f"unhandled_exceptions={self.unhandled} contract_failures={self.contract_failures} "
            f"wall={self.wall_s:.1f}s"
        )

    def ok(self) -> bool:
        """No crash, no broken contract, every input accounted for, every reject counted."""
        return (
            self.contract_failures == 0
            and self.inputs == sum(self.outcomes.values())
            and self.metric_dead_letters == self.dead_letters
        )


def fuzz_venue(venue: Venue, examples: int, seed: int = 0, keep: int = 20) -> Tally:
    """Feed ``examples`` generated frames through one parser (state kept, as on a connection)."""
    harness = Harness.create(venue)
    generator = FrameGenerator(venue, seed)
    tally = Tally(venue)
    started = time.perf_counter()
    for _ in range(examples):
        strategy, raw = generator.frame()
        tally.inputs += 1
        tally.strategies[strategy] += 1
        try:
            fed = harness.feed(raw)
        except ContractError as exc:
            tally.unhandled += isinstance(exc, ParserCrashError)
            tally.contract_failures += 1
            if len(tally.failures) < keep:
                tally.failures.append(f"[{strategy}] {exc}")
            continue
        tally.outcomes[fed.outcome] += 1
        tally.events += len(fed.result.events)
        tally.dead_letters += len(fed.result.rejects)
        if fed.ignored_why is not None:
            tally.ignored_why[fed.ignored_why] += 1
    tally.wall_s = time.perf_counter() - started
    tally.metric_dead_letters = deadletter_count(harness.registry)
    return tally


def deadletter_count(registry: CollectorRegistry) -> float:
    """``firesale_connector_deadletters_total`` summed over its labels."""
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("deadletters_total"):
                total += sample.value
    return total


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python -m tests.connectors.fuzz", description=__doc__)
    args.add_argument("--examples", type=int, default=10_000, help="inputs per venue")
    args.add_argument("--seed", type=int, default=0)
    args.add_argument("--venue", choices=VENUES, action="append", help="default: every venue")
    options = args.parse_args(argv)
    bad = False
    for venue in options.venue or VENUES:
        tally = fuzz_venue(venue, options.examples, options.seed)
        print(tally.line(), flush=True)
        print(f"  strategies: {dict(sorted(tally.strategies.items()))}", flush=True)
        print(f"  ignored: {dict(sorted(tally.ignored_why.items()))}", flush=True)
        for failure in tally.failures:
            print(f"  FAIL {failure}", flush=True)
        bad |= not tally.ok()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
