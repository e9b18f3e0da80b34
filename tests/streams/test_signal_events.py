"""Signal topics as a public contract: real detector outputs become envelopes that validate
against the committed per-topic JSON Schemas, with deterministic ids and the documented keys;
malformed payloads are rejected by the schemas, naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from numpy.typing import NDArray

from signals.cosell import CoSellEvent, CoSellParams
from signals.detector import BarSignals, DetectorParams, MarketDetector
from signals.errors import InvalidInputError
from signals.funding import FundingEvent, FundingParams
from signals.liquidations import CascadeEvent, LiquidationParams
from streams.events import SignalEvent, committed_schema, decode, encode
from streams.signal_events import (
    LATEST_STATE_TOPICS,
    SCHEMA_FOR_TOPIC,
    TOPIC_FOR_TYPE,
    bar_signal_events,
    cascade_event,
    correlation_record,
    cosell_event,
    funding_event,
    key_for,
    signal_event,
    topic_for,
)
from streams.topics import BY_NAME

NS = 1_000_000_000
STEP_S = 60
T0 = 1_762_214_400 * NS  # 2025-11-04T00:00:00Z
ASSETS = ["BTC", "ETH", "SPX", "GOLD"]
CLASSES = ["crypto", "crypto", "equity", "metal"]
N_BARS, CRASH = 200, 150

Source = BarSignals | CoSellEvent | CascadeEvent | FundingEvent
TYPES = {
    "signals.correlation.v1": {"correlation.bar"},
    "signals.cosell.v1": {"cosell.start", "cosell.update", "cosell.end"},
    "signals.liquidation.v1": {
        "liquidation.cascade.start",
        "liquidation.cascade.peak",
        "liquidation.cascade.end",
    },
    "signals.funding.v1": {"funding.flip", "funding.extreme.start", "funding.extreme.end"},
}


def params() -> DetectorParams:
    """Short warm-ups and baselines so that a 200-bar market fires every event type."""
    cosell = CoSellParams(
        horizon_bars=2, z_sell=2.0, vol_halflife_bars=30.0, baseline_halflife_bars=60.0,
        theta_on=0.5, theta_off=0.3, min_off_bars=2, update_every_bars=3, warmup_bars=40,
        min_obs=20,
    )  # fmt: skip
    return DetectorParams(
        window_bars=30,
        ew_half_life_bars=8.0,
        variance_baseline_half_life_bars=50.0,
        cosell=cosell,
        liquidations=LiquidationParams(min_baseline_windows=2, min_notional_usd=1e5),
        funding=FundingParams(max_age_s=600.0, history_step_s=300, min_history=3),
    )


def market() -> tuple[NDArray[np.float64], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Closes with one common factor and a 6-bar sell-off of everything at CRASH (GOLD missing
    single bars); quiet liquidations then a growing burst of ETH longs during the sell-off;
    BTC funding on two venues that turns deeply negative for 20 bars, then recovers."""
    rng = np.random.default_rng(3)
    r = 0.8 * rng.normal(0, 0.002, (N_BARS, 1)) + rng.normal(0, 0.0015, (N_BARS, 4))
    r[CRASH : CRASH + 6] -= 0.012
    closes = 100.0 * np.exp(np.cumsum(r, axis=0))
    closes[np.arange(N_BARS) % 17 == 5, 3] = np.nan
    liq: list[tuple[Any, ...]] = []
    fund: list[tuple[Any, ...]] = []
    for k in range(N_BARS):
        t = T0 + k * STEP_S * NS
        if k % 3 == 0:
            liq.append((t + 17 * NS, "BTC", "long", float(rng.uniform(1e4, 3e4)), True))
        if k % 5 == 1:
            liq.append((t + 41 * NS, "ETH", "short", float(rng.uniform(1e4, 2e4)), False))
        if CRASH <= k < CRASH + 6:
            liq.append((t + 30 * NS, "ETH", "long", 2e6 * (k - CRASH + 1), True))
        if k % 4 == 0:
            rate = -0.3 if CRASH <= k < CRASH + 20 else 0.1
            fund += [(t, "BTC", "binance", rate), (t + NS, "BTC", "bybit", 0.9 * rate)]
    return closes, sorted(liq), sorted(fund)


