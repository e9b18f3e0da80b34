"""``firesale backtest``: the live detector (:class:`signals.detector.MarketDetector`) over history.

I/O edge: read the CSVs (:mod:`streams.backtest_csv`), put the closes on the bar grid, feed
liquidations, funding and bars in time order, write ``DIR/signals.jsonl`` (events),
``DIR/bars.jsonl`` (one ``correlation.bar`` record per bar) and ``DIR/report.html``.

Decisions (README "Backtest" explains them to users):

- **Sessions**: an asset without a row at a grid time is closed there: NaN close, so no
  return, out of correlations and breadth; never forward-filled into a zero return. The first
  return after a gap spans the gap when the asset was absent for at most
  ``DetectorParams.max_gap_bars`` bars (3 for daily bars: Friday → Monday is an equity's
  daily return), and is NaN after longer gaps (intraday: an overnight or weekend move in one
  5-minute slot would be scored as a crash against 5-minute volatility).
- **Liquidations**: rows are fed in time order, before the bar whose ``(start, end]`` holds
  their delivery time. Event-level rows are delivered at ``ts``. Rows on a regular grid at
  least one bar apart (CoinGlass 4h or daily aggregates) are buckets opening at ``ts``:
  they are delivered at ``ts + bucket`` (when complete: no look-ahead) and the cascade
  detector scores the bucket sum against 42 previous buckets.
- **Funding** rows on a regular grid (settlements, e.g. every 8h) stay fresh until the next
  one; their history is sampled at that spacing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from signals.cosell import CoSellEvent
from signals.detector import BarSignals, DetectorParams, MarketDetector
from signals.funding import FundingParams
from signals.liquidations import LiquidationParams
from streams.backtest_csv import (
    NS_PER_S,
    BacktestError,
    BarsTable,
    Calendar,
    FundTable,
    LiqTable,
    common_calendar,
    format_ts,
    parse_interval,
    read_bars,
    read_funding,
    read_liquidations,
    regular_spacing_s,
)
from streams.config import ConfigError, load_universe

__all__ = [
    "BacktestError",
    "BacktestResult",
    "Calendar",
    "Episode",
    "backtest_params",
    "run_backtest",
    "run_detector",
    "write_outputs",
]

FloatArray = NDArray[np.float64]
LIQ_BASELINE_BUCKETS = 42
#: Aggregated buckets (hours of many venues' liquidations) are heavy-tailed: 5-10x the median
#: bucket happens most days in calm weeks (2025-09), so a cascade needs z >= 10 and 5 M USD.
LIQ_BUCKET_Z_ON = 10.0
LIQ_BUCKET_MIN_USD = 5e6
PROGRESS_MIN_BARS = 2_000


@dataclass(slots=True)
class Episode:
    """A co-selling flag: start (first bar of the qualifying run), end (first bar of the final
    calm run; None while still up at the end of data), peak score, assets seen selling."""

    start_ns: int
    end_ns: int | None
    peak_score: float
    assets: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (None while open)."""
        return None if self.end_ns is None else (self.end_ns - self.start_ns) / NS_PER_S


@dataclass(slots=True)
class BacktestResult:
    """Everything a report or a benchmark needs from one run."""

    bars: BarsTable
    params: DetectorParams
    liq: LiqTable | None
    liq_bucket_s: int | None
    funding: FundTable | None
    score: FloatArray
    active: NDArray[np.bool_]
    corr_avg: FloatArray
    corr_adjusted: FloatArray
    corr_pairs: dict[str, FloatArray]
    absorption_ratio: FloatArray
    events: list[dict[str, object]]
    episodes: list[Episode]
    liq_unused_rows: int = 0
    funding_unused_rows: int = 0


