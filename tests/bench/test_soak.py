"""The soak tool: its trend and lag figures against series with known answers, and a short real
soak (own broker, ``python -m streams run --scenario fire-sale`` and its worker) checked end to
end: samples on schedule, plausible RSS, consumer lag read from the worker's real /metrics, the
trends recomputed from the CSV, progress bounded by the event time covered, a clean stop."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.soak import (
    CONSUMED_PARTITIONS,
    CONSUMED_TOPICS,
    WARMUP_FRACTION,
    Run,
    Sample,
    lag_stats,
    main,
    markdown,
    net_event_lag,
    read_csv,
    slope_per_hour,
    summarize,
    trend,
    worker_figures,
)
from streams.topics import topic

HOUR_S = 3600.0


def _sample(t_s: float, **values: float) -> Sample:
    base: dict[str, Any] = {
        "rss_run_mib": 70.0,
        "rss_worker_mib": 90.0,
        "rss_broker_mib": 300.0,
        "consumer_lag_records": 0.0,
        "lag_partitions": 7,
        "event_lag_price_s": -9.0 * t_s,
        "event_lag_max_s": -9.0 * t_s,
        "ticks_produced": 30.0 * t_s,
        "cross_sections": t_s // 6,
        "signal_events": 0.0,
    }
    return Sample(t_s=t_s, **(base | values))


def test_slope_of_a_line_is_its_slope_and_of_noise_the_least_squares_fit() -> None:
    t = np.arange(0.0, HOUR_S + 1, 10.0)
    assert slope_per_hour(t.tolist(), (200.0 + 12.5 * t / HOUR_S).tolist()) == pytest.approx(
        12.5, abs=1e-9
    )
    rng = np.random.default_rng(3)
    noisy = 200.0 - 4.0 * t / HOUR_S + rng.normal(0.0, 2.0, t.size)
    oracle = np.polyfit(t / HOUR_S, noisy, 1)[0]
    assert slope_per_hour(t.tolist(), noisy.tolist()) == pytest.approx(oracle, abs=1e-9)
    assert math.isnan(slope_per_hour([5.0, 5.0], [1.0, 2.0]))  # no time span, no slope


def test_synthetic_soak_flags_a_leak_and_ignores_the_warm_up() -> None:
    """32 min, a sample every 10 s: the worker climbs 40 → 90 MiB during the warm-up, then only
    wobbles; the run process leaks 30 MiB/h; the lag stays near 0 with one spike of 50."""
    run_s = 32 * 60.0
    samples = []
    for k in range(1, 193):
        t = 10.0 * k
        worker = 40.0 + 50.0 * t / 192.0 if t < 192.0 else 90.0 + 0.5 * (k % 2)
        lag = 50.0 if k == 100 else float(k % 3 == 0)
        samples.append(
            _sample(
                t,
                rss_worker_mib=worker,
                rss_run_mib=70.0 + 30.0 * t / HOUR_S,
                consumer_lag_records=lag,
            )
        )
    w = trend(samples, "rss_worker_mib", run_s)
    assert (w.start, w.end, w.peak) == (90.0, 90.0, 90.5)  # start: first sample at t >= 192 s
    assert abs(w.slope_per_h) < 0.1  # the warm-up ramp (~940 MiB/h) is left out
    r = trend(samples, "rss_run_mib", run_s)
    assert r.slope_per_h == pytest.approx(30.0, abs=1e-9)
    assert r.change_over_run == pytest.approx(16.0, abs=1e-9)  # 30 MiB/h x 32 min
    assert r.observed_change == pytest.approx(30.0 * (1920.0 - 200.0) / HOUR_S, abs=1e-9)
    ticks_per_s = 30.0
    summary = summarize(Run(samples, run_s, 10.0, 10.0, "fire-sale", 60, {}, 0, 0, 1.0))
    late_lags = np.array([s.consumer_lag_records for s in samples if s.t_s >= 192.0])
    lag = summary["consumer_lag_records"]
    assert lag["p95"] == pytest.approx(np.percentile(late_lags, 95), abs=1e-12)
    assert (lag["max"], lag["final"], lag["bound"]) == (50.0, 1.0, ticks_per_s * 6)
    assert summary["verdicts"] == [
        "run RSS: GROWTH TREND (|+30.00 MiB/h| x 0.533 h = 16.00 MiB >= bound 8.0 MiB)",
        f"worker RSS: no growth trend (|{w.slope_per_h:+.2f} MiB/h| x 0.533 h = "
        f"{abs(w.change_over_run):.2f} MiB < bound 8.0 MiB)",
        "consumer lag: no lag build-up (p95 1.0 < 180 records = one 60 s bar of input at "
        "30.0 ticks/s; final 1 <= 30 = 1 s of input)",
    ]
    assert summary["rss_mib"]["broker"]["bound_mib"] == pytest.approx(15.0)  # 5 % of 300 MiB
    assert "- run RSS: GROWTH TREND" in markdown(summary)


def test_a_growing_lag_is_a_build_up() -> None:
    run_s = 600.0
    samples = [_sample(10.0 * k, consumer_lag_records=4.0 * k) for k in range(1, 61)]
    stats = lag_stats(samples, [s.consumer_lag_records for s in samples], run_s)
    assert stats.slope_per_h == pytest.approx(4.0 * 360.0, abs=1e-9)  # 4 records per 10 s
    assert (stats.max, stats.final) == (240.0, 240.0)
    summary = summarize(Run(samples, run_s, 10.0, 10.0, "fire-sale", 60, {}, 0, 0, 1.0))
    assert summary["verdicts"][-1].startswith("consumer lag: LAG BUILD-UP (p95 229.2 >= 180 ")


def test_net_event_lag_removes_the_scenario_clock() -> None:
    """lag = speed × delay + c − (speed − 1) t: what is left is the delay, up to a constant."""
    speed = 10.0
    delays = [0.2, 0.2, 0.5, 0.3, 1.2]
    samples = [
        _sample(10.0 * k, event_lag_price_s=speed * d + 37.0 - (speed - 1) * 10.0 * k)
        for k, d in enumerate(delays, start=1)
    ]
    assert net_event_lag(samples, speed) == pytest.approx([0.0, 0.0, 0.3, 0.1, 1.0], abs=1e-9)


def test_worker_figures_leave_out_event_lags_never_set() -> None:
    text = (
        'firesale_consumer_lag_records{partition="0",topic="ticks.price.v1"} 3.0\n'
        'firesale_consumer_lag_records{partition="0",topic="bars.v1"} 2.0\n'
        'firesale_event_time_lag_seconds{topic="ticks.price.v1"} -50.5\n'
        'firesale_event_time_lag_seconds{topic="ticks.funding.v1"} -20.25\n'
        'firesale_event_time_lag_seconds{topic="ticks.gap.v1"} 0.0\n'
        "firesale_bars_total 12.0\n"
        'firesale_signal_events_total{type="cosell.start"} 1.0\n'
        'firesale_signal_events_total{type="cosell.end"} 1.0\n'
    )
    assert worker_figures(text) == {
        "consumer_lag_records": 5.0,
        "lag_partitions": 2.0,
        "event_lag_price_s": -50.5,
        "event_lag_max_s": -20.25,  # not the gap topic's unset 0
        "cross_sections": 12.0,
        "signal_events": 2.0,
    }


# -- a real soak ---------------------------------------------------------------------------------

SPEED, MINUTES, INTERVAL_S = 30.0, 0.75, 2.0
RUN_S = MINUTES * 60.0


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Sample], Path]:
    out = tmp_path_factory.mktemp("soak")
    argv = ["--minutes", str(MINUTES), "--speed", str(SPEED), "--interval", str(INTERVAL_S)]
    summary = main([*argv, "--out", str(out)])
    return summary, read_csv(out / "samples.csv"), out


@pytest.mark.kafka
def test_real_soak_samples_on_schedule_with_plausible_rss(
    soak: tuple[dict[str, Any], list[Sample], Path],
) -> None:
    summary, samples, _ = soak
    assert [round(s.t_s / INTERVAL_S) for s in samples] == list(range(1, 23))
    assert all(k * INTERVAL_S <= s.t_s < k * INTERVAL_S + 1.5 for k, s in enumerate(samples, 1))
    for s in samples:
        assert 20.0 < s.rss_run_mib < 1024.0, s
        assert 20.0 < s.rss_worker_mib < 1024.0, s
        assert 100.0 < s.rss_broker_mib < 2048.0, s  # a JVM with a 128-512 MB heap
    assert summary["exits"]["run"] == 0
    assert summary["exits"]["worker"] == 0
    assert summary["config"]["samples"] == 22
    assert summary["config"]["samples_after_warmup"] == 20  # t >= 4.5 s


@pytest.mark.kafka
def test_real_soak_lag_comes_from_the_workers_metrics(
    soak: tuple[dict[str, Any], list[Sample], Path],
) -> None:
    summary, samples, out = soak
    late = [s for s in samples if s.t_s >= WARMUP_FRACTION * RUN_S]
    assert CONSUMED_PARTITIONS == sum(topic(t).partitions for t in CONSUMED_TOPICS) == 7
    assert all(s.lag_partitions == CONSUMED_PARTITIONS for s in late)
    assert all(math.isfinite(s.consumer_lag_records) and s.consumer_lag_records >= 0 for s in late)
    # The last scrape, parsed here by hand: the same sum and the same partitions.
    text = (out / "worker-metrics.txt").read_text()
    found = re.findall(
        r'^firesale_consumer_lag_records\{partition="(\d+)",topic="([^"]+)"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    expected = {(t, str(p)) for t in CONSUMED_TOPICS for p in range(topic(t).partitions)}
    assert {(t, p) for p, t, _ in found} == expected
    assert sum(float(v) for *_, v in found) == samples[-1].consumer_lag_records
    price = re.search(
        r'^firesale_event_time_lag_seconds\{topic="ticks.price.v1"\} (\S+)$', text, re.M
    )
    assert price is not None
    assert float(price.group(1)) == samples[-1].event_lag_price_s
    # Event time runs SPEED x ahead: the raw gauge falls ~(SPEED - 1) s per second.
    assert summary["event_lag_price_s"]["slope_per_h"] == pytest.approx(
        -(SPEED - 1) * HOUR_S, rel=0.05
    )
    lag = summary["consumer_lag_records"]
    lags = np.array([s.consumer_lag_records for s in late])
    assert (lag["mean"], lag["max"], lag["final"]) == (lags.mean(), lags.max(), lags[-1])


@pytest.mark.kafka
def test_real_soak_trends_match_a_refit_of_the_csv(
    soak: tuple[dict[str, Any], list[Sample], Path],
) -> None:
    summary, samples, out = soak
    late = [s for s in samples if s.t_s >= WARMUP_FRACTION * RUN_S]
    t_h = np.array([s.t_s for s in late]) / HOUR_S
    for name in ("run", "worker", "broker"):
        rss = np.array([getattr(s, f"rss_{name}_mib") for s in late])
        got = summary["rss_mib"][name]
        slope = np.polyfit(t_h, rss, 1)[0]
        assert got["slope_per_h"] == pytest.approx(slope, rel=1e-9, abs=1e-9), name
        assert got["change_over_run"] == pytest.approx(slope * RUN_S / HOUR_S, abs=1e-9)
        assert (got["start"], got["end"]) == (rss[0], rss[-1])
        assert got["peak"] == max(getattr(s, f"rss_{name}_mib") for s in samples)
    assert json.loads((out / "summary.json").read_text())["verdicts"] == summary["verdicts"]
    table = (out / "summary.md").read_text()
    assert all(f"- {v}" in table for v in summary["verdicts"])


@pytest.mark.kafka
def test_real_soak_made_progress_bounded_by_event_time(
    soak: tuple[dict[str, Any], list[Sample], Path],
) -> None:
    summary, samples, _ = soak
    late = [s for s in samples if s.t_s >= WARMUP_FRACTION * RUN_S]
    ticks = [s.ticks_produced for s in late]
    assert all(b > a for a, b in itertools.pairwise(ticks))
    crosses = [s.cross_sections for s in samples]
    assert crosses == sorted(crosses)
    # One cross-section per 60 s bar of event time; the scenario clock starts on the minute
    # before the run, so at most one bar more than SPEED x wall time; start-up costs a few.
    last = samples[-1]
    covered_bars = SPEED * last.t_s / 60.0
    assert covered_bars - 8 <= last.cross_sections <= covered_bars + 1
    rate = (late[-1].ticks_produced - late[0].ticks_produced) / (late[-1].t_s - late[0].t_s)
    assert summary["records"]["ticks_per_s"] == pytest.approx(rate, rel=1e-12)
    assert summary["consumer_lag_records"]["bound"] == pytest.approx(rate * 60 / SPEED)
