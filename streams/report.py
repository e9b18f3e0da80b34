"""Self-contained HTML report of a backtest: PNG charts (matplotlib Agg, base64-embedded) and a
summary table of the detected co-selling episodes.

Charts: normalised prices, co-selling score with the flagged periods shaded (on every chart),
average correlation per class pair (raw; overall raw and Forbes–Rigobon adjusted), absorption
ratio, liquidations by side. The page needs no network and no other file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streams.backtest_csv import NS_PER_S, format_ts

if TYPE_CHECKING:
    from streams.backtest import BacktestResult

__all__ = ["EPISODE_COLUMNS", "render_report", "write_report"]

EPISODE_COLUMNS = ["#", "start (UTC)", "end (UTC)", "duration", "peak score", "assets selling"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f3f3f3} img{max-width:100%;display:block;margin:.3em 0 1.2em}
.muted{color:#777}
"""


def _png(draw: Callable[[Any], None], result: BacktestResult, height_in: float = 2.8) -> str:
    """One chart as a base64 PNG, with the flagged periods shaded."""
    fig = Figure(figsize=(11.0, height_in), dpi=100)
    FigureCanvasAgg(fig)
    ax: Any = fig.add_subplot()  # matplotlib stubs take no datetime64 limits
    draw(ax)
    times = result.bars.times_ns
    last = int(times[-1]) + result.bars.interval_s * NS_PER_S
    for ep in result.episodes:
        span = np.array([ep.start_ns, last if ep.end_ns is None else ep.end_ns], "datetime64[ns]")
        ax.fill_between(span, 0, 1, transform=ax.get_xaxis_transform(), color="tab:red",
                        alpha=0.15, lw=0)  # fmt: skip
    ax.set_xlim(np.datetime64(int(times[0]), "ns"), np.datetime64(last, "ns"))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _charts(result: BacktestResult) -> list[tuple[str, str]]:
    b = result.bars
    x = b.times_ns.astype("datetime64[ns]")

    def prices(ax: Any) -> None:
        for i, asset in enumerate(b.assets):
            p = b.closes[:, i]
            ok = np.isfinite(p)
            if ok.any():
                ax.plot(x[ok], p[ok] / p[ok][0], lw=0.9, label=f"{asset} ({b.classes[i]})")
        ax.set_ylabel("close / first close")

    def score(ax: Any) -> None:
        c = result.params.cosell
        ax.plot(x, result.score, lw=0.8, color="black", label="co-selling score")
        ax.axhline(c.theta_on, color="tab:red", ls="--", lw=0.8, label=f"θ_on {c.theta_on}")
        ax.axhline(c.theta_off, color="tab:orange", ls=":", lw=0.8, label=f"θ_off {c.theta_off}")
        ax.set_ylim(-0.02, 1.02)

    def correlations(ax: Any) -> None:
        for name, series in sorted(result.corr_pairs.items()):
            if np.isfinite(series).any():
                ax.plot(x, series, lw=0.8, label=name)
        ax.plot(x, result.corr_avg, lw=1.4, color="black", label="all (raw)")
        ax.plot(x, result.corr_adjusted, lw=1.0, color="black", ls="--", label="all (F-R adj.)")
        ax.set_ylabel(f"avg corr, W={result.params.window_bars}")
        ax.set_ylim(-1.02, 1.02)

    def absorption(ax: Any) -> None:
        ax.plot(x, result.absorption_ratio, lw=0.9, color="tab:purple", label="absorption ratio")
        ax.set_ylim(0, 1.02)

    def liquidations(ax: Any) -> None:
        liq = result.liq
        if liq is None or liq.ts_ns.size == 0:
            ax.text(0.5, 0.5, "no liquidation data", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            return
        width_ns = (result.liq_bucket_s or b.interval_s) * NS_PER_S
        sides = np.array(liq.side)
        for side, sign, colour in (("long", 1.0, "tab:red"), ("short", -1.0, "tab:green")):
            pick = sides == side
            times, inverse = np.unique(liq.ts_ns[pick], return_inverse=True)
            total = np.bincount(inverse, weights=liq.notional_usd[pick], minlength=times.size)
            ax.bar(times.astype("datetime64[ns]"), sign * total / 1e6,
                   width=np.timedelta64(width_ns, "ns"), align="edge", color=colour,
                   label=f"{side} liquidated (M USD)")  # fmt: skip
        ax.axhline(0, color="black", lw=0.5)

    spec: list[tuple[str, Callable[[Any], None]]] = [
        ("Normalised prices", prices),
        ("Co-selling score (flagged periods shaded)", score),
        ("Average correlation by class pair", correlations),
        ("Absorption ratio (correlation matrix, top ⌈N/5⌉ eigenvectors)", absorption),
        ("Liquidations by side (long up, short down)", liquidations),
    ]
    return [(title, _png(draw, result)) for title, draw in spec]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "open at end of data"
    hours = seconds / 3600
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.2f} h"


def render_report(result: BacktestResult, title: str = "firesale backtest") -> str:
    """The report as one HTML string."""
    from streams.backtest import summary_lines

    episodes = [
        [
            str(n),
            format_ts(ep.start_ns),
            "—" if ep.end_ns is None else format_ts(ep.end_ns),
            _duration(ep.duration_s),
            f"{ep.peak_score:.2f}",
            ", ".join(ep.assets) or "—",
        ]
        for n, ep in enumerate(result.episodes, 1)
    ]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<h2>Run</h2><ul>",
        *(f"<li>{html.escape(line)}</li>" for line in summary_lines(result, episodes=False)),
        "</ul><h2>Detected co-selling episodes</h2>",
        _table(EPISODE_COLUMNS, episodes) if episodes else "<p class='muted'>none</p>",
    ]
    for chart_title, png in _charts(result):
        parts.append(f"<h3>{html.escape(chart_title)}</h3>")
        parts.append(f"<img alt='{html.escape(chart_title)}' src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: BacktestResult, path: Path, title: str | None = None) -> None:
    """Write :func:`render_report` to ``path`` (UTF-8)."""
    path.write_text(render_report(result, title or f"firesale backtest — {result.bars.path.name}"))
