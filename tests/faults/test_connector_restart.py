"""Connector SIGKILL and restart: the hole is marked and backfilled, nothing else is lost.

A real ``firesale connect`` process streams a fake Bybit (liquidations, one ticker snapshot per
connection) into a broker of the test's own, is SIGKILLed, and a new process is started after
a minute boundary has passed. Frames the venue sent while no process was connected are lost
at the venue (as in reality); the new process must mark exactly that interval as a
``restart`` gap on every channel of the connection — from the last receive time the dead
process published to its own first data frame — and backfill the price candle that closed
inside it from REST. Every frame sent to a live process arrives exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.kafka import broker
from streams.events import GapMarker, Liquidation, PriceTick, decode
from streams.topics import ensure_topics
from tests.connectors.fake_bybit import FakeBybit
from tests.connectors.fake_rest import FakeRest, rows
from tests.connectors.kafka_tail import Tail
from tests.connectors.rose_universe import write_rose_universe

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
CHANNELS = {"allLiquidation.ROSEUSDT", "tickers.ROSEUSDT"}
T0_MS = 1_760_000_000_000
TOPICS = ["ticks.liquidation.v1", "ticks.price.v1", "ticks.gap.v1"]


def liquidation(i: int) -> str:
    """Frame ``i``: a unique event time ``T0 + i`` ms, quantity ``100 + i``."""
    item = {"T": T0_MS + i, "s": "ROSEUSDT", "S": "Buy" if i % 2 else "Sell",
            "v": str(100 + i), "p": "0.05"}  # fmt: skip
    return json.dumps({"topic": "allLiquidation.ROSEUSDT", "type": "snapshot",
                       "ts": T0_MS + i, "data": [item]})  # fmt: skip


def ticker() -> str:
    """``bybit_tickers.json`` (verbatim shape) for ROSEUSDT, stamped now."""
    frame = json.loads((FIXTURES / "bybit_tickers.json").read_text())
    frame["topic"] = "tickers.ROSEUSDT"
    frame["data"] |= {"symbol": "ROSEUSDT", "markPrice": "0.05", "lastPrice": "0.05"}
    frame["ts"] = time.time_ns() // 1_000_000
    return json.dumps(frame)


def start_connect(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "connect", "--venues", "bybit"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


async def test_connector_sigkill_and_restart(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    bootstrap = broker.start(home, None, detach=False).bootstrap
    await ensure_topics(bootstrap)
    fake = FakeBybit()
    url = await fake.start()
    now_min = time.time_ns() // 60_000_000_000 * 60_000
    closes = [round(0.05 + k / 1000, 3) for k in range(20)]
    rest = FakeRest({"ROSEUSDT": rows(now_min - 10 * 60_000, closes)})
    rest_url = await rest.start()
    universe, cache = write_rose_universe(tmp_path)
    env = {
        **os.environ,
        "FIRESALE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRESALE_UNIVERSE": str(universe),
        "FIRESALE_CACHE_DIR": str(cache),
        "FIRESALE_BYBIT_WS_URL": url,
        "FIRESALE_BYBIT_REST_URL": rest_url,
        "FIRESALE_BAR_INTERVAL_S": "60",
        "FIRESALE_CORRELATION_WINDOW_BARS": "5",
        "FIRESALE_METRICS_PORT": "0",
    }
    tail = Tail(bootstrap, TOPICS)
    await tail.mark()
    logs = [tmp_path / "connect0.log", tmp_path / "connect1.log"]
    sent_live: list[int] = []
    lost: dict[int, int] = {}  # frame -> wall time it was sent to nobody (ns)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_connect(env, logs[0]))
        await fake.wait_subscribed(CHANNELS, 60)
        await fake.broadcast(ticker())
        for i in range(50):
            assert await fake.broadcast(liquidation(i)) == 1
            sent_live.append(i)
            await asyncio.sleep(0.01)
        await tail.collect(lambda out: len(out["ticks.liquidation.v1"]) >= 50)
        killed_ns = time.time_ns()
        procs[0].send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(procs[0].wait, 10) == -signal.SIGKILL
        fake.subscriptions.clear()
        # the venue goes on without us past the next minute boundary (a candle closes unseen)
        boundary_ns = (time.time_ns() // 60_000_000_000 + 1) * 60_000_000_000
        i = 50
        while time.time_ns() < boundary_ns + 1_000_000_000:
            assert await fake.broadcast(liquidation(i)) == 0
            lost[i] = time.time_ns()
            i += 1
            await asyncio.sleep(0.5)
        procs.append(start_connect(env, logs[1]))
        await fake.wait_subscribed(CHANNELS, 60)
        for j in range(i, i + 30):
            assert await fake.broadcast(liquidation(j)) == 1
            sent_live.append(j)
            await asyncio.sleep(0.01)

        def complete(out: dict[str, list[Any]]) -> bool:
            return (
                len(out["ticks.liquidation.v1"]) >= len(sent_live)
                and len(out["ticks.gap.v1"]) >= len(CHANNELS)
                and any(b'"trade"' in (r.value or b"") for r in out["ticks.price.v1"])
            )

        await tail.collect(complete, timeout_s=90)
        await asyncio.sleep(2)  # anything extra (a duplicate, a resurrected frame) lands now
        got = await tail.collect(settled(complete), timeout_s=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 60)
        await fake.stop()
        await rest.stop()
        broker.stop(home)
    text = "\n".join(p.read_text()[-3000:] for p in logs)

    liqs = [decode(Liquidation, r.value) for r in got["ticks.liquidation.v1"]]
    frames = sorted((e.ts_event_ns // 1_000_000 - T0_MS) for e in liqs)
    assert frames == sorted(sent_live), text  # each live frame once; no lost frame resurrected
    by_frame = {e.ts_event_ns // 1_000_000 - T0_MS: e for e in liqs}
    assert (by_frame[7].liquidated_side, by_frame[7].qty_base) == ("long", 107.0)
    before = [by_frame[i] for i in sent_live if i < 50]
    assert max(e.ts_recv_ns for e in before) < killed_ns
    after = [by_frame[i] for i in sent_live if i >= 50]

    gaps = [decode(GapMarker, r.value) for r in got["ticks.gap.v1"]]
    assert sorted(g.channel for g in gaps) == sorted(CHANNELS), gaps  # one per channel
    assert {(g.venue, g.reason) for g in gaps} == {("bybit", "restart")}
    prices = [decode(PriceTick, r.value) for r in got["ticks.price.v1"]]
    # where the dead process stopped: the newest receive time it published
    last_published = max(e.ts_recv_ns for e in [*before, *prices] if e.ts_recv_ns < killed_ns)
    for g in gaps:
        assert g.from_ns == last_published, (g, last_published)  # where the dead process stopped
        assert g.to_ns <= after[0].ts_recv_ns  # the new process's first data frame closes it
        assert g.to_ns > max(lost.values())
    assert all(gaps[0].from_ns < t < gaps[0].to_ns for t in lost.values())  # the hole is marked
    assert "bybit: last published" in text, text

    # the candle that closed inside the gap is backfilled from REST as a trade tick
    candle_open_ms = boundary_ns // 1_000_000 - 60_000
    backfilled = [
        t for t in prices if t.kind == "trade" and t.ts_event_ns == boundary_ns - 1_000_000
    ]
    assert backfilled, [(t.kind, t.ts_event_ns) for t in prices]
    expected_close = closes[(candle_open_ms - (now_min - 10 * 60_000)) // 60_000]
    assert {t.price for t in backfilled} == {expected_close}
    gap_from_ms = gaps[0].from_ns // 1_000_000
    assert any(
        path.startswith("/v5/market/kline")
        and int(q.get("start", -1)) <= gap_from_ms
        and int(q.get("end", 0)) >= boundary_ns // 1_000_000 - 1
        for path, q in rest.requests
    ), rest.requests


def settled(cond: Callable[[dict[str, list[Any]]], bool]) -> Callable[[dict[str, list[Any]]], bool]:
    """``cond`` holds and two reads in a row brought nothing new."""
    sizes: list[int] = []

    def until(out: dict[str, list[Any]]) -> bool:
        sizes.append(sum(map(len, out.values())))
        return cond(out) and len(sizes) >= 3 and sizes[-1] == sizes[-2] == sizes[-3]

    return until
