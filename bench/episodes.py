"""What the detector says on every episode of ``../shared/data/history``, at every resolution.

Run ``.venv/bin/python -m bench.episodes [--history DIR] [--out DIR]``. Each data set (one
resolution, one set of assets) is converted to the backtest's long CSVs and run through
:func:`streams.backtest.run_backtest`, the code path of ``firesale backtest``, with the
parameters it picks for that bar interval (:meth:`signals.detector.DetectorParams.for_bar_interval`;
daily bars: :meth:`~signals.detector.DetectorParams.daily`, on the common trading calendar).
``--out`` keeps every run's ``signals.jsonl``, ``bars.jsonl`` and ``report.html``.

Printed: per episode and resolution, the first flag start against the known date, the peak
score inside the episode window and the number of flags there; per calm stretch, the false
alarms; per data set, the flags outside every listed window. Skips with a message when the
history folder is absent (``FIRESALE_HISTORY`` or ``--history`` point elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from streams.backtest import BacktestResult, run_backtest
from streams.backtest_csv import NS_PER_S, format_ts, parse_ts

DEFAULT_HISTORY = Path(__file__).resolve().parents[2] / "shared" / "data" / "history"
LEAD_DAYS = 2  # a flag this many days before an episode window still counts for it


@dataclass(frozen=True, slots=True)
class Window:
    """A stress episode (``known``: its key date, UTC) or a calm stretch (``known`` empty)."""

    name: str
    first_day: str
    last_day: str
    known: str = ""

    def bounds_ns(self, lead_days: int = 0) -> tuple[int, int]:
        lo = parse_ts(self.first_day) - lead_days * 86_400 * NS_PER_S
        return lo, parse_ts(self.last_day) + 86_400 * NS_PER_S


EPISODES = (
    Window("2020-03 dash for cash", "2020-03-09", "2020-03-20", "2020-03-12"),
    Window("2022-06 Celsius/3AC", "2022-06-10", "2022-06-20", "2022-06-13"),
    Window("2022-11 FTX", "2022-11-06", "2022-11-12", "2022-11-08"),
    Window("2023-03 SVB/USDC", "2023-03-08", "2023-03-15", "2023-03-10"),
    Window("2024-08 yen carry", "2024-08-01", "2024-08-09", "2024-08-05"),
    Window("2025-04 tariffs", "2025-04-02", "2025-04-11", "2025-04-03"),
    Window("2025-10 cascade", "2025-10-09", "2025-10-12", "2025-10-10T21:00"),
    Window("2025-11 funding squeeze", "2025-11-03", "2025-11-21", "2025-11-04"),
)
CALM = (
    Window("calm 2024-07", "2024-07-01", "2024-07-31"),
    Window("calm 2025-09-01..10-08", "2025-09-01", "2025-10-08"),
    Window("calm 2025-12..2026-02", "2025-12-01", "2026-02-19"),
)
CRYPTO = ("BTC", "ETH", "SOL")
LIQ_4H = "coinglass_liquidations_{a}_4h_2024-11-13_2025-11-14.csv"
LIQ_1D = "coinglass_liquidations_{a}_1d_2020-12-23_2025-05-11.csv"


@dataclass(frozen=True, slots=True)
class Dataset:
    """One backtest: bar files (asset, class, path), optional liquidations and funding."""

    name: str
    resolution: str
    bars: tuple[tuple[str, str, str], ...]
    liq: str = ""  # "4h" | "daily" | ""
    funding: bool = False


def _intraday(
    kind: str, span: str, assets: tuple[str, ...] = CRYPTO
) -> tuple[tuple[str, str, str], ...]:
    res = span.split("_")[0]
    rest = span.split("_", 1)[1]
    return tuple((a, "crypto", f"intraday/binance_{kind}_{a}USDT_{res}_{rest}.csv") for a in assets)


DATASETS = (
    Dataset(
        "daily BTC ETH SOL SPY QQQ GOLD 2019-2026", "1d",
        (*((a, "crypto", f"daily/yahoo_crypto_{a}-USD_1d.csv") for a in CRYPTO),
         ("SPY", "equity", "daily/yahoo_equity_SPY_1d.csv"),
         ("QQQ", "equity", "daily/yahoo_equity_QQQ_1d.csv"),
         ("GOLD", "metal", "daily/yahoo_gold_GC_F_future_1d.csv")),
        liq="daily",
    ),
    Dataset("1h BTC spot 2021-06..2026-01", "1h",
            _intraday("spot", "1h_2021-06-01_2026-01-31", ("BTC",))),
    Dataset("1h BTC ETH SOL spot 2024-09..2026-02", "1h",
            _intraday("spot", "1h_2024-09-14_2026-02-19"), liq="4h", funding=True),
    Dataset("5m BTC spot 2024-07..08", "5m",
            _intraday("spot", "5m_2024-07-01_2024-08-31", ("BTC",))),
    Dataset("5m BTC ETH SOL perp 2025-03..04", "5m",
            _intraday("usdm_perp", "5m_2025-03-17_2025-04-20"), liq="4h", funding=True),
    Dataset("5m BTC ETH SOL perp 2025-09..11", "5m",
            _intraday("usdm_perp", "5m_2025-09-01_2025-11-30"), liq="4h", funding=True),
)  # fmt: skip


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _time(row: dict[str, str]) -> str:
    return row.get("timestamp_utc") or row["date"]


def write_inputs(ds: Dataset, history: Path, tmp: Path) -> tuple[Path, Path | None, Path | None]:
    """The data set as ``BARS.csv`` (+ ``LIQ.csv``, ``FUND.csv``) in the backtest format."""
    bars = tmp / "bars.csv"
    with bars.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "asset", "asset_class", "close"])
        for asset, cls, rel in ds.bars:
            for row in _read(history / rel):
                if row["close"]:
                    w.writerow([_time(row), asset, cls, row["close"]])
    liq = tmp / "liq.csv" if ds.liq else None
    if liq is not None:
        with liq.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ts", "asset", "side", "notional_usd"])
            w.writerows(_liquidations(history, ds.liq))
    fund = tmp / "fund.csv" if ds.funding else None
    if fund is not None:
        with fund.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ts", "asset", "rate_annualized"])
            for a in CRYPTO:
                rel = f"derivatives/binance_usdm_funding_{a}USDT_2024-12-31_2026-02-19.csv"
                for row in _read(history / rel):
                    w.writerow([row["timestamp_utc"], a, float(row["funding_rate"]) * 3 * 365])
    return bars, liq, fund


def _liquidations(history: Path, kind: str) -> list[list[object]]:
    """CoinGlass aggregates: 4h buckets, or daily (the 1d files to 2025-05-11, then the 4h
    buckets summed over complete UTC days)."""
    out: list[list[object]] = []
    for a in CRYPTO:
        h4 = _read(
            history / f"liquidations/coinglass_liquidations_{a}_4h_2024-11-13_2025-11-14.csv"
        )
        if kind == "4h":
            for row in h4:
                for side in ("long", "short"):
                    out.append([row["timestamp_utc"], a, side,
                                row[f"aggregated_{side}_liquidation_usd"]])  # fmt: skip
            continue
        daily = _read(
            history / f"liquidations/coinglass_liquidations_{a}_1d_2020-12-23_2025-05-11.csv"
        )
        last = daily[-1]["date"]
        days: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for row in h4:
            day = row["timestamp_utc"][:10]
            if day > last:
                acc = days[day]
                acc[0] += float(row["aggregated_long_liquidation_usd"])
                acc[1] += float(row["aggregated_short_liquidation_usd"])
                acc[2] += 1
        rows: list[tuple[str, object, object]] = [
            (r["date"], r["aggregated_long_liquidation_usd"], r["aggregated_short_liquidation_usd"])
            for r in daily
        ]
        rows += [(d, v[0], v[1]) for d, v in sorted(days.items()) if v[2] == 6]
        for day, long_usd, short_usd in rows:
            out += [[day, a, "long", long_usd], [day, a, "short", short_usd]]
    return out


@dataclass(frozen=True, slots=True)
class Row:
    window: str
    dataset: str
    resolution: str
    assets: str
    known: str
    first_flag: str
    lag: str
    peak: str
    flags: int
    dates: str


def _span(result: BacktestResult, w: Window, calm: bool) -> tuple[int, int] | None:
    """The part of the window that the run covers warm: an episode needs all of it (from
    ``LEAD_DAYS`` before), a calm stretch at least a week of it."""
    times = result.bars.times_ns
    lo, hi = w.bounds_ns(0 if calm else LEAD_DAYS)
    warm = int(times[0]) + result.params.cosell.warmup_bars * result.bars.interval_s * NS_PER_S
    end = int(times[-1]) + result.bars.interval_s * NS_PER_S
    if calm:
        lo, hi = max(lo, warm), min(hi, end)
        return (lo, hi) if hi - lo >= 7 * 86_400 * NS_PER_S else None
    return (lo, hi) if warm <= lo and end >= hi else None


def _short(ts_ns: int, resolution: str) -> str:
    text = format_ts(ts_ns)
    return text[:10] if resolution == "1d" else text[:16].replace("T", " ")


def _lag(start_ns: int, known: str) -> str:
    delta = timedelta(microseconds=(start_ns - parse_ts(known)) // 1000)
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:+.1f} d" if abs(hours) >= 48 else f"{hours:+.1f} h"


def evaluate(ds: Dataset, result: BacktestResult) -> tuple[list[Row], list[Row], list[str]]:
    """Episode rows, calm rows and the flags outside every window."""
    b = result.bars
    assets = f"{len(b.assets)}/{len(set(b.classes))}"
    times = b.times_ns
    starts = [ep.start_ns for ep in result.episodes]
    used: set[int] = set()
    rows, calm = [], []
    for w in (*EPISODES, *CALM):
        is_calm = not w.known
        span = _span(result, w, is_calm)
        if span is None:
            continue
        lo, hi = span
        inside = [s for s in starts if lo <= s < hi]
        used.update(inside)
        scores = result.score[(times >= (lo if is_calm else w.bounds_ns()[0])) & (times < hi)]
        peak = f"{np.nanmax(scores):.2f}" if np.isfinite(scores).any() else "-"
        if is_calm:
            days = f"{(hi - lo) / 86_400 / NS_PER_S:.0f} d from {_short(lo, '1d')}"
            calm.append(Row(
                w.name, ds.name, ds.resolution, assets, days, "", "", peak, len(inside),
                ", ".join(_short(s, ds.resolution) for s in inside[:8]),
            ))  # fmt: skip
            continue
        first = min(inside) if inside else None
        rows.append(Row(
            w.name, ds.name, ds.resolution, assets, w.known,
            _short(first, ds.resolution) if first is not None else "MISSED",
            _lag(first, w.known) if first is not None else "", peak, len(inside),
            ", ".join(_short(s, ds.resolution) for s in inside[1:6]),
        ))  # fmt: skip
    other = [_short(s, ds.resolution) for s in starts if s not in used]
    return rows, calm, other


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]  # fmt: skip

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(n) for c, n in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (n + 2) for n in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("FIRESALE_HISTORY")
    parser.add_argument("--history", type=Path, default=Path(env) if env else DEFAULT_HISTORY)
    parser.add_argument("--out", type=Path, help="keep each run's outputs and report here")
    parser.add_argument("--only", default="", help="run the data sets whose name contains this")
    args = parser.parse_args(argv)
    history: Path = args.history
    if not (history / "README.md").is_file():
        print(f"bench.episodes: skipped: no history data in {history} (set FIRESALE_HISTORY "
              "or --history to ../shared/data/history)")  # fmt: skip
        return 0
    rows: list[Row] = []
    calm: list[Row] = []
    others: list[tuple[str, list[str]]] = []
    for ds in DATASETS:
        if args.only not in ds.name:
            continue
        started = time.process_time()
        with tempfile.TemporaryDirectory(prefix="firesale-bench-") as tmp:
            bars, liq, fund = write_inputs(ds, history, Path(tmp))
            keep = args.out is not None
            out = args.out / ds.name.replace(" ", "_") if keep else Path(tmp) / "out"
            result = run_backtest(bars, out, liq, fund, report=keep)
        took = time.process_time() - started
        n = result.bars.times_ns.size
        print(f"ran {ds.name}: {n} bars, {len(result.episodes)} flags, {took:.1f} s CPU "
              f"({1e6 * took / n:.0f} µs/bar)", file=sys.stderr)  # fmt: skip
        r, c, o = evaluate(ds, result)
        rows += r
        calm += c
        others.append((ds.name, o))
    print(f"\nEpisodes (flag starts from {LEAD_DAYS} days before the window count):\n")
    print(_table(
        ["episode", "data", "assets/classes", "known", "first flag start", "lag", "peak",
         "flags", "later starts"],
        [[r.window, r.dataset, r.assets, r.known, r.first_flag, r.lag, r.peak, str(r.flags),
          r.dates] for r in rows],
    ))  # fmt: skip
    print("\nCalm stretches (every flag is a false alarm):\n")
    print(_table(
        ["calm stretch", "data", "assets/classes", "warm span", "max score", "false alarms",
         "starts"],
        [[r.window, r.dataset, r.assets, r.known, r.peak, str(r.flags), r.dates] for r in calm],
    ))  # fmt: skip
    print("\nFlags outside every listed window (unlisted stress or false alarms):\n")
    for name, starts in others:
        print(f"- {name}: {len(starts)}" + (f": {', '.join(starts)}" if starts else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
