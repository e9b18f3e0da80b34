"""Recording raw frames and replaying them through the live parse path."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from connectors.app import replay_files
from connectors.base import Instrument
from connectors.record import FrameRecorder, RecordingError, read_recording
from streams.events import Liquidation, decode
from tests.connectors.test_supervisor import ListSink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
ROSE = Instrument("bybit", "ROSEUSDT", "ROSE", "crypto", funding_interval_hours=8.0)


def test_recorder_rotates_and_reads_back_text_and_binary(tmp_path: Path) -> None:
    rec = FrameRecorder(tmp_path, max_bytes=200)
    frames: list[tuple[str, int, str | bytes]] = [
        ("bybit-linear-0", 1_000 + i, f'{{"n": {i}, "pad": "{"x" * 50}"}}') for i in range(10)
    ]
    frames.append(("okx-public", 5_000, b"\xff\x00binary"))
    for conn, ts, raw in frames:
        rec.write(conn, ts, raw)
    rec.close()
    assert len(rec.files) >= 4  # ~100 bytes per line, 200-byte files
    assert list(read_recording(rec.files)) == frames


def test_corrupt_recording_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"c":"x","t":1,"r":"ok"}\n{"c":"x"}\n')
    with pytest.raises(RecordingError, match=r"bad.jsonl.gz:2: not a recorded frame"):
        list(read_recording([path]))


async def test_replay_uses_the_live_parser_per_connection(tmp_path: Path) -> None:
    from connectors.bybit.client import connection_specs

    (spec,) = connection_specs([ROSE])
    rec = FrameRecorder(tmp_path)
    sell = (FIXTURES / "bybit_allLiquidation.json").read_text()
    buy = (FIXTURES / "bybit_allLiquidation_derived_buy.json").read_text()
    rec.write(spec.name, 111, sell)
    rec.write(spec.name, 222, buy)
    rec.write(spec.name, 333, "not json")
    rec.close()
    sink = ListSink()
    count = await replay_files(rec.files, {"bybit": [ROSE]}, sink, CollectorRegistry())
    assert count == 3
    liqs = [decode(Liquidation, v) for v in sink.of("ticks.liquidation.v1")]
    assert [(x.liquidated_side, x.ts_recv_ns, x.qty_base) for x in liqs] == [
        ("short", 111, 20_000.0),
        ("long", 222, 20_000.0),
    ]
    assert len(sink.of("ticks.deadletter.v1")) == 1


async def test_replay_of_unknown_connection_is_refused(tmp_path: Path) -> None:
    rec = FrameRecorder(tmp_path)
    rec.write("nowhere-0", 1, "{}")
    rec.close()
    with pytest.raises(ValueError, match="frames of connection 'nowhere-0'"):
        await replay_files(rec.files, {"bybit": [ROSE]}, ListSink(), CollectorRegistry())
