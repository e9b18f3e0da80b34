"""Per-bar cost of RollingCorrelation against pandas ``rolling().corr()`` and ``np.corrcoef``.

Run ``.venv/bin/python -m bench.correlation [--quick]``. All methods are timed in the same
process on the same data, with one BLAS thread (set below before numpy is imported, unless the
caller set it): on a small machine the idle OpenBLAS workers spin after each multi-threaded
call and steal the core from the Python loop (2-3x slower updates measured on 2 cores), and
pandas' rolling code is single-threaded anyway. Results are checked against each other
(max |difference| on the compared bars) before the table is printed.

Times are process CPU times (``time.process_time``), so that other jobs on a shared machine
do not inflate them (they still compete for caches and memory bandwidth). Per-bar costs:
ours = best of 3 runs over B bars after a warm window; np.corrcoef on the window = best of 3
over fewer bars; pandas = ``df.rolling(W).corr()`` over T = W + B_p bars divided by T (the
brief's definition: it includes pandas' fixed per-pair cost, which dominates when T is small;
best of 3 for N <= 100, one run above). For N = 100, W = 240 pandas is also run (best of 3)
at two lengths to separate that fixed cost from the marginal cost per bar, the conservative
comparison.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from signals.correlation import RollingCorrelation  # noqa: E402

Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    n: int
    w: int
    update_us: float
    update_get_us: float
    pandas_us: float
    pandas_bars: int
    corrcoef_us: float
    diff_pandas: float
    diff_corrcoef: float
    nan_mismatch: int


def make_returns(n_bars: int, n: int, gaps: str, seed: int = 0) -> Matrix:
    """One-factor log returns (crypto-like scale), optionally with missing values."""
    rng = np.random.default_rng(seed)
    data = 0.004 * rng.normal(size=(n_bars, 1)) + rng.normal(0.0, 0.006, (n_bars, n))
    if gaps == "random":  # 2 % of values missing, every asset has gaps: full pairwise path
        data[rng.random(data.shape) < 0.02] = np.nan
    elif gaps == "sessions":  # 3 assets closed 40 % of the time: only their rows are redone
        closed = (np.arange(n_bars) % 500) < 200
        data[np.ix_(closed, np.arange(3))] = np.nan
    return data


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeats))


def time_ours(data: Matrix, w: int, with_get: bool) -> float:
    """µs per bar over the bars after the first window (warm state)."""
    rc = RollingCorrelation(data.shape[1], w)
    for row in data[:w]:
        rc.update(row)
    rest = data[w:]
    start = time.process_time()
    if with_get:
        for row in rest:
            rc.update(row)
            rc.get()
    else:
        for row in rest:
            rc.update(row)
    return (time.process_time() - start) / len(rest) * 1e6


def time_corrcoef(data: Matrix, w: int, n_bars: int) -> float:
    start = time.process_time()
    for t in range(w, w + n_bars):
        np.corrcoef(data[t - w + 1 : t + 1], rowvar=False)
    return (time.process_time() - start) / n_bars * 1e6


def time_pandas(data: Matrix, w: int, min_periods: int) -> tuple[float, pd.DataFrame]:
    df = pd.DataFrame(data)
    start = time.process_time()
    out = df.rolling(w, min_periods=min_periods).corr()
    return time.process_time() - start, out


def compare(
    data: Matrix, w: int, pandas_out: pd.DataFrame, bars: range
) -> tuple[float, float, int]:
    """Max |ours − pandas|, max |ours − corrcoef| (dense data only), NaN-pattern mismatches."""
    rc = RollingCorrelation(data.shape[1], w)
    d_pandas = d_corrcoef = 0.0
    mismatches = 0
    dense = not np.isnan(data).any()
    for t, row in enumerate(data[: bars.stop]):
        rc.update(row)
        if t not in bars:
            continue
        ours = rc.get()
        expected = pandas_out.loc[t].to_numpy()
        mismatches += int((np.isnan(ours) != np.isnan(expected)).sum())
        ok = ~np.isnan(ours) & ~np.isnan(expected)
        d_pandas = max(d_pandas, float(np.max(np.abs(ours[ok] - expected[ok]), initial=0.0)))
        if dense:
            cc = np.corrcoef(data[t - w + 1 : t + 1], rowvar=False)
            d_corrcoef = max(d_corrcoef, float(np.max(np.abs(ours - cc))))
    return d_pandas, (d_corrcoef if dense else float("nan")), mismatches


def measure(n: int, w: int, bars: int, pandas_bars: int, cc_bars: int, gaps: str) -> Row:
    data = make_returns(w + max(bars, pandas_bars, cc_bars), n, gaps)
    upd = best_of(3, lambda: time_ours(data[: w + bars], w, with_get=False))
    upd_get = best_of(3, lambda: time_ours(data[: w + bars], w, with_get=True))
    cc = best_of(3, lambda: time_corrcoef(data, w, cc_bars)) if gaps == "none" else float("nan")
    p_data = data[: w + pandas_bars]
    min_periods = RollingCorrelation(n, w).min_periods if gaps != "none" else w
    p_seconds, p_out = time_pandas(p_data, w, min_periods)
    if n <= 100:  # cheap enough to take the best of 3 like the others
        p_seconds = min(p_seconds, *(time_pandas(p_data, w, min_periods)[0] for _ in range(2)))
    checked = range(max(w - 1, len(p_data) - 20), len(p_data))
    d_p, d_c, mism = compare(p_data, w, p_out, checked)
    return Row(
        gaps, n, w, upd, upd_get, p_seconds / len(p_data) * 1e6, len(p_data), cc, d_p, d_c, mism
    )


def pandas_marginal(n: int, w: int, short: int, long: int) -> tuple[float, float]:
    """(fixed seconds, marginal µs per bar) of pandas from two run lengths."""
    data = make_returns(w + long, n, "none", seed=1)
    t_short = min(time_pandas(data[: w + short], w, w)[0] for _ in range(3))
    t_long = min(time_pandas(data, w, w)[0] for _ in range(3))
    per_bar = (t_long - t_short) / (long - short)
    return t_short - per_bar * (w + short), per_bar * 1e6


def fmt(value: float, spec: str, suffix: str = "") -> str:
    width = int(spec.split(".")[0]) + len(suffix)
    return f"{'-':>{width}}" if np.isnan(value) else f"{value:{spec}}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-bar cost of RollingCorrelation")
    parser.add_argument("--quick", action="store_true", help="N = 50, 100 only, fewer bars")
    args = parser.parse_args()
    wall = time.perf_counter()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    # (N, ours bars, pandas bars after the window, corrcoef bars)
    plan = [(50, 3000, 1000, 500), (100, 2000, 500, 300), (200, 1000, 200, 60), (500, 300, 20, 15)]
    if args.quick:
        plan = [(50, 1000, 200, 200), (100, 600, 100, 100)]
    rows = [measure(n, w, b, pb, cb, "none") for n, b, pb, cb in plan for w in (120, 240)]
    gap_bars = 600 if args.quick else 2000
    rows += [measure(100, 240, gap_bars, 200, 0, g) for g in ("sessions", "random")]

    head = (
        f"{'data':>8} {'N':>4} {'W':>4} | {'ours upd':>9} {'upd+get':>9} | {'pandas':>9} "
        f"{'(T)':>5} {'corrcoef':>9} | {'pd/ours':>8} {'cc/ours':>8} {'pd/upd':>8} | "
        f"{'|d| pandas':>10} {'|d| corrcf':>10} {'NaN≠':>4}"
    )
    print("\nµs per bar (ours: update only, and update + get(); ratios use update + get)")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.label:>8} {r.n:>4} {r.w:>4} | {r.update_us:9.1f} {r.update_get_us:9.1f} | "
            f"{r.pandas_us:9.0f} {r.pandas_bars:>5} {fmt(r.corrcoef_us, '9.0f')} | "
            f"{r.pandas_us / r.update_get_us:7.0f}x "
            f"{fmt(r.corrcoef_us / r.update_get_us, '7.1f', 'x')} "
            f"{r.pandas_us / r.update_us:7.0f}x | {r.diff_pandas:10.1e} "
            f"{fmt(r.diff_corrcoef, '10.1e')} {r.nan_mismatch:>4}"
        )
    if not args.quick:
        fixed_s, marginal_us = pandas_marginal(100, 240, 250, 1000)
        ours = next(r for r in rows if (r.n, r.w, r.label) == (100, 240, "none"))
        print(
            f"\npandas N=100 W=240 split: {fixed_s:.2f} s fixed (per-pair set-up) + "
            f"{marginal_us:.0f} µs per extra bar; marginal/ours = "
            f"{marginal_us / ours.update_get_us:.0f}x (update + get), "
            f"{marginal_us / ours.update_us:.0f}x (update only)"
        )
    worst = max(r.diff_pandas for r in rows)
    worst_cc = max((r.diff_corrcoef for r in rows if r.label == "none"), default=0.0)
    mismatches = sum(r.nan_mismatch for r in rows)
    verdict = "OK" if worst <= 1e-10 and worst_cc <= 1e-10 and mismatches == 0 else "MISMATCH"
    print(
        f"\nagreement on the compared bars (last 20 of each pandas run): max |ours - pandas| = "
        f"{worst:.1e}, max |ours - corrcoef| = {worst_cc:.1e}, NaN-pattern mismatches = "
        f"{mismatches}: {verdict}"
    )
    print(f"total {time.perf_counter() - wall:.0f} s, load average {os.getloadavg()[0]:.2f}")
    if verdict != "OK":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
