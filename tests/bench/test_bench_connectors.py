"""The connector benchmark: its synthetic frames are realistic, and a quick run on the real
broker delivers exactly what the dry run produced. No timing assertions."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.connectors import (
    FrameFactory,
    ListSink,
    has_binance,
    print_table,
    run_bench,
    run_ours,
    universe,
    write_recording,
)
from connectors.app import replay_files
from connectors.runner import TOPIC_OF
from streams.events import Liquidation, decode

TYPE_OF = {topic: kind for kind, topic in TOPIC_OF.items()}


async def test_synthetic_frames_parse_cleanly_into_every_venue_and_kind(tmp_path: Path) -> None:
    instruments = universe(has_binance())
    frames = FrameFactory(instruments, seed=3).frames(800)
    files = write_recording(frames, tmp_path)
    sink, registry = ListSink(), CollectorRegistry()
    assert await replay_files(files, instruments, sink, registry) == 800
    assert [m for m in sink.messages if m[0] not in TYPE_OF] == []  # no dead letters
    universe_symbols = {(v, i.symbol) for v, insts in instruments.items() for i in insts}
    seen: set[tuple[str, str]] = set()
    sides: set[tuple[str, str]] = set()
    for topic, key, value in sink.messages:
        event = decode(TYPE_OF[topic], value)  # valid canonical events, with their own checks
        assert key == f"{event.venue}:{event.symbol}".encode()
        assert (event.venue, event.symbol) in universe_symbols
        assert 0 < event.ts_event_ns < event.ts_recv_ns
        seen.add((event.venue, topic))
        if isinstance(event, Liquidation):
            sides.add((event.venue, event.liquidated_side))
    assert seen == {(v, t) for v in instruments for t in TYPE_OF}
    assert sides == {(v, s) for v in instruments for s in ("long", "short")}
    # The all-market feeds (OKX SWAP-wide liquidations, Binance !markPrice@arr) carry
    # out-of-universe items: filtered and counted, not dead-lettered.
    filtered = registry.get_sample_value("firesale_connector_filtered_total", {"venue": "okx"})
    assert filtered is not None
    assert filtered > 0
    recv = [ts for _, ts, _ in frames]
    assert recv == sorted(recv)


@pytest.mark.kafka
async def test_quick_run_on_the_real_broker(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = await run_bench(kafka_bootstrap, 300, 1, tmp_path / "a", settle_s=0.0)
    assert set(rows) == {"ours", "baseline", "null_sink", "parse", "read"}
    assert rows["ours"].messages == rows["baseline"].messages > 300  # batches: > 1 per frame
    ratio = print_table(rows, 1)
    out = capsys.readouterr().out
    assert f"ratio ours/baseline = {ratio:.2f}" in out
    assert ratio == pytest.approx(rows["baseline"].wall_s / rows["ours"].wall_s)


@pytest.mark.kafka
async def test_a_kafka_run_that_delivers_a_different_count_is_an_error(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    instruments = universe(has_binance())
    files = write_recording(FrameFactory(instruments).frames(50), tmp_path)
    dry = ListSink()
    await replay_files(files, instruments, dry, CollectorRegistry())
    n = len(dry.messages)
    await run_ours(files, instruments, kafka_bootstrap, n)  # exact: accepted
    with pytest.raises(RuntimeError, match=f"delivered {n} of {n + 1} messages"):
        await run_ours(files, instruments, kafka_bootstrap, n + 1)
