"""Pipeline faults on the real broker and real worker processes: nothing a consumer sees changes.

The seeded fire-sale scenario (407 five-minute bars, 7 assets) goes through the connectors'
Kafka sink into a broker of the case's own; ``firesale worker`` processes consume it. The
reference run is undisturbed: the whole scenario in the log, one worker. Each case disturbs
one run and then requires, for every signal topic, exactly the reference's sequence after
dropping duplicates by event id — same ids, same order, same payloads (emit time aside) — up
to the last bar the watermark closes. Duplicates are allowed (at-least-once) and counted.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest

from tests.faults.pipeline_run import (
    N_ASSETS,
    N_BARS,
    SIGNAL_TOPICS,
    Body,
    Run,
    dedup,
    differences,
    duplicates,
)

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

N_ASSET_BARS = N_BARS * N_ASSETS


@pytest.fixture(scope="module")
async def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Body]]:
    """The undisturbed run: the whole scenario in the log, then one worker."""
    run = await Run.create(tmp_path_factory.mktemp("faults"), "reference")
    try:
        await run.produce()
        run.start_worker()
        got = await run.collect()
    finally:
        run.close()
    bars = dedup(got["signals.correlation.v1"])
    assert len(bars) == N_BARS  # every bar up to the cut-off, once
    types = {b[1] for es in got.values() for b in dedup(es)}
    assert {"cosell.start", "cosell.end", "liquidation.cascade.start"} <= types, types
    return {t: dedup(got[t]) for t in SIGNAL_TOPICS}


def assert_same(got: dict[str, list[Body]], expected: dict[str, list[Body]], run: Run) -> None:
    for t in SIGNAL_TOPICS:
        assert got[t] == expected[t], f"{t}: {differences(got[t], expected[t])}\n{run.log_text()}"


async def test_worker_sigkill_and_restart(tmp_path: Path, reference: dict[str, list[Body]]) -> None:
    run = await Run.create(tmp_path, "kill")
    try:
        await run.produce()
        first = run.start_worker()
        killed: list[int] = []

        def kill_at(n: int) -> None:
            if not killed and n >= 0.4 * N_ASSET_BARS:
                first.send_signal(signal.SIGKILL)
                killed.append(n)
                run.start_worker()

        got = await run.collect(kill_at)
        assert killed, "the worker was never killed"
        assert first.wait(10) == -signal.SIGKILL
    finally:
        run.close()
    replacement = run.logs[1].read_text()
    assert "market stage rebuilt" in replacement, run.log_text()
    assert re.search(r"bar builder restored \(checkpoint\)", replacement), run.log_text()
    assert_same({t: dedup(got[t]) for t in SIGNAL_TOPICS}, reference, run)
    print(f"\nkilled after {killed[0]} asset bars; duplicates: "
          f"{duplicates(got['signals.correlation.v1'])} correlation records")  # fmt: skip


async def test_owner_of_the_market_stage_killed_survivor_takes_over(
    tmp_path: Path, reference: dict[str, list[Body]]
) -> None:
    run = await Run.create(tmp_path, "scale")
    try:
        await run.produce()
        workers = [run.start_worker(), run.start_worker()]
        victim: list[int] = []

        def kill_owner(n: int) -> None:
            if victim or n < 0.4 * N_ASSET_BARS:
                return
            for i, log in enumerate(run.logs):
                if "market stage rebuilt" in log.read_text():
                    workers[i].send_signal(signal.SIGKILL)
                    victim.append(i)
                    return

        got = await run.collect(kill_owner)
        assert victim, run.log_text()
    finally:
        run.close()
    survivor = run.logs[1 - victim[0]].read_text()
    before = run.logs[victim[0]].read_text()
    # both held price partitions before the kill; the survivor took the market stage over
    assert "ticks.price.v1" in before
    assert "ticks.price.v1" in survivor
    assert "market stage rebuilt" in survivor, run.log_text()
    assert_same({t: dedup(got[t]) for t in SIGNAL_TOPICS}, reference, run)


async def test_both_workers_killed_one_after_the_other(
    tmp_path: Path, reference: dict[str, list[Body]]
) -> None:
    """Two workers; the first is SIGKILLed at 30 % and restarted (as a process supervisor
    would), the second at 60 % and restarted: every partition changes owner at least once."""
    run = await Run.create(tmp_path, "both")
    try:
        await run.produce()
        workers = [run.start_worker(), run.start_worker()]
        kills: list[tuple[int, int]] = []

        def kill_in_turn(n: int) -> None:
            i = len(kills)
            if i < 2 and n >= (0.3, 0.6)[i] * N_ASSET_BARS:
                workers[i].send_signal(signal.SIGKILL)
                kills.append((i, n))
                run.start_worker()

        got = await run.collect(kill_in_turn)
        assert [i for i, _ in kills] == [0, 1], kills
        assert [workers[i].wait(10) for i in (0, 1)] == [-signal.SIGKILL] * 2
    finally:
        run.close()
    restarted = [p.read_text() for p in run.logs[2:]]
    assert any("market stage rebuilt" in text for text in restarted), run.log_text()
    assert_same({t: dedup(got[t]) for t in SIGNAL_TOPICS}, reference, run)


async def test_broker_down_30s_mid_stream(tmp_path: Path, reference: dict[str, list[Body]]) -> None:
    """The scenario streams at 1,500× through the connectors' sink into two running workers;
    the broker is stopped for 30 s a quarter of the way in and restarted on the same port.
    The sink buffers and resumes, the workers reconnect, and no bar closes on the idle
    timeout while the broker is away (its ticks are waiting in the sink's buffer)."""
    run = await Run.create(tmp_path, "outage")
    outage: list[float] = []
    try:
        run.start_worker()
        run.start_worker()
        await asyncio.sleep(5)  # the group forms before the data flows
        producer = asyncio.create_task(run.produce(speed=1500))

        async def take_the_broker_away() -> None:
            await asyncio.sleep(20)
            t = time.monotonic()
            await asyncio.to_thread(run.stop_broker)
            await asyncio.sleep(30)
            await asyncio.to_thread(run.start_broker)
            outage.append(time.monotonic() - t)

        fault = asyncio.create_task(take_the_broker_away())
        got = await run.collect(timeout_s=500)
        await fault
        await asyncio.wait_for(producer, 120)  # delivered everything, dropped nothing
    finally:
        run.close()
    assert outage, "the broker was never restarted"
    assert outage[0] >= 30
    assert all(p.returncode in (0, -signal.SIGTERM) for p in run.procs), run.log_text()
    assert_same({t: dedup(got[t]) for t in SIGNAL_TOPICS}, reference, run)
    print(f"\nbroker away {outage[0]:.1f} s; duplicates: "
          f"{duplicates(got['signals.correlation.v1'])} correlation records")  # fmt: skip