def run(emit_delay_ns: int = 1) -> list[tuple[Source, SignalEvent]]:
    """Feed the market to a MarketDetector as a worker would; every output and its envelope."""
    closes, liq, fund = market()
    det = MarketDetector(ASSETS, CLASSES, STEP_S, params())
    out: list[tuple[Source, SignalEvent]] = []
    li = fi = 0
    for k in range(N_BARS):
        start = T0 + k * STEP_S * NS
        end = start + STEP_S * NS
        while li < len(liq) and liq[li][0] <= end:
            ts, asset, side, usd, complete = liq[li]
            out += ((e, signal_event(e, ts + emit_delay_ns)) for e in det.on_liquidation(
                ts, asset, side, usd, complete))  # fmt: skip
            li += 1
        while fi < len(fund) and fund[fi][0] <= end:
            ts, asset, venue, rate = fund[fi]
            out += ((e, signal_event(e, ts + emit_delay_ns)) for e in det.on_funding(
                ts, asset, venue, rate))  # fmt: skip
            fi += 1
        bar = det.on_bar(start, closes[k])
        envelopes = bar_signal_events(bar, end + emit_delay_ns)
        assert len(envelopes) == len(bar.events) + 1
        out += zip([*bar.events, bar], envelopes, strict=True)
    return out


@pytest.fixture(scope="module")
def outputs() -> list[tuple[Source, SignalEvent]]:
    return run()


def _validator(topic: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(committed_schema(SCHEMA_FOR_TOPIC[topic]))


def test_the_run_fires_every_signal_type_of_every_topic(
    outputs: list[tuple[Source, SignalEvent]],
) -> None:
    seen: dict[str, set[str]] = {}
    for _, ev in outputs:
        seen.setdefault(topic_for(ev), set()).add(ev.type)
    assert seen == TYPES
    # ...and each schema lists exactly those types
    for topic, types in TYPES.items():
        assert set(committed_schema(SCHEMA_FOR_TOPIC[topic])["properties"]["type"]["enum"]) == types


def test_every_envelope_validates_against_its_topic_schema_and_the_generic_one(
    outputs: list[tuple[Source, SignalEvent]],
) -> None:
    generic = jsonschema.Draft202012Validator(committed_schema("signal"))
    validators = {topic: _validator(topic) for topic in TOPIC_FOR_TYPE.values()}
    for _, ev in outputs:
        wire = encode(ev)
        payload = json.loads(wire)
        errors = [e.message for e in validators[topic_for(ev)].iter_errors(payload)]
        assert errors == [], (ev.id, errors)
        generic.validate(payload)
        assert decode(SignalEvent, wire) == ev


def test_envelope_fields_come_from_the_detector_output(
    outputs: list[tuple[Source, SignalEvent]],
) -> None:
    for source, ev in outputs:
        fields = source.to_dict()
        if isinstance(source, BarSignals):
            assert (ev.id, ev.type, ev.subject) == (
                f"correlation.bar:{source.bar_start_ns}", "correlation.bar", "market",
            )  # fmt: skip
            assert ev.ts_event_ns == source.bar_start_ns
            assert ev.data == fields
            assert key_for(ev) == b"market"
            continue
        assert (ev.id, ev.type) == (source.id, source.type)
        assert ev.data == {k: v for k, v in fields.items() if k not in ("id", "type", "ts_ns")}
        assert key_for(ev) == source.id.encode()
        if isinstance(source, CoSellEvent):
            assert (ev.subject, ev.ts_event_ns) == ("market", source.bar_start_ns)
        elif isinstance(source, CascadeEvent):
            assert ev.subject == f"{source.asset}:{source.side}"
            assert ev.ts_event_ns == source.ts_ns
        else:
            assert (ev.subject, ev.ts_event_ns) == (source.asset, source.ts_ns)
    # per-bar records are emitted after the events decided at that bar, at the bar's end
    bars = [(s, ev) for s, ev in outputs if isinstance(s, BarSignals)]
    assert [ev.ts_emit_ns for _, ev in bars] == [
        T0 + (k + 1) * STEP_S * NS + 1 for k in range(N_BARS)
    ]


def test_ids_are_unique_and_a_replay_reproduces_them_and_the_data() -> None:
    first, again = run(emit_delay_ns=1), run(emit_delay_ns=5_000_000)
    ids = [ev.id for _, ev in first]
    assert len(set(ids)) == len(ids)
    assert [(ev.id, ev.type, ev.subject, ev.ts_event_ns, ev.data) for _, ev in first] == [
        (ev.id, ev.type, ev.subject, ev.ts_event_ns, ev.data) for _, ev in again
    ]
    delays = {b.ts_emit_ns - a.ts_emit_ns for (_, a), (_, b) in zip(first, again, strict=True)}
    assert delays == {4_999_999}


def _sample(outputs: list[tuple[Source, SignalEvent]], event_type: str) -> dict[str, Any]:
    ev = next(ev for _, ev in outputs if ev.type == event_type)
    payload: dict[str, Any] = orjson.loads(encode(ev))
    return payload


def _json_path(parts: list[str]) -> str:
    return "$" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts)


