"""History CSV readers of ``firesale backtest``: strict, with line and column in every error.

Formats (a header line, then one row per record; extra columns are ignored):

- ``BARS.csv`` ``ts,asset,asset_class,close``: ``ts`` is the bar's **open** time, ``close``
  the last price of the bar (> 0). All rows share one grid: ``ts`` = first ``ts`` + k × interval.
- ``LIQ.csv`` ``ts,asset,side,notional_usd[,completeness]``: ``side`` is the liquidated
  **position** (``long`` | ``short``), ``notional_usd`` >= 0 (0 rows carry nothing and are
  skipped), ``completeness`` ``complete`` (default) | ``sampled``.
- ``FUND.csv`` ``ts,asset,rate_annualized[,venue][,open_interest_usd]``: ``rate_annualized`` a
  decimal per year (0.1 = 10 %/yr); ``venue`` defaults to ``history``.

``ts`` is ISO-8601 (``2025-10-10T21:00:00Z``, ``2025-10-10 21:00:00+00:00``, ``2025-10-10``; an
offset is converted to UTC, no offset means UTC) or epoch seconds (``1760130000``, fractions
allowed; values of 10¹¹ and more are refused as "looks like milliseconds").
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

NS_PER_S = 1_000_000_000
MAX_GRID_BARS = 5_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_RE = re.compile(r"\d+(\.\d+)?")
_INTERVAL_RE = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400}
Calendar = Literal["auto", "union", "common"]


class BacktestError(Exception):
    """A backtest cannot run: bad input file or option (the CLI exits with code 2)."""


class CsvFormatError(BacktestError):
    """A malformed CSV: the message names the file, the line (1 = header) and the column."""

    def __init__(self, path: Path, line: int, column: str | None, problem: str) -> None:
        where = f"line {line}" + (f", column '{column}'" if column else "")
        super().__init__(f"{path}: {where}: {problem}")
        self.path, self.line, self.column, self.problem = path, line, column, problem


def parse_interval(text: str) -> int:
    """Seconds of a bar interval such as ``5m``, ``1h``, ``1d``, ``300s`` or ``300``.

    Examples
    --------
    >>> parse_interval("5m"), parse_interval("1d"), parse_interval("90")
    (300, 86400, 90)
    """
    m = _INTERVAL_RE.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) < 1:
        raise BacktestError(
            f"--interval {text!r}: give a positive whole number of s, m, h or d (e.g. 5m, 1h, 1d)"
        )
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def format_ts(ts_ns: int) -> str:
    """ISO-8601 UTC text of a nanosecond timestamp (fraction only when there is one).

    Examples
    --------
    >>> format_ts(1_760_130_000 * NS_PER_S), format_ts(1_500_000_000)
    ('2025-10-10T21:00:00Z', '1970-01-01T00:00:01.5Z')
    """
    sec, frac = divmod(ts_ns, NS_PER_S)
    text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def parse_ts(text: str) -> int:
    """Nanoseconds since the epoch (UTC) of an ISO-8601 or epoch-seconds timestamp.

    Examples
    --------
    >>> parse_ts("2025-10-10T21:00:00Z") == parse_ts("1760130000") == 1_760_130_000 * NS_PER_S
    True
    >>> parse_ts("2025-10-10T23:00:00+02:00") == parse_ts("2025-10-10 21:00")
    True
    """
    s = text.strip()
    if not s:
        raise ValueError("empty timestamp")
    if _EPOCH_RE.fullmatch(s):
        whole, _, frac = s.partition(".")
        if len(whole) > 11 or int(whole) >= 10**11:
            raise ValueError(
                f"{s} is not epoch seconds (it looks like milliseconds or finer): divide it"
            )
        return int(whole) * NS_PER_S + int((frac + "0" * 9)[:9])
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"{s!r} is neither ISO-8601 (e.g. 2025-10-10T21:00:00Z) nor epoch seconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


def _rows(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: text}) of each non-blank row, after checking the header."""
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise BacktestError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise CsvFormatError(path, 1, None, f"empty file: expected {','.join(required)}")
            names = [h.strip().lower() for h in header]
            for col in required:
                if col not in names:
                    raise CsvFormatError(
                        path, 1, col, f"missing column: the header must hold {','.join(required)}"
                    )
            dup = sorted({n for n in names if names.count(n) > 1 and n})
            if dup:
                raise CsvFormatError(path, 1, dup[0], "duplicate column name")
            wanted = [(names.index(c), c) for c in (*required, *optional) if c in names]
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    raise CsvFormatError(
                        path,
                        reader.line_num,
                        None,
                        f"expected {len(names)} fields ({','.join(names)}), got {len(row)}",
                    )
                yield reader.line_num, {c: row[i].strip() for i, c in wanted}
        except csv.Error as exc:
            raise CsvFormatError(path, reader.line_num, None, f"unreadable CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise CsvFormatError(path, reader.line_num + 1, None, f"not UTF-8: {exc}") from None


def _ts(path: Path, line: int, text: str) -> int:
    try:
        return parse_ts(text)
    except (ValueError, OverflowError) as exc:
        raise CsvFormatError(path, line, "ts", str(exc)) from None


def _number(path: Path, line: int, column: str, text: str, low: float | None = None) -> float:
    """A finite float (>= low when given; low = 0 with ``close`` means > 0)."""
    try:
        value = float(text)
    except ValueError:
        raise CsvFormatError(path, line, column, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise CsvFormatError(path, line, column, f"{text!r}: values must be finite")
    if low is not None and (value < low or (column == "close" and value <= 0)):
        sign = "> 0" if column == "close" else f">= {low:g}"
        raise CsvFormatError(path, line, column, f"{text!r}: must be {sign}")
    return value


def _name(path: Path, line: int, column: str, text: str) -> str:
    if not text:
        raise CsvFormatError(path, line, column, "empty: give a name")
    return text


@dataclass(frozen=True, slots=True)
class BarsTable:
    """Closes on a grid: ``closes[k, i]`` of asset i at ``times_ns[k]`` (NaN: no row).

    ``times_ns`` is the whole regular grid ``first + k·interval`` as read (``calendar
    "union"``), or its rows where every asset class has a close (``"common"``).
    """

    path: Path
    assets: tuple[str, ...]
    classes: tuple[str, ...]
    interval_s: int
    interval_inferred: bool
    times_ns: NDArray[np.int64]
    closes: NDArray[np.float64]
    calendar: Literal["union", "common"] = "union"


def common_calendar(bars: BarsTable) -> BarsTable:
    """Only the bars where every asset class has at least one close (e.g. equity trading
    days of a daily cross-asset file); the moves in between fold into the next kept bar.

    Examples
    --------
    >>> import numpy as np
    >>> nan = np.nan
    >>> b = BarsTable(Path("x"), ("BTC", "SPY"), ("crypto", "equity"), 86_400, False,
    ...               np.arange(3, dtype=np.int64), np.array([[1.0, 2.0], [1.1, nan], [1.2, 2.1]]))
    >>> common_calendar(b).times_ns.tolist()
    [0, 2]
    """
    ok = np.ones(bars.times_ns.size, dtype=bool)
    classes = np.array(bars.classes)
    for cls in sorted(set(bars.classes)):
        ok &= np.isfinite(bars.closes[:, classes == cls]).any(axis=1)
    return replace(bars, times_ns=bars.times_ns[ok], closes=bars.closes[ok], calendar="common")


def read_bars(path: Path, interval_s: int | None = None) -> BarsTable:
    """Read ``BARS.csv`` onto its grid (NaN where an asset has no row at a grid time).

    Without ``interval_s`` the interval is the median spacing of the distinct timestamps
    (robust to weekends, holidays and outages, which only widen some spacings).
    """
    cols = ("ts", "asset", "asset_class", "close")
    rows: list[tuple[int, int, str, float]] = []
    classes: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[int, str], int] = {}
    for line, row in _rows(path, cols):
        ts = _ts(path, line, row["ts"])
        asset = _name(path, line, "asset", row["asset"])
        cls = _name(path, line, "asset_class", row["asset_class"])
        if "-" in cls:
            raise CsvFormatError(path, line, "asset_class", f"{cls!r}: no '-' in class names")
        first = classes.setdefault(asset, (cls, line))
        if first[0] != cls:
            raise CsvFormatError(
                path, line, "asset_class",
                f"{asset} is {cls!r} here but {first[0]!r} on line {first[1]}: one class per asset",
            )  # fmt: skip
        other = seen.setdefault((ts, asset), line)
        if other != line:
            raise CsvFormatError(path, line, "ts", f"duplicate row for {asset}: see line {other}")
        rows.append((line, ts, asset, _number(path, line, "close", row["close"], 0.0)))
    if not rows:
        raise CsvFormatError(path, 2, None, "no data rows: expected ts,asset,asset_class,close")
    times = np.unique(np.array([r[1] for r in rows], dtype=np.int64))
    inferred = interval_s is None
    if interval_s is None:
        if times.size < 2:
            raise BacktestError(f"{path}: one bar time only: give --interval or more bars")
        median_ns = int(np.median(np.diff(times)))
        if median_ns % NS_PER_S:
            raise BacktestError(
                f"{path}: the median bar spacing {median_ns / NS_PER_S} s is not whole seconds: "
                "give --interval"
            )
        interval_s = median_ns // NS_PER_S
    step = interval_s * NS_PER_S
    t0 = int(times[0])
    n_bars = (int(times[-1]) - t0) // step + 1
    if n_bars > MAX_GRID_BARS:
        raise BacktestError(
            f"{path}: {n_bars} bars of {interval_s} s between the first and last ts: "
            f"more than {MAX_GRID_BARS}; give a longer --interval"
        )
    assets = tuple(classes)
    col = {a: i for i, a in enumerate(assets)}
    closes = np.full((n_bars, len(assets)), np.nan)
    for line, ts, asset, close in rows:
        k, off = divmod(ts - t0, step)
        if off:
            how = "inferred" if inferred else "given"
            raise CsvFormatError(
                path, line, "ts",
                f"{format_ts(ts)} is not on the {interval_s} s grid ({how}) that starts at "
                f"{format_ts(t0)}: every bar time must be start + k x interval",
            )  # fmt: skip
        closes[k, col[asset]] = close
    times = t0 + step * np.arange(n_bars, dtype=np.int64)
    return BarsTable(
        path, assets, tuple(classes[a][0] for a in assets), interval_s, inferred, times, closes
    )


@dataclass(frozen=True, slots=True)
class LiqTable:
    """Liquidation rows sorted by time (``ts_ns`` as read; zero-notional rows dropped)."""

    path: Path
    ts_ns: NDArray[np.int64]
    asset: tuple[str, ...]
    side: tuple[str, ...]
    notional_usd: NDArray[np.float64]
    complete: tuple[bool, ...]
    zero_rows: int


def read_liquidations(path: Path) -> LiqTable:
    """Read ``LIQ.csv``."""
    out: list[tuple[int, int, str, str, float, bool]] = []
    zero = 0
    for line, row in _rows(path, ("ts", "asset", "side", "notional_usd"), ("completeness",)):
        ts = _ts(path, line, row["ts"])
        asset = _name(path, line, "asset", row["asset"])
        side = row["side"].lower()
        if side not in ("long", "short"):
            raise CsvFormatError(
                path, line, "side",
                f"{row['side']!r}: use long or short (the liquidated position, not the order side)",
            )  # fmt: skip
        notional = _number(path, line, "notional_usd", row["notional_usd"], 0.0)
        completeness = row.get("completeness", "complete").lower() or "complete"
        if completeness not in ("complete", "sampled"):
            raise CsvFormatError(
                path, line, "completeness", f"{completeness!r}: use complete or sampled"
            )
        if notional == 0.0:
            zero += 1
            continue
        out.append((ts, line, asset, side, notional, completeness == "complete"))
    out.sort()
    return LiqTable(
        path,
        np.array([r[0] for r in out], dtype=np.int64),
        tuple(r[2] for r in out),
        tuple(r[3] for r in out),
        np.array([r[4] for r in out], dtype=np.float64),
        tuple(r[5] for r in out),
        zero,
    )


@dataclass(frozen=True, slots=True)
class FundTable:
    """Funding rows sorted by time."""

    path: Path
    ts_ns: NDArray[np.int64]
    asset: tuple[str, ...]
    venue: tuple[str, ...]
    rate_annualized: NDArray[np.float64]
    open_interest_usd: tuple[float | None, ...]


def read_funding(path: Path) -> FundTable:
    """Read ``FUND.csv``."""
    out: list[tuple[int, int, str, str, float, float | None]] = []
    optional = ("venue", "open_interest_usd")
    for line, row in _rows(path, ("ts", "asset", "rate_annualized"), optional):
        ts = _ts(path, line, row["ts"])
        asset = _name(path, line, "asset", row["asset"])
        rate = _number(path, line, "rate_annualized", row["rate_annualized"])
        venue = row.get("venue") or "history"
        oi_text = row.get("open_interest_usd", "")
        oi = _number(path, line, "open_interest_usd", oi_text, 0.0) if oi_text else None
        out.append((ts, line, asset, venue, rate, oi))
    out.sort(key=lambda r: (r[0], r[1]))
    return FundTable(
        path,
        np.array([r[0] for r in out], dtype=np.int64),
        tuple(r[2] for r in out),
        tuple(r[3] for r in out),
        np.array([r[4] for r in out], dtype=np.float64),
        tuple(r[5] for r in out),
    )


def regular_spacing_s(ts_ns: NDArray[np.int64], min_s: int) -> int | None:
    """The spacing of timestamps that sit on a regular grid (buckets), else None.

    The median spacing of the distinct times when it is whole seconds, at least ``min_s``,
    and every time is a multiple of it from the first (3+ distinct times needed).

    Examples
    --------
    >>> import numpy as np
    >>> h4 = 14_400 * NS_PER_S
    >>> regular_spacing_s(np.array([0, h4, 2 * h4, 4 * h4]), 300)
    14400
    >>> print(regular_spacing_s(np.array([0, 7, 20, 45]) * NS_PER_S, 1))
    None
    """
    times = np.unique(ts_ns)
    if times.size < 3:
        return None
    spacing = int(np.median(np.diff(times)))
    if spacing % NS_PER_S or spacing < min_s * NS_PER_S:
        return None
    if np.any((times - times[0]) % spacing):
        return None
    return spacing // NS_PER_S