def liquidation_params(bucket_s: int | None) -> LiquidationParams:
    """Cascade parameters for event-level rows (None: defaults) or ``bucket_s`` aggregates:
    the bucket is the intensity window, scored against the 42 previous buckets.

    Examples
    --------
    >>> p = liquidation_params(14_400)
    >>> p.intensity_window_s, p.baseline_s // p.intensity_window_s, p.windows_s
    (14400, 42, (14400, 86400))
    """
    if bucket_s is None:
        return LiquidationParams()
    windows = (bucket_s,) if bucket_s >= 86_400 else (bucket_s, 86_400)
    return LiquidationParams(
        windows_s=windows,
        intensity_window_s=bucket_s,
        baseline_s=LIQ_BASELINE_BUCKETS * bucket_s,
        min_baseline_windows=12,
        z_on=LIQ_BUCKET_Z_ON,
        z_off=3.0,
        min_notional_usd=LIQ_BUCKET_MIN_USD,
    )


def funding_params(spacing_s: int | None) -> FundingParams:
    """Funding parameters for settlements every ``spacing_s`` (None: live defaults).

    Examples
    --------
    >>> p = funding_params(28_800)
    >>> p.max_age_s, p.history_step_s, p.history_len, p.min_history
    (43200.0, 28800, 90, 9)
    """
    if spacing_s is None or spacing_s < 900:
        return FundingParams()
    return FundingParams(
        max_age_s=1.5 * spacing_s,
        history_step_s=spacing_s,
        history_len=max(10, math.ceil(30 * 86_400 / spacing_s)),
        min_history=max(2, math.ceil(3 * 86_400 / spacing_s)),
    )


def backtest_params(
    interval_s: int, liq_bucket_s: int | None, funding_spacing_s: int | None
) -> DetectorParams:
    """:meth:`DetectorParams.for_bar_interval` with liquidation and funding parameters fitted
    to the resolution of the history files; liquidation buckets longer than a bar stay out of
    the co-selling score (they are known only after the bars they describe).

    Examples
    --------
    >>> p = backtest_params(300, 14_400, 28_800)
    >>> p.liq_in_score, p.liquidations.intensity_window_s, p.funding.history_step_s
    (False, 14400, 28800)
    >>> backtest_params(86_400, 86_400, None).liq_in_score
    True
    """
    return replace(
        DetectorParams.for_bar_interval(interval_s),
        liquidations=liquidation_params(liq_bucket_s),
        funding=funding_params(funding_spacing_s),
        liq_in_score=liq_bucket_s is None or liq_bucket_s <= interval_s,
    )


def apply_universe(bars: BarsTable, config: Path) -> BarsTable:
    """Classes (and order) from a universe TOML: its assets first, in its order, with its
    classes; assets it does not name keep their CSV class, after them."""
    try:
        universe = load_universe(config)
    except ConfigError as exc:
        raise BacktestError(str(exc)) from None
    known = {a.name: a.asset_class for a in universe.assets}
    order = [a for a in universe.names if a in bars.assets]
    order += [a for a in bars.assets if a not in known]
    idx = [bars.assets.index(a) for a in order]
    classes = tuple(known.get(a, bars.classes[i]) for a, i in zip(order, idx, strict=True))
    return replace(bars, assets=tuple(order), classes=classes, closes=bars.closes[:, idx])


def _liq_bucket(liq: LiqTable | None, interval_s: int, liq_bucket: str) -> int | None:
    if liq is None or liq_bucket == "none":
        return None
    if liq_bucket == "auto":
        return regular_spacing_s(liq.ts_ns, interval_s)
    return parse_interval(liq_bucket)