MALFORMED: list[tuple[str, str, object]] = [
    # (sample of this type, field path, bad value; ... = remove the field)
    ("correlation.bar", "data.corr_avg", ...),
    ("correlation.bar", "data.corr_avg_usd", 1.0),  # unknown field
    ("correlation.bar", "data.corr_avg", 1.5),  # a correlation above 1
    ("correlation.bar", "data.turbulence", "NaN"),
    ("correlation.bar", "data.returns.BTC", "x"),
    ("correlation.bar", "data.active", "yes"),
    ("correlation.bar", "id", "correlation.bar:abc"),
    ("correlation.bar", "subject", "BTC"),
    ("correlation.bar", "type", "cosell.start"),  # a type of another topic
    ("correlation.bar", "ts_event_ns", -1),
    ("correlation.bar", "ts_emit_ns", 12.5),
    ("correlation.bar", "venue", "x"),  # unknown envelope field
    ("cosell.start", "data.duration_s", 600.0),  # end-only figure on a start
    ("cosell.end", "data.duration_bars", None),  # an end without its duration
    ("cosell.start", "data.score", 1.2),
    ("cosell.start", "data.selling.0.z", ...),
    ("cosell.start", "data.peak_score", None),
    ("cosell.update", "id", "cosell.start:1:2"),
    ("liquidation.cascade.start", "data.kind", "end"),  # disagrees with the type
    ("liquidation.cascade.end", "data.end_ns", None),
    ("liquidation.cascade.peak", "data.end_ns", 5),
    ("liquidation.cascade.start", "data.side", "sell"),  # an order side, not a position
    ("liquidation.cascade.start", "subject", "ETH"),
    ("liquidation.cascade.start", "data.window_notional_usd", -1.0),
    ("liquidation.cascade.start", "data.completeness", "partial"),
    ("liquidation.cascade.peak", "id", "liquidation.cascade.peak:ETH:long:1"),  # no peak time
    ("funding.flip", "data.direction", None),
    ("funding.flip", "data.start_ns", 1),
    ("funding.flip", "data.venues", []),
    ("funding.flip", "data.weighting", "oi"),
    ("funding.flip", "data.average_annualized", None),
    ("funding.extreme.start", "data.reason", None),
    ("funding.extreme.start", "data.reason", "panic"),
    ("funding.extreme.end", "data.reason", "z"),
    ("funding.extreme.end", "id", "funding.extreme.end:BTC"),  # no start time
]


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    [pytest.param(*m, id=f"{m[0]}: {m[1]}={m[2]!r}") for m in MALFORMED],
)
def test_schemas_reject_malformed_payloads_naming_the_field(
    outputs: list[tuple[Source, SignalEvent]], event_type: str, path: str, value: object
) -> None:
    payload = _sample(outputs, event_type)
    validator = _validator(TOPIC_FOR_TYPE[event_type.partition(".")[0]])
    assert validator.is_valid(payload)
    *parents, last = path.split(".")
    node: Any = payload
    for name in parents:
        node = node[int(name)] if name.isdigit() else node[name]
    added = last not in node
    if value is ...:
        del node[last]
    else:
        node[last] = value
    errors = list(validator.iter_errors(payload))
    assert errors, "the schema accepted a malformed payload"
    # a missing or unknown field is reported on its object, a bad value on the field itself
    expected = _json_path(parents if value is ... or added else [*parents, last])
    paths = {e.json_path for e in errors} | {s.json_path for e in errors for s in e.context or []}
    assert expected in paths, paths


