"""Per-asset bars (``bars.v1``) back into cross-sections, in bar order.

Bars of different assets arrive one by one, possibly from several bar-building workers, a
little out of order, and — at-least-once — sometimes twice. :class:`BarAssembler` holds them
until bar *t* is complete (every asset reporting lately has its bar *t*) or overdue (some asset
has already reported bar ``t + max_wait_bars``; the very first bar always waits for that, to
learn which assets report), then releases the cross-section: one
close per universe asset, NaN where the asset has no fresh price (stale, closed, never seen).
A stale (forward-filled) bar is NaN too: a forward-filled close would make a zero return,
which biases correlations toward 0.

>>> asm = BarAssembler(["BTC", "GOLD"], interval_s=60, max_wait_bars=1)
>>> asm.add("BTC", 0, 100.0, stale=False), asm.add("GOLD", 0, 2000.0, stale=False)
([], [])
>>> [(t, c.tolist()) for t, c in asm.add("BTC", 60_000_000_000, 101.0, stale=False)]
[(0, [100.0, 2000.0])]
>>> [(t, c.tolist()) for t, c in asm.add("GOLD", 60_000_000_000, 2001.0, stale=False)]
[(60000000000, [101.0, 2001.0])]
>>> asm.add("BTC", 60_000_000_000, 101.0, stale=False)  # a redelivered bar is dropped
[]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


class BarAssembler:
    """Collect per-asset bars into complete cross-sections."""

    def __init__(
        self,
        assets: Sequence[str],
        interval_s: int,
        max_wait_bars: int = 2,
        silent_after_bars: int = 10,
    ) -> None:
        self.assets = tuple(assets)
        self.index = {a: i for i, a in enumerate(self.assets)}
        self.interval_ns = interval_s * 1_000_000_000
        self.max_wait_ns = max_wait_bars * self.interval_ns
        self.silent_after_ns = silent_after_bars * self.interval_ns
        self.pending: dict[int, dict[str, float]] = {}
        self.last_bar_ns: dict[str, int] = {}
        self.last_released_ns: int | None = None
        self.late_bars = 0
        self.duplicates = 0
        self.unknown_assets = 0

    def add(
        self, asset: str, bar_start_ns: int, close: float, stale: bool
    ) -> list[tuple[int, NDArray[np.float64]]]:
        """Take one bar; return the cross-sections it completes, oldest first."""
        if asset not in self.index:
            self.unknown_assets += 1
            return []
        if self.last_released_ns is not None and bar_start_ns <= self.last_released_ns:
            self.late_bars += 1
            return []
        slot = self.pending.setdefault(bar_start_ns, {})
        if asset in slot:
            self.duplicates += 1
            return []
        slot[asset] = math.nan if stale else close
        self.last_bar_ns[asset] = max(bar_start_ns, self.last_bar_ns.get(asset, bar_start_ns))
        return self._release()

    def _release(self) -> list[tuple[int, NDArray[np.float64]]]:
        out: list[tuple[int, NDArray[np.float64]]] = []
        newest = max(self.pending)
        for t in sorted(self.pending):
            slot = self.pending[t]
            # Wait for the assets that report (an asset silent for silent_after_bars no longer
            # holds bars back); the first bar always waits until overdue, to learn who reports.
            reporting = {
                a for a, last in self.last_bar_ns.items() if last >= t - self.silent_after_ns
            }
            complete = self.last_released_ns is not None and reporting <= set(slot)
            overdue = newest - t >= self.max_wait_ns
            if not (complete or overdue):
                break
            closes = np.full(len(self.assets), np.nan)
            for asset, close in slot.items():
                closes[self.index[asset]] = close
            out.append((t, closes))
            del self.pending[t]
            self.last_released_ns = t
        return out