def run_detector(
    bars: BarsTable,
    params: DetectorParams,
    liq: LiqTable | None = None,
    liq_bucket_s: int | None = None,
    funding: FundTable | None = None,
    bars_jsonl: Path | None = None,
    progress: bool = False,
) -> BacktestResult:
    """Run :class:`MarketDetector` over the grid; optionally stream the per-bar records."""
    det = MarketDetector(bars.assets, bars.classes, bars.interval_s, params)
    times = bars.times_ns
    n_bars = times.size
    step = bars.interval_s * NS_PER_S
    shift = 0 if liq_bucket_s is None else liq_bucket_s * NS_PER_S
    liq_due = np.empty(0, np.int64) if liq is None else liq.ts_ns + shift
    fund_due = np.empty(0, np.int64) if funding is None else funding.ts_ns
    li = fi = 0
    score, corr_avg, corr_adj, ar = (np.full(n_bars, np.nan) for _ in range(4))
    active = np.zeros(n_bars, dtype=bool)
    pairs: dict[str, FloatArray] = {}
    events: list[dict[str, object]] = []
    episodes: list[Episode] = []
    sink = bars_jsonl.open("wb") if bars_jsonl is not None else None
    bar = Progress(
        TextColumn("backtest"), BarColumn(), TextColumn("{task.completed}/{task.total} bars"),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        disable=not progress or n_bars < PROGRESS_MIN_BARS,
    )  # fmt: skip
    try:
        with bar:
            task = bar.add_task("bars", total=n_bars)
            for k in range(n_bars):
                end = int(times[k]) + step
                while li < liq_due.size and liq_due[li] <= end:
                    assert liq is not None
                    new = det.on_liquidation(
                        int(liq_due[li]), liq.asset[li], "long" if liq.side[li] == "long"
                        else "short", float(liq.notional_usd[li]), liq.complete[li],
                    )  # fmt: skip
                    events += (_record(e.ts_ns, e.to_dict()) for e in new)
                    li += 1
                while fi < fund_due.size and fund_due[fi] <= end:
                    assert funding is not None
                    oi = funding.open_interest_usd[fi]
                    new_f = det.on_funding(
                        int(fund_due[fi]), funding.asset[fi], funding.venue[fi],
                        float(funding.rate_annualized[fi]), oi,
                    )  # fmt: skip
                    events += (_record(e.ts_ns, e.to_dict()) for e in new_f)
                    fi += 1
                out = det.on_bar(int(times[k]), bars.closes[k])
                c = out.cosell
                score[k], active[k], corr_avg[k] = c.score, c.active, out.corr_avg
                corr_adj[k], ar[k] = out.corr_avg_adjusted, out.absorption_ratio
                for name, value in out.corr_by_class_pair.items():
                    pairs.setdefault(name, np.full(n_bars, np.nan))[k] = value
                _track_episodes(episodes, out)
                for e in out.events:
                    ts = e.bar_start_ns if isinstance(e, CoSellEvent) else e.ts_ns
                    events.append(_record(ts, e.to_dict()))
                if sink is not None:
                    record = _record(int(times[k]), out.to_dict(), "correlation.bar")
                    sink.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
                if k % 500 == 0:
                    bar.update(task, completed=k)
    finally:
        if sink is not None:
            sink.close()
    return BacktestResult(
        bars, params, liq, liq_bucket_s, funding, score, active, corr_avg, corr_adj, pairs, ar,
        events, episodes, int(liq_due.size - li), int(fund_due.size - fi),
    )  # fmt: skip


def _record(ts_ns: int, fields: dict[str, object], kind: str | None = None) -> dict[str, object]:
    """``{"type", "ts", ...fields}`` with ``ts`` ISO-8601 UTC."""
    out: dict[str, object] = {"type": kind or fields["type"], "ts": format_ts(ts_ns)}
    out.update((k, v) for k, v in fields.items() if k != "type")
    return out


def _track_episodes(episodes: list[Episode], out: BarSignals) -> None:
    c = out.cosell
    for e in c.events:
        if e.type == "cosell.start":
            episodes.append(Episode(e.episode_start_ns, None, e.peak_score))
        elif e.type == "cosell.end" and episodes:
            ep = episodes[-1]
            ep.end_ns = ep.start_ns + round((e.duration_s or 0.0) * NS_PER_S)
            ep.peak_score = e.peak_score
    if episodes and episodes[-1].end_ns is None:
        ep = episodes[-1]
        if c.score == c.score:
            ep.peak_score = max(ep.peak_score, c.score)
        ep.assets += [s.asset for s in c.selling if s.asset not in ep.assets]