def test_schemas_are_valid_draft_2020_12_and_require_every_data_field() -> None:
    for topic, name in SCHEMA_FOR_TOPIC.items():
        assert topic in BY_NAME
        schema = committed_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"https://firesale.dev/schemas/{name}.v1.json"
        data = schema["properties"]["data"]
        assert data["additionalProperties"] is False
        assert data["required"] == list(data["properties"])
        for field in data["properties"]:  # units in names, described
            assert data["properties"][field]["description"], (topic, field)


def test_key_and_topic_rules() -> None:
    base: dict[str, Any] = {"ts_event_ns": 0, "ts_emit_ns": 0, "data": {}}
    corr = SignalEvent(id="correlation.bar:0", type="correlation.bar", subject="market", **base)
    casc = SignalEvent(
        id="liquidation.cascade.end:ETH:long:0", type="liquidation.cascade.end",
        subject="ETH:long", **base,
    )  # fmt: skip
    assert (topic_for(corr), key_for(corr)) == ("signals.correlation.v1", b"market")
    assert (topic_for(casc), key_for(casc)) == (
        "signals.liquidation.v1", b"liquidation.cascade.end:ETH:long:0",
    )  # fmt: skip
    assert sorted(LATEST_STATE_TOPICS) == ["signals.correlation.v1"]
    with pytest.raises(InvalidInputError, match=r"signal type 'bars\.close' has no topic"):
        topic_for(replace(corr, type="bars.close"))


def test_registry_compacts_exactly_the_latest_state_topics() -> None:
    for topic in TOPIC_FOR_TYPE.values():
        policy = BY_NAME[topic].cleanup_policy
        assert ("compact" in policy.split(",")) == (topic in LATEST_STATE_TOPICS), topic
        assert (policy == "compact") == (topic in LATEST_STATE_TOPICS), topic


def test_numpy_scalars_and_non_finite_values_become_plain_json() -> None:
    ev = FundingEvent(
        "funding.flip:BTC:5", "funding.flip", 5, "BTC", np.float64(-0.05), np.float64(np.inf),
        np.float64(np.nan), ("okx",), "equal", "to_negative",
    )  # fmt: skip
    env = funding_event(ev, ts_emit_ns=np.int64(6))  # type: ignore[arg-type]
    assert env.data["average_annualized"] == -0.05
    assert type(env.data["average_annualized"]) is float
    assert env.data["dispersion_annualized"] is None  # inf is not JSON: null, never 0
    assert env.data["z"] is None
    assert type(env.ts_emit_ns) is int
    _validator("signals.funding.v1").validate(orjson.loads(encode(env)))


@pytest.mark.parametrize("bad", [-1, True, 1.5, None])
def test_emit_time_must_be_a_non_negative_int(bad: object) -> None:
    ev = FundingEvent("funding.flip:BTC:5", "funding.flip", 5, "BTC", -0.05, 0.0, 0.0, ("okx",),
                      "equal", "to_negative")  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"ts_emit_ns is .*: it must be an int >= 0"):
        funding_event(ev, bad)  # type: ignore[arg-type]


def test_signal_event_dispatches_and_refuses_other_objects(
    outputs: list[tuple[Source, SignalEvent]],
) -> None:
    producers: dict[type[Any], Callable[[Any, int], SignalEvent]] = {
        CoSellEvent: cosell_event,
        CascadeEvent: cascade_event,
        FundingEvent: funding_event,
        BarSignals: correlation_record,
    }
    for source, ev in outputs:
        assert producers[type(source)](source, ev.ts_emit_ns) == ev
    with pytest.raises(InvalidInputError, match="str is not a detector event"):
        signal_event("cosell.start", 0)  # type: ignore[arg-type]
