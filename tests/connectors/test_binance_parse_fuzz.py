"""Property tests: BinanceParser never raises, and whatever it emits is a valid canonical event.

Frames are random bytes, random JSON, recorded fixtures with random fields replaced or deleted,
and, exhaustively, every fixture with each single leaf (and each pair of leaves) set to odd values.
Every emitted event must survive the topic codec (``decode(encode(e)) == e``: finite,
positive prices and quantities, plausible times), every reject carries a known reason, and no
reject comes from the parser's internal safety net.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import Instrument, ParseResult, RejectReason
from connectors.binance.parse import BinanceParser
from streams.events import Funding, Liquidation, PriceTick, decode, encode
from tests.connectors.binance_cases import FIXTURES

NAMES = sorted(p.name for p in FIXTURES.glob("binance_*.json"))
DOCS = {name: json.loads((FIXTURES / name).read_text()) for name in NAMES}
REASONS = set(get_args(RejectReason))
PARSER = BinanceParser(
    [
        Instrument("binance", "BTCUSDT", "BTC", "crypto"),
        Instrument("binance", "ETHUSDT", "ETH", "crypto", funding_interval_hours=1.0),
        Instrument("binance", "XAUUSDT", "GOLD", "metal", funding_interval_hours=4.0),
        Instrument("binance", "CTKUSDT", "CTK", "crypto"),
        Instrument("binance", "SUSHIUSDT", "SUSHI", "crypto"),
    ]
)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMERIC_TEXT = (
    *("0", "-0", "1", "-1", "0.0", "1e308", "1e-320", "1e400", "NaN", "nan", "inf", "-inf"),
    *(" 1", "1_000", "0x10", "", "BUY", "SELL", "FILLED", "BTCUSDT", "ETHUSDT", "1568014460893"),
)
numeric_text = st.sampled_from(NUMERIC_TEXT)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    numeric_text,
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def check(result: ParseResult) -> None:
    for event in result.events:
        if isinstance(event, Liquidation):
            assert decode(Liquidation, encode(event)) == event
        elif isinstance(event, Funding):
            assert decode(Funding, encode(event)) == event
        else:
            assert decode(PriceTick, encode(event)) == event
    for reject in result.rejects:
        assert reject.reason in REASONS
        assert "internal parser error" not in reject.detail, reject.detail
    assert result.filtered >= 0


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def mutate(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def mutated_fixture(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    doc = json.loads(json.dumps(DOCS[name]))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        op = draw(st.sampled_from(["replace", "delete"])) if path else "replace"
        doc = mutate(doc, path, op, draw(json_values))
    return json.dumps(doc)


def leaf_paths(doc: Any) -> list[tuple[Any, ...]]:
    return [p for p in paths(doc) if p and not isinstance(get(doc, p), dict | list)]


def get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


SINGLE_VALUES: list[Any] = [None, True, 0, -1, 1.5, 2**64, [], {}, *NUMERIC_TEXT]
PAIR_VALUES: list[Any] = ["1e308", "1e-320", "0", "-1", "NaN", ""]


def test_every_single_field_mutation() -> None:
    """Exhaustive: each leaf of each fixture replaced by each odd value, or deleted."""
    for name in NAMES:
        for path in leaf_paths(DOCS[name]):
            for op, value in [("delete", None)] + [("replace", v) for v in SINGLE_VALUES]:
                doc = mutate(json.loads(json.dumps(DOCS[name])), path, op, value)
                check(PARSER.parse(json.dumps(doc), 1))


def test_every_field_pair_mutation() -> None:
    """Exhaustive over pairs of leaves (e.g. z and ap both huge: the notional overflows)."""
    for name in NAMES:
        leaves = leaf_paths(DOCS[name])
        for i, first in enumerate(leaves):
            for second in leaves[i + 1 :]:
                for v1 in PAIR_VALUES:
                    for v2 in PAIR_VALUES:
                        doc = json.loads(json.dumps(DOCS[name]))
                        mutate(doc, first, "replace", v1)
                        mutate(doc, second, "replace", v2)
                        check(PARSER.parse(json.dumps(doc), 1))


@SETTINGS
@given(mutated_fixture())
def test_mutated_fixtures_never_raise_and_emit_valid_events(raw: str) -> None:
    check(PARSER.parse(raw, 1_700_000_000_000_000_000))


@SETTINGS
@given(json_values)
def test_random_json_never_raises(doc: Any) -> None:
    check(PARSER.parse(json.dumps(doc), 0))
    check(PARSER.parse(json.dumps({"stream": "!markPrice@arr@1s", "data": doc}), 0))
    liquidation = {"e": "forceOrder", "o": doc}
    check(PARSER.parse(json.dumps({"stream": "!forceOrder@arr", "data": liquidation}), 0))


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_random_bytes_and_text_never_raise(raw: bytes | str) -> None:
    check(PARSER.parse(raw, 0))


def test_every_fixture_parses_cleanly() -> None:
    """The unmutated fixtures produce events or control flags, never rejects (except one)."""
    for name in NAMES:
        result = PARSER.parse((FIXTURES / name).read_text(), 1)
        check(result)
        if name == "binance_forceOrder_derived_unfilled.json":
            assert [r.reason for r in result.rejects] == ["absurd_value"]
        else:
            assert result.rejects == [], name
            assert result.events or result.control == "ack", name
