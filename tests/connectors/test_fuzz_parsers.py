"""Every venue's live parse path against hostile frames: no crash, no silent drop.

The contract checked on every frame (parse → :class:`~connectors.runner.FrameRouter` → an
in-memory sink) is :meth:`tests.connectors.fuzz.Harness.feed`. Here: hypothesis-driven frames
per venue (mutated recordings, random JSON, the generator's mix), the hostile classics
(oversized, invalid UTF-8, deep nesting, NaN/Infinity literals) with their exact outcome, a
seeded run of the generator, and one regression test per crash the fuzzer found. The 100k run
is ``python -m tests.connectors.fuzz --examples 100000``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.frames import MAX_FRAME_BYTES
from connectors.runner import RAW_LIMIT
from streams.events import DeadLetter, Funding, decode
from tests.connectors.fuzz import (
    DEADLETTER_TOPIC,
    INVALID_UTF8,
    VENUES,
    Fed,
    FrameGenerator,
    Harness,
    ParserCrashError,
    RawJson,
    Seeds,
    Venue,
    fuzz_venue,
    generated_frames,
    json_values,
    mutate,
    mutated_frames,
    oversized,
    render,
)

EXAMPLES = int(os.environ.get("FIRESALE_FUZZ_HYPOTHESIS_EXAMPLES", "250"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
by_venue = pytest.mark.parametrize("venue", VENUES)


def primed(venue: Venue) -> Harness:
    harness = Harness.create(venue)
    harness.prime()
    return harness


def reasons(harness: Harness, raw: str | bytes) -> list[str]:
    return [r.reason for r in harness.feed(raw).result.rejects]


# -- the seeds themselves ------------------------------------------------------------------

# What each recorded frame must give: "events", "ignored: <why>" or the dead-letter reasons.
SEED_OUTCOMES: dict[str, str | list[str]] = {
    "binance_forceOrder_derived_unfilled.json": ["absurd_value"],  # z = 0: nothing filled
    "binance_subscribe_response.json": "ignored: control ack",
    "bybit_allLiquidation_tardis.json": "ignored: outside the universe",  # PIPPINUSDT
    "bybit_pong.json": "ignored: control pong",
    "bybit_publicTrade.json": ["unknown_message"],  # not a topic firesale subscribes
    "bybit_subscribe_ack.json": "ignored: control ack",
    "bybit_tickers_delta_inverse.json": "ignored: outside the universe",  # BTCUSD inverse
    "okx_error.json": ["venue_error"],
    "okx_funding-rate_xperp_tardis.json": "ignored: outside the universe",
    "okx_liquidation-orders_futures_tardis.json": "ignored: outside the universe",
    "okx_mark-price.json": "ignored: outside the universe",  # LTC-USD-190628, a future
    "okx_subscribe_ack.json": "ignored: control ack",
    "okx_trades.json": "ignored: outside the universe",  # BTC-USDT, spot
    "pong": "ignored: control pong",
}


@by_venue
def test_every_recorded_frame_has_its_expected_outcome(venue: Venue) -> None:
    harness = Harness.create(venue)
    seeds = Seeds.load(venue)
    for name, raw in seeds.raw.items():
        fed = harness.feed(raw)
        want = SEED_OUTCOMES.get(name, "events")
        if isinstance(want, list):
            assert [r.reason for r in fed.result.rejects] == want, name
            assert fed.result.events == [], name
        elif want == "events":
            assert (fed.outcome, fed.result.rejects) == ("events", []), name
        else:
            assert f"ignored: {fed.ignored_why}" == want, name
    # the out-of-universe recordings also come as copies about an instrument of the universe
    retargeted = sorted(name for name in seeds.raw if "@" in name)
    assert (
        retargeted
        == {
            "binance": [],
            "bybit": [
                "bybit_allLiquidation_tardis.json@BTCUSDT",
                "bybit_tickers_delta_inverse.json@BTCUSDT",
            ],
            "okx": [
                "okx_funding-rate_xperp_tardis.json@IOST-USDT-SWAP",
                "okx_liquidation-orders_futures_tardis.json@IOST-USDT-SWAP",
                "okx_mark-price.json@IOST-USDT-SWAP",
                "okx_trades.json@IOST-USDT-SWAP",
            ],
        }[venue]
    )


# -- hypothesis-driven -----------------------------------------------------------------------


@by_venue
@SETTINGS
@given(data=st.data())
def test_mutated_recordings_keep_the_contract(venue: Venue, data: st.DataObject) -> None:
    primed(venue).feed(data.draw(mutated_frames(venue)))


@by_venue
@SETTINGS
@given(doc=json_values, wrap=st.booleans(), seed_index=st.integers(min_value=0))
def test_random_json_keeps_the_contract(
    venue: Venue, doc: Any, wrap: bool, seed_index: int
) -> None:
    """Random JSON alone, or as the body of a recorded envelope (past the framing checks)."""
    if wrap:
        docs = Seeds.load(venue).docs
        envelope = json.loads(json.dumps(docs[sorted(docs)[seed_index % len(docs)]]))
        if isinstance(envelope, dict):
            envelope["data"] = doc
            doc = envelope
    primed(venue).feed(render(doc).encode("utf-8", "surrogatepass"))


@by_venue
@SETTINGS
@given(data=st.data())
def test_generator_mix_keeps_the_contract(venue: Venue, data: st.DataObject) -> None:
    primed(venue).feed(data.draw(generated_frames(venue)))


# -- hostile classics, with their exact outcome ---------------------------------------------

# One event-bearing recording per venue and the path of its price field.
PRICE_FIELD: dict[Venue, tuple[str, tuple[Any, ...]]] = {
    "binance": ("binance_aggTrade_combined.json", ("data", "p")),
    "bybit": ("bybit_allLiquidation.json", ("data", 0, "p")),
    "okx": ("okx_trades_2022.json", ("data", 0, "px")),
}


def with_price(venue: Venue, value: Any) -> str:
    name, path = PRICE_FIELD[venue]
    doc = json.loads(json.dumps(Seeds.load(venue).docs[name]))
    return render(mutate(doc, path, "replace", value))


@by_venue
@pytest.mark.parametrize("kind", [0, 1, 2], ids=["bytes", "ascii-text", "multibyte-text"])
def test_oversized_frames_are_dead_lettered_unread(venue: Venue, kind: int) -> None:
    harness = Harness.create(venue)
    harness.keep_records = True
    raw = oversized(with_price(venue, "1").encode(), kind)
    size = len(raw if isinstance(raw, bytes) else raw.encode())
    assert size == (MAX_FRAME_BYTES + 1 if kind < 2 else 3 * (MAX_FRAME_BYTES // 3 + 1) + 10)
    assert len(raw) <= MAX_FRAME_BYTES or kind < 2  # the multi-byte one passes a length check
    assert reasons(harness, raw) == ["oversize"]
    [(topic, key, value)] = harness.sink.records
    letter = decode(DeadLetter, value)
    assert (topic, key, letter.venue, letter.channel) == (
        DEADLETTER_TOPIC,
        f"{venue}:unknown".encode(),
        venue,
        "unknown",
    )
    assert letter.reason.startswith("oversize: ")
    assert str(MAX_FRAME_BYTES) in letter.reason
    assert letter.raw.endswith("…[truncated]")  # the frame travels, cut to 64 KiB
    assert len(letter.raw) == RAW_LIMIT - 20 + len("…[truncated]")


def prices(fed: Fed) -> list[float]:
    return [e.price for e in fed.result.events if not isinstance(e, Funding)]


@by_venue
def test_a_frame_of_exactly_the_limit_is_parsed(venue: Venue) -> None:
    frame = with_price(venue, "1234.5")
    padded = frame + " " * (MAX_FRAME_BYTES - len(frame))  # JSON allows trailing whitespace
    assert len(padded.encode()) == MAX_FRAME_BYTES
    plain, big = Harness.create(venue).feed(frame), Harness.create(venue).feed(padded)
    assert big.result.events == plain.result.events
    assert prices(big) == [1234.5]


@by_venue
@pytest.mark.parametrize("bad", INVALID_UTF8, ids=[b.hex() for b in INVALID_UTF8])
def test_invalid_utf8_is_malformed_json(venue: Venue, bad: bytes) -> None:
    frame = with_price(venue, "1").encode()
    at = frame.index(b'"1"') + 1  # inside the price string: the JSON is otherwise valid
    raw = frame[:at] + bad + frame[at:]
    harness = Harness.create(venue)
    assert reasons(harness, raw) == ["malformed_json"]


@by_venue
@pytest.mark.parametrize("depth", [1020, 1025, 100_000])
def test_deep_nesting_is_rejected(venue: Venue, depth: int) -> None:
    """Alone, or as the price: orjson refuses past 1024 levels; within it the value is refused."""
    harness = Harness.create(venue)
    alone = "[" * depth + "]" * depth
    within = with_price(venue, RawJson("[" * depth + "]" * depth))
    if depth > 1024:
        assert reasons(harness, alone) == ["malformed_json"]
        assert reasons(harness, within) == ["malformed_json"]
        return
    # Binance reads a top-level list as a batch of events; the others want an object
    assert reasons(harness, alone) == ["bad_type" if venue == "binance" else "malformed_json"]
    assert reasons(harness, within) == ["bad_type"]  # 1020 + the envelope's 2-3 levels ≤ 1024


@by_venue
@pytest.mark.parametrize(
    ("value", "want"),
    [
        (RawJson("NaN"), "malformed_json"),  # not JSON: orjson refuses the literals
        (RawJson("Infinity"), "malformed_json"),
        (RawJson("-Infinity"), "malformed_json"),
        (RawJson("1e309"), "malformed_json"),  # overflows to inf while parsing
        ("NaN", "absurd_value"),  # as strings they parse, then fail the finite > 0 check
        ("Infinity", "absurd_value"),
        ("-0", "absurd_value"),
        (RawJson("-0"), "absurd_value"),
        (RawJson("0"), "absurd_value"),
        ("1e-400", "absurd_value"),  # underflows to 0.0
        ("0x1F", "bad_type"),
        ("", "missing_field"),
        (RawJson("true"), "bad_type"),
        (RawJson("[]"), "bad_type"),
    ],
)
def test_numeric_edge_values_in_a_price(venue: Venue, value: Any, want: str) -> None:
    assert reasons(Harness.create(venue), with_price(venue, value)) == [want]


@by_venue
@pytest.mark.parametrize(
    ("literal", "price"),
    [
        ("1e308", 1e308),
        ("123456789012345678901234567890", 1.2345678901234568e29),
        ("5e-324", 5e-324),
    ],
)
def test_extreme_but_finite_prices(venue: Venue, literal: str, price: float) -> None:
    """Finite prices > 0 pass; a liquidation whose notional overflows does not."""
    fed = Harness.create(venue).feed(with_price(venue, RawJson(literal)))
    if venue == "bybit" and literal == "1e308":  # a liquidation of 20000 ROSE: notional = inf
        assert [r.reason for r in fed.result.rejects] == ["absurd_value"]
        assert "notional" in fed.result.rejects[0].detail
        assert fed.result.events == []
    else:  # 20000 × 5e-324 is still > 0 (a subnormal), so that liquidation passes
        assert fed.result.rejects == []
        assert prices(fed) == [price]


# -- the seeded generator, as the big job runs it -------------------------------------------


@by_venue
def test_seeded_run_accounts_for_every_frame(venue: Venue) -> None:
    tally = fuzz_venue(venue, examples=3000, seed=20261123)
    assert tally.failures == []
    assert tally.unhandled == 0
    assert tally.ok()
    o = tally.outcomes
    assert o["events"] + o["partial"] + o["dead_lettered"] + o["ignored"] == 3000
    # every strategy ran, and each outcome happened: the mutations reach the event path
    assert set(tally.strategies) == set(FrameGenerator.STRATEGIES)
    assert min(o["events"], o["partial"], o["dead_lettered"], o["ignored"]) > 0
    assert tally.metric_dead_letters == tally.dead_letters


def test_a_crash_is_reported_not_hidden() -> None:
    """The harness sees through the safety net: a parser that raises inside is a crash."""
    harness = Harness.create("okx")
    harness.parser._channels["trades"] = lambda *_: 1 / 0  # type: ignore[attr-defined]
    with pytest.raises(ParserCrashError, match="ZeroDivisionError"):
        harness.feed(with_price("okx", "1"))


# -- regressions: crashes and silent drops the fuzzer found ---------------------------------

DEEP = "[" * 1015 + "]" * 1015  # within orjson's 1024 levels; repr() of it overflows the stack


def deep_at(venue: Venue, name: str, path: tuple[Any, ...]) -> str:
    doc = json.loads(json.dumps(Seeds.load(venue).docs[name]))
    return render(mutate(doc, path, "replace", RawJson(DEEP)))


@pytest.mark.parametrize(
    ("venue", "raw", "reason", "detail"),
    [
        # binance: e, X and the error code were put through str(): RecursionError
        ("binance", '{"e":' + DEEP + "}", "unknown_message", "e='a list of 1 items'"),
        ("binance", '{"code":' + DEEP + ',"msg":"x"}', "venue_error", "code=a list of 1 items"),
        (
            "binance",
            '{"e":"forceOrder","o":{"s":"BTCUSDT","S":"SELL","z":"0","X":' + DEEP + "}}",
            "absurd_value",
            "X=a list of 1 items",
        ),
        ("binance", '{"e":"aggTrade","s":"BTCUSDT","p":"1","T":' + DEEP + "}", "bad_type", "T"),
        # bybit: topic, type, op and ret_msg went through repr()/str()
        ("bybit", '{"topic":' + DEEP + "}", "bad_type", "got 'a list of 1 items'"),
        ("bybit", '{"op":' + DEEP + "}", "unknown_message", "op a list of 1 items"),
        ("bybit", '{"op":"x","success":false,"ret_msg":' + DEEP + "}", "venue_error", "x failed"),
        (
            "bybit",
            '{"topic":"tickers.BTCUSDT","type":' + DEEP + ',"data":{"symbol":"BTCUSDT"}}',
            "bad_type",
            "type is 'a list of 1 items'",
        ),
        # okx: a list or object event was looked up in a frozenset (TypeError: unhashable)
        ("okx", '{"event":[1]}', "unknown_message", "unknown event 'a list of 1 items'"),
        ("okx", '{"event":{}}', "unknown_message", "unknown event 'an object of 0 keys'"),
        ("okx", '{"event":' + DEEP + "}", "unknown_message", "a list of 1 items"),
        ("okx", '{"event":"error","code":' + DEEP + "}", "venue_error", "error a list of 1"),
        (
            "okx",
            deep_at("okx", "okx_liquidation-orders.json", ("data", 0, "details", 0, "posSide")),
            "bad_type",
            "posSide must be long, short or net, got 'a list of 1 items'",
        ),
    ],
)
def test_deeply_nested_values_are_rejected_not_crashed(
    venue: Venue, raw: str, reason: str, detail: str
) -> None:
    [reject] = Harness.create(venue).feed(raw).result.rejects
    assert reject.reason == reason
    assert detail in reject.detail


@pytest.mark.parametrize(
    ("venue", "raw", "channel", "detail"),
    [
        ("binance", "[]", "unknown", "an empty list of events"),
        ("binance", '{"stream":"!markPrice@arr@1s","data":[]}', "markPrice", "an empty list"),
        ("bybit", '{"topic":"allLiquidation.BTCUSDT","data":[]}', "allLiquidation", "empty"),
        ("okx", '{"arg":{"channel":"trades"},"data":[]}', "trades", "data is an empty list"),
    ],
)
def test_empty_batches_are_dead_lettered_not_dropped(
    venue: Venue, raw: str, channel: str, detail: str
) -> None:
    """They used to give no event, no reject and no flag: a silent drop."""
    [reject] = Harness.create(venue).feed(raw).result.rejects
    assert (reject.reason, reject.channel) == ("missing_field", channel)
    assert detail in reject.detail
