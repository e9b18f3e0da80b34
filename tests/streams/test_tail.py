"""`firesale tail`: one line per record (time, key, fields), undecodable records shown as such,
`--json`, bootstrap resolution and errors, Ctrl-C; end to end on the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from signals.liquidations import LiquidationCascadeDetector, LiquidationParams
from streams.events import BarEvent, DeadLetter, GapMarker, SignalEvent, encode
from streams.signal_events import cascade_event, key_for, topic_for
from streams.tail import (
    RawRecord,
    TailError,
    event_type_of,
    format_time_ns,
    json_line,
    render_record,
    tail,
)
from streams.topics import BY_NAME, TopicSpec, ensure_topics

NS = 1_000_000_000
T0 = 1_762_250_400 * NS  # 2025-11-04T10:00:00Z
FIRESALE = Path(sys.executable).with_name("firesale")
TOPIC = "signals.liquidation.v1"


def _rec(value: bytes | None, key: bytes | None = b"k", offset: int = 0) -> RawRecord:
    return RawRecord(0, offset, 1_700_000_000_000, key, value)


def _line(topic: str, value: bytes | None, key: bytes | None = b"k") -> str:
    return render_record(BY_NAME[topic], _rec(value, key)).plain


def cascade_events() -> list[SignalEvent]:
    """A real cascade (start, then end) of the liquidation detector, as envelopes."""
    det = LiquidationCascadeDetector(LiquidationParams(min_baseline_windows=1))
    det.advance(T0)
    det.update_price(T0, "ETH", 3_000.0)
    events = det.update(T0 + 300 * NS, "ETH", "long", 1e6, complete=False)
    det.update_price(T0 + 310 * NS, "ETH", 2_850.0)
    events += det.advance(T0 + 900 * NS) + det.advance(T0 + 1_020 * NS)
    assert [e.kind for e in events] == ["start", "end"]
    return [cascade_event(e, e.ts_ns + 1_000) for e in events]


# --------------------------------------------------------------------------- rendering


def test_signal_line_has_time_key_type_subject_and_data_without_nulls() -> None:
    start, end = cascade_events()
    line = _line(TOPIC, encode(start), key_for(start))
    assert line == (
        "2025-11-04T10:05:00.000Z  liquidation.cascade.start:ETH:long:1762250700000000000  "
        "liquidation.cascade.start ETH:long kind=start asset=ETH side=long "
        "start_ns=2025-11-04T10:05:00.000Z peak_ns=2025-11-04T10:05:00.000Z window_s=300 "
        "window_notional_usd=1000000 z=100 baseline_median_usd=0 peak_window_notional_usd=1000000 "
        "peak_z=100 total_notional_usd=1000000 price_start=3000 price_last=3000 "
        "price_move_ratio=0 completeness=sampled"
    )
    assert "end_ns" not in line
    assert "multiple_of_normal" not in line
    line = _line(TOPIC, encode(end), key_for(end))
    assert line.startswith(
        "2025-11-04T10:17:00.000Z  liquidation.cascade.end:ETH:long:1762250700000000000  "
        "liquidation.cascade.end ETH:long kind=end "
    )
    assert " end_ns=2025-11-04T10:15:00.000Z " in line
    assert " price_last=2850 price_move_ratio=-0.05 " in line


def test_id_is_shown_when_it_is_not_the_key() -> None:
    ev = SignalEvent(
        id="correlation.bar:1762250400000000000", type="correlation.bar", ts_event_ns=T0,
        ts_emit_ns=T0 + 61 * NS, subject="market",
        data={"corr_avg": 0.123456789, "corr_by_class_pair": {"crypto-metal": None},
              "returns": {"BTC": -0.01, "GOLD": None}, "active": False, "selling": ["BTC"]},
    )  # fmt: skip
    assert _line("signals.correlation.v1", encode(ev), b"market") == (
        "2025-11-04T10:00:00.000Z  market  correlation.bar market "
        "id=correlation.bar:1762250400000000000 corr_avg=0.12345679 "
        "corr_by_class_pair={crypto-metal:null} returns={BTC:-0.01,GOLD:null} active=false "
        "selling=[BTC]"
    )


def test_time_comes_from_the_bar_start_or_the_receive_time() -> None:
    bar = BarEvent(asset="BTC", asset_class="crypto", bar_start_ns=T0 + 60 * NS, interval_s=60,
                   close=101_000.25, n_ticks=0, stale=True)  # fmt: skip
    assert _line("bars.v1", encode(bar), b"BTC") == (
        "2025-11-04T10:01:00.000Z  BTC  asset=BTC asset_class=crypto interval_s=60 "
        "close=101000.25 n_ticks=0 stale=true"
    )
    dead = DeadLetter(venue="okx", channel="trades", ts_recv_ns=T0 + 1_500_000, reason="bad",
                      raw="[oops] {x}")  # fmt: skip
    assert _line("ticks.deadletter.v1", encode(dead), b"okx:trades") == (
        "2025-11-04T10:00:00.001Z  okx:trades  venue=okx channel=trades reason=bad raw=[oops] {x}"
    )
    gap = GapMarker(venue="bybit", channel="allLiquidation", from_ns=T0, to_ns=T0 + 4 * NS,
                    reason="disconnect", ts_recv_ns=T0 + 5 * NS)  # fmt: skip
    assert _line("ticks.gap.v1", encode(gap), None) == (
        "2025-11-04T10:00:05.000Z  -  venue=bybit channel=allLiquidation "
        "from_ns=2025-11-04T10:00:00.000Z to_ns=2025-11-04T10:00:04.000Z reason=disconnect"
    )


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        (b"\x00not json", b"junk", "junk  undecodable (partition 0, offset 0): invalid "
         "SignalEvent: (payload): Invalid JSON: expected value at line 1 column 1 — raw: "
         "b'\\x00not json'"),
        (b'{"id": "x"}', None, "-  undecodable (partition 0, offset 0): invalid SignalEvent: "
         "type: Field required; ts_event_ns: Field required; ts_emit_ns: Field required; "
         "subject: Field required; data: Field required — raw: b'{\"id\": \"x\"}'"),
        (None, b"\xffkey", "\\xffkey  undecodable (partition 0, offset 0): tombstone (null "
         "value)"),
        (b"x" * 500, b"k", "k  undecodable (partition 0, offset 0): invalid SignalEvent: "
         "(payload): Invalid JSON: expected value at line 1 column 1 — raw: b'" + "x" * 161
         + "'…"),
    ],
    ids=["not JSON", "missing fields", "tombstone with a binary key", "long payload"],
)  # fmt: skip
def test_undecodable_records_are_shown_with_the_reason_and_the_broker_time(
    value: bytes | None, key: bytes | None, expected: str
) -> None:
    assert (
        _line(TOPIC, value, key) == f"{format_time_ns(1_700_000_000_000 * 1_000_000)}  {expected}"
    )


def test_topics_naming_a_per_topic_signal_schema_decode_as_signal_events() -> None:
    spec = replace(BY_NAME[TOPIC], schema="signal.liquidation")
    assert event_type_of(spec) is SignalEvent
    start, _ = cascade_events()
    line = render_record(spec, _rec(encode(start), key_for(start))).plain
    assert line == _line(TOPIC, encode(start), key_for(start))
    assert "  liquidation.cascade.start ETH:long kind=start " in line


def test_json_lines_pass_json_through_and_note_what_is_not_an_event() -> None:
    start, _ = cascade_events()
    spec = BY_NAME[TOPIC]
    line, note = json_line(spec, _rec(encode(start)))
    assert note is None
    assert line is not None
    assert orjson.loads(line) == orjson.loads(encode(start))
    line, note = json_line(spec, _rec(b'{\n  "id": "x"\n}', offset=9))
    assert line == '{"id":"x"}'  # one line, whatever the producer's layout
    assert note is not None
    assert note.startswith("partition 0, offset 9: invalid SignalEvent: type:")
    assert json_line(spec, _rec(b"\x00", offset=3)) == (
        None,
        "partition 0, offset 3: not JSON: b'\\x00'",
    )
    assert json_line(spec, _rec(None, offset=4)) == (
        None,
        "partition 0, offset 4: tombstone (null value)",
    )


# --------------------------------------------------------------------------- CLI errors


def _env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.pop("FIRESALE_KAFKA_BOOTSTRAP", None)
    env.update(changes)
    return env


def _firesale(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0
              ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [str(FIRESALE), *args], env=env or _env(), capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip


def test_unknown_topic_is_refused_with_the_known_ones() -> None:
    out = _firesale("tail", "signals.nope.v1", "--bootstrap", "127.0.0.1:1")
    assert out.returncode == 2
    assert "unknown topic 'signals.nope.v1'; known: ticks.price.v1," in out.stderr


def test_no_bootstrap_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    out = _firesale("tail", TOPIC, env=_env(FIRESALE_KAFKA_HOME=str(tmp_path)))
    assert out.returncode == 1
    assert "no Kafka to talk to: set FIRESALE_KAFKA_BOOTSTRAP (or pass --bootstrap)" in out.stderr


def test_unreachable_kafka_is_a_clear_error() -> None:
    out = _firesale("tail", TOPIC, "--bootstrap", "127.0.0.1:1")
    assert out.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr
    assert "Unclosed" not in out.stderr


# --------------------------------------------------------------------------- real broker


async def _produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _existing(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records in the topic now, end offset of partition 0): other tests share the broker."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",  # (a seek after assign() races the default reset)
    )  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        count = 0
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1_000)
            count += sum(1 for r in batch.get(tp, []) if r.offset < end)
        return count, end
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_tail_prints_two_event_types_and_a_garbage_record_from_the_broker(
    kafka_bootstrap: str,
) -> None:
    await ensure_topics(kafka_bootstrap, [BY_NAME[TOPIC]])
    before, end = await _existing(kafka_bootstrap, TOPIC)
    start, finish = cascade_events()
    assert {topic_for(start), topic_for(finish)} == {TOPIC}
    await _produce(kafka_bootstrap, [
        (TOPIC, key_for(start), encode(start)),
        (TOPIC, b"garbage", b"\x00not json"),
        (TOPIC, key_for(finish), encode(finish)),
    ])  # fmt: skip
    n = before + 3
    out = _firesale("tail", TOPIC, "--from-beginning", "--max", str(n),
                    "--bootstrap", kafka_bootstrap)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"tailing {TOPIC} on {kafka_bootstrap} (from the beginning)" in out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == n
    mine = lines[before:]
    assert mine[0].startswith(
        "2025-11-04T10:05:00.000Z  liquidation.cascade.start:ETH:long:1762250700000000000  "
        "liquidation.cascade.start ETH:long kind=start asset=ETH side=long "
    )
    assert mine[0].endswith(" completeness=sampled")
    assert mine[1].endswith(
        f"  garbage  undecodable (partition 0, offset {end + 1}): invalid SignalEvent: "
        "(payload): Invalid JSON: expected value at line 1 column 1 — raw: b'\\x00not json'"
    )
    assert mine[2].startswith(
        "2025-11-04T10:17:00.000Z  liquidation.cascade.end:ETH:long:1762250700000000000  "
        "liquidation.cascade.end ETH:long kind=end "
    )
    # --json: the events' JSON on stdout, the garbage noted on stderr
    out = _firesale("tail", TOPIC, "--from-beginning", "--max", str(n), "--json",
                    "--bootstrap", kafka_bootstrap)  # fmt: skip
    assert out.returncode == 0, out.stderr
    tail_json = [orjson.loads(x) for x in out.stdout.splitlines()[-2:]]
    assert tail_json == [orjson.loads(encode(start)), orjson.loads(encode(finish))]
    assert f"partition 0, offset {end + 1}: not JSON: b'\\x00not json'" in out.stderr


@pytest.mark.kafka
async def test_tail_follows_new_records_and_ctrl_c_exits_0(kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap, [BY_NAME[TOPIC]])
    start, _ = cascade_events()
    proc = subprocess.Popen(
        [str(FIRESALE), "tail", TOPIC, "--bootstrap", kafka_bootstrap],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        ready = await asyncio.to_thread(proc.stderr.readline)
        assert ready.startswith(f"tailing {TOPIC} on {kafka_bootstrap} (new records only)")
        # the position is fixed before "tailing" is printed: this record is new, and shows
        await _produce(kafka_bootstrap, [(TOPIC, key_for(start), encode(start))])
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.startswith(
            "2025-11-04T10:05:00.000Z  liquidation.cascade.start:ETH:long:1762250700000000000  "
            "liquidation.cascade.start ETH:long kind=start "
        )
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kafka
async def test_missing_topic_is_a_clear_error(kafka_bootstrap: str) -> None:
    spec = TopicSpec("firesale.test.absent.v1", 1, 1, "delete", "id", "signal", "absent")
    with pytest.raises(TailError, match=r"topic firesale\.test\.absent\.v1 does not exist on .*: "
                       r"create it with `firesale topics create"):  # fmt: skip
        await tail(kafka_bootstrap, spec, from_beginning=True, max_records=1, as_json=False,
                   emit=print, note=print)  # fmt: skip
