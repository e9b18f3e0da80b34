"""``firesale backtest`` end to end through the CLI: golden flags on real history excerpts,
the output files' schema, the self-contained report, sessions and liquidation timing."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from streams.backtest import run_backtest
from streams.backtest_csv import NS_PER_S, parse_ts
from streams.cli import app

HISTORY = Path(__file__).resolve().parents[1] / "fixtures" / "history"
TYPES = {
    "cosell.start", "cosell.update", "cosell.end", "liquidation.cascade.start",
    "liquidation.cascade.peak", "liquidation.cascade.end", "funding.flip",
    "funding.extreme.start", "funding.extreme.end",
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    out: Path
    stdout: str
    signals: list[dict[str, Any]]
    bars: list[dict[str, Any]]

    def starts(self) -> list[str]:
        return [s["ts"] for s in self.signals if s["type"] == "cosell.start"]

    def scores(self, lo: str, hi: str) -> list[float | None]:
        return [b["score"] for b in self.bars if lo <= b["ts"] <= hi]


def backtest(out: Path, *args: str) -> Run:
    result = CliRunner().invoke(app, ["backtest", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    read = lambda name: [orjson.loads(x) for x in (out / name).read_bytes().splitlines()]  # noqa: E731
    return Run(out, result.stdout, read("signals.jsonl"), read("bars.jsonl"))


def episode(tmp: pytest.TempPathFactory, name: str, *extra: str) -> Run:
    args = ["--bars", str(HISTORY / f"bars_{name}.csv")]
    for flag, prefix in (("--liquidations", "liq"), ("--funding", "fund")):
        if (HISTORY / f"{prefix}_{name}.csv").exists():
            args += [flag, str(HISTORY / f"{prefix}_{name}.csv")]
    return backtest(tmp.mktemp(name), *args, *extra)


@pytest.fixture(scope="module")
def oct10(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return episode(tmp_path_factory, "2025-10-10")


@pytest.fixture(scope="module")
def daily(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return episode(tmp_path_factory, "daily-2024-12_2025-11")


# --------------------------------------------------------------------------- golden runs


@pytest.mark.slow
def test_golden_2025_10_10_flags_minutes_before_the_crash(oct10: Run) -> None:
    late = [t for t in oct10.starts() if t >= "2025-10-10T20:00"]
    assert late == ["2025-10-10T20:55:00Z"]
    crash = oct10.scores("2025-10-10T21:00", "2025-10-10T21:30:00Z")
    assert len(crash) == 7
    assert min(s for s in crash if s is not None) > 0.85
    (end,) = [
        s for s in oct10.signals
        if s["type"] == "cosell.end" and s["episode_start_ns"] == parse_ts("2025-10-10T20:55Z")
    ]  # fmt: skip
    assert end["peak_score"] > 0.95
    assert end["min_cum_return"] < -0.3  # SOL's 30-minute log return reached -33 %
    assert end["duration_s"] == 45 * 60
    # the 4h CoinGlass buckets are cascade evidence (delivered at the bucket's end), not score
    cascades = [s for s in oct10.signals if s["type"] == "liquidation.cascade.start"]
    sol = [c for c in cascades if c["asset"] == "SOL" and c["ts"] == "2025-10-11T00:00:00Z"]
    assert {c["side"] for c in sol} == {"long", "short"}
    assert all(b["liq"] is None for b in oct10.bars)
    assert "co-selling episodes: 3" in oct10.stdout


@pytest.mark.slow
def test_golden_2025_11_04_sell_off_flags(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = episode(tmp_path_factory, "2025-11-04")
    on_day = [t[11:16] for t in run.starts() if t.startswith("2025-11-04")]
    assert on_day == ["05:30", "21:30"]


@pytest.mark.slow
def test_golden_calm_2025_09_stays_quiet(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = episode(tmp_path_factory, "calm-2025-09")
    assert not any(s["type"].startswith("cosell.") for s in run.signals)
    calm = [s for s in run.scores("2025-09-08", "2025-09-21") if s is not None]
    assert len(calm) > 0.99 * 13 * 288
    assert max(calm) < 0.65


@pytest.mark.slow
def test_golden_daily_cross_asset_on_trading_days(daily: Run) -> None:
    assert daily.starts() == ["2025-04-07T00:00:00Z", "2025-10-10T00:00:00Z"]
    apr = next(s for s in daily.signals if s["type"] == "cosell.start")
    assert set(apr["classes_hit"]) == {"crypto", "equity", "metal"}
    oct_ = [s for s in daily.signals if s["id"] == "cosell.start:1760054400000000000"]
    assert {x["asset"] for x in oct_[0]["selling"]} == {"BTC", "ETH", "SOL"}
    # common calendar: only days where crypto, equities and gold all have a close
    days = [datetime.fromisoformat(b["ts"]).weekday() for b in daily.bars]
    assert len(days) == 249
    assert max(days) == 4  # no Saturday or Sunday bar
    first_monday = next(b for b in daily.bars if b["ts"] == "2024-12-09T00:00:00Z")
    assert all(v is not None for v in first_monday["returns"].values())  # Fri → Mon spanned


# --------------------------------------------------------------------------- outputs


def test_output_schema_every_line_parses_with_type_and_iso_ts(oct10: Run) -> None:
    assert len(oct10.bars) == 2016
    assert {b["type"] for b in oct10.bars} == {"correlation.bar"}
    times = [parse_ts(b["ts"]) for b in oct10.bars]
    assert times == [times[0] + k * 300 * NS_PER_S for k in range(2016)]
    assert all(b["bar_start_ns"] == t for b, t in zip(oct10.bars, times, strict=True))
    assert oct10.signals
    for s in oct10.signals:
        assert s["type"] in TYPES
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", s["ts"])
        assert s["id"].startswith(s["type"])
        if s["type"].startswith("cosell."):
            assert parse_ts(s["ts"]) == s["bar_start_ns"]
        else:
            assert parse_ts(s["ts"]) == s["ts_ns"]
    b = oct10.bars[1500]
    assert set(b) >= {
        "corr_avg", "corr_avg_adjusted", "corr_avg_ew", "corr_by_class_pair", "absorption_ratio",
        "turbulence", "correlation_surprise", "score", "active", "returns", "long_liq_z",
    }  # fmt: skip


def test_report_is_self_contained_with_five_png_charts(oct10: Run) -> None:
    page = (oct10.out / "report.html").read_text()
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(pngs) == 5
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert "2025-10-10T20:55:00Z" in page  # the episodes table
    for title in ("Normalised prices", "Co-selling score", "class pair", "Absorption ratio",
                  "Liquidations by side"):  # fmt: skip
        assert title in page


# --------------------------------------------------------------------------- sessions, timing


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_closed_session_gives_no_return_and_never_a_zero(tmp_path: Path) -> None:
    rows = []
    for k in range(12):
        ts = 1_760_000_000 + 300 * k
        rows.append(f"{ts},BTC,crypto,{100 + k}")
        if not 4 <= k <= 6:  # the equity is closed for three bars
            rows.append(f"{ts},SPY,equity,{50 + 0.5 * k}")
    bars = write(tmp_path / "b.csv", "ts,asset,asset_class,close", rows)
    run = backtest(tmp_path / "out", "--bars", str(bars))
    spy = [b["returns"]["SPY"] for b in run.bars]
    assert spy[:1] == [None]
    assert all(v is not None and v > 0 for v in spy[1:4] + spy[8:])
    assert spy[4:8] == [None, None, None, None]  # closed, then the first bar after the gap
    assert "12 bars of 300 s (inferred: median spacing)" in run.stdout


def test_liquidation_buckets_arrive_when_complete_events_when_they_happen(
    tmp_path: Path,
) -> None:
    t0 = 1_760_000_400  # 2025-10-09T09:00:00Z: hourly bars; 4h buckets on the epoch grid
    bars = write(
        tmp_path / "b.csv",
        "ts,asset,asset_class,close",
        [f"{t0 + 3600 * k},BTC,crypto,{100 + k % 3}" for k in range(30)],
    )
    h4 = 14_400
    base = (t0 // h4 + 1) * h4
    liq = write(
        tmp_path / "l.csv",
        "ts,asset,side,notional_usd",
        [f"{base + h4 * k},BTC,long,{1e6 + k}" for k in range(4)],
    )
    result = run_backtest(bars, tmp_path / "o", liq, report=False)
    assert result.liq_bucket_s == h4
    first = next(b for b in _records(tmp_path / "o") if b["long_liq_notional_usd"])
    assert parse_ts(first["ts"]) + 3600 * NS_PER_S == (base + h4) * NS_PER_S  # bar ends then
    result = run_backtest(bars, tmp_path / "e", liq, liq_bucket="none", report=False)
    assert result.liq_bucket_s is None
    first = next(b for b in _records(tmp_path / "e") if b["long_liq_notional_usd"])
    start = parse_ts(first["ts"])
    assert start < base * NS_PER_S <= start + 3600 * NS_PER_S  # (start, end] holds the event


def _records(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (out / "bars.jsonl").read_bytes().splitlines()]


def test_config_universe_overrides_classes_and_order(tmp_path: Path) -> None:
    rows = [
        f"{1_760_000_000 + 86_400 * k},{a},other,{100 + k + i}"
        for k in range(5)
        for i, a in enumerate(("SPY", "GOLD", "BTC"))
    ]
    bars = write(tmp_path / "b.csv", "ts,asset,asset_class,close", rows)
    toml = tmp_path / "u.toml"
    toml.write_text(
        '[assets.BTC]\nclass = "crypto"\nsymbols = { binance = "BTCUSDT" }\n'
        '[assets.GOLD]\nclass = "metal"\nsymbols = { binance = "XAUUSDT" }\n'
    )
    result = run_backtest(bars, tmp_path / "o", config=toml, calendar="union", report=False)
    assert result.bars.assets == ("BTC", "GOLD", "SPY")
    assert result.bars.classes == ("crypto", "metal", "other")