def write_outputs(result: BacktestResult, out_dir: Path, report: bool = True) -> None:
    """``signals.jsonl`` (events in emission order) and ``report.html``."""
    with (out_dir / "signals.jsonl").open("wb") as f:
        for record in result.events:
            f.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    if report:
        from streams.report import write_report

        write_report(result, out_dir / "report.html")


def run_backtest(
    bars_csv: Path,
    out_dir: Path,
    liquidations_csv: Path | None = None,
    funding_csv: Path | None = None,
    interval: str | None = None,
    config: Path | None = None,
    liq_bucket: str = "auto",
    calendar: Calendar = "auto",
    params: DetectorParams | None = None,
    progress: bool = False,
    report: bool = True,
) -> BacktestResult:
    """Everything ``firesale backtest`` does: read, run, write (raises :class:`BacktestError`).

    ``liq_bucket``: ``"auto"`` (see the module notes), ``"none"`` (events) or a duration;
    ``calendar``: ``"union"`` (every grid time), ``"common"`` (only the bars where every class
    has a close, see :func:`~streams.backtest_csv.common_calendar`) or ``"auto"`` (common for
    bars of a day or more, union below); ``params`` replaces :func:`backtest_params`.
    """
    bars = read_bars(bars_csv, None if interval is None else parse_interval(interval))
    if config is not None:
        bars = apply_universe(bars, config)
    if calendar == "common" or (calendar == "auto" and bars.interval_s >= 86_400):
        bars = common_calendar(bars)
    liq = read_liquidations(liquidations_csv) if liquidations_csv is not None else None
    funding = read_funding(funding_csv) if funding_csv is not None else None
    bucket = _liq_bucket(liq, bars.interval_s, liq_bucket)
    if params is None:
        spacing = None if funding is None else _funding_spacing(funding.ts_ns, funding.asset)
        params = backtest_params(bars.interval_s, bucket, spacing)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BacktestError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    result = run_detector(
        bars, params, liq, bucket, funding, out_dir / "bars.jsonl", progress=progress
    )
    write_outputs(result, out_dir, report)
    return result


def _funding_spacing(ts_ns: NDArray[np.int64], assets: Sequence[str]) -> int | None:
    """The regular settlement spacing shared by the assets' funding rows (None if irregular)."""
    spacings = {regular_spacing_s(ts_ns[np.array(assets) == a], 1) for a in set(assets)}
    return spacings.pop() if len(spacings) == 1 else None


def summary_lines(result: BacktestResult, episodes: bool = True) -> list[str]:
    """Plain-text summary of a run (the CLI prints it); ``episodes``: list them too."""
    b = result.bars
    times = b.times_ns
    how = "inferred: median spacing" if b.interval_inferred else "given"
    lines = [
        f"{times.size} bars of {b.interval_s} s ({how}), {format_ts(int(times[0]))} → "
        f"{format_ts(int(times[-1]))}",
        "assets: " + ", ".join(f"{a} ({c})" for a, c in zip(b.assets, b.classes, strict=True)),
    ]
    if result.liq is not None:
        kind = "events" if result.liq_bucket_s is None else f"{result.liq_bucket_s} s buckets"
        lines.append(
            f"liquidations: {result.liq.ts_ns.size} rows as {kind} "
            f"({result.liq.zero_rows} zero rows skipped, {result.liq_unused_rows} after the end)"
        )
    counts: dict[str, int] = {}
    for e in result.events:
        counts[str(e["type"])] = counts.get(str(e["type"]), 0) + 1
    lines.append("events: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    if not episodes:
        return lines
    lines.append(f"co-selling episodes: {len(result.episodes)}")
    for ep in result.episodes:
        end = "open at the end of data" if ep.end_ns is None else format_ts(ep.end_ns)
        lines.append(
            f"  {format_ts(ep.start_ns)} → {end}, peak {ep.peak_score:.2f}, "
            f"assets {', '.join(ep.assets) or '-'}"
        )
    return lines
