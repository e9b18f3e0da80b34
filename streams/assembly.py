"""Per-asset bars (``bars.v1``) back into cross-sections, in bar order.

Bars of different assets arrive one by one from several bar-building workers (one per price
partition), out of order — a worker catching up on a backlog can be hundreds of bars ahead of
another — and, at-least-once, sometimes twice. :class:`BarAssembler` holds bar *t* until every
*expected* asset has reported it, then releases the cross-section: one close per universe
asset, NaN where the asset has no fresh price. A stale (forward-filled) bar is NaN too: a
forward-filled close would make a zero return, which biases correlations toward 0.

Expected assets: every universe asset until the first release; afterwards every asset that
has reported a bar, minus those declared absent. The bar builders publish a bar for each asset
they have seen at every grid time (stale when no tick came), so an expected asset only goes
quiet when its bar builder does (a worker died, a venue was never reached). Waiting is then
bounded in processing time: :meth:`expire` releases a bar held too long (``max_wait_s`` for
assets never seen, ``dropout_wait_s`` for assets that reported before) and declares the missing
assets absent until they report again. Release decisions are thus a
function of the order of ``bars.v1`` alone, except for those expiries (counted in
:attr:`expired`).

>>> asm = BarAssembler(["BTC", "GOLD"], interval_s=60, max_wait_s=5.0, dropout_wait_s=5.0)
>>> asm.add("BTC", 0, 100.0, stale=False, now_ns=0)
[]
>>> [(t, c.tolist()) for t, c in asm.add("GOLD", 0, 2000.0, stale=False, now_ns=0)]
[(0, [100.0, 2000.0])]
>>> asm.add("BTC", 0, 100.0, stale=False, now_ns=0)  # a redelivered bar is dropped
[]
>>> asm.add("BTC", 60_000_000_000, 101.0, stale=False, now_ns=1_000_000_000)
[]
>>> [(t, c.tolist()) for t, c in asm.expire(now_ns=7_000_000_000)]  # GOLD's worker is gone
[(60000000000, [101.0, nan])]
>>> asm.absent
{'GOLD'}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Release = tuple[int, NDArray[np.float64]]


class BarAssembler:
    """Collect per-asset bars into complete cross-sections."""

    def __init__(
        self,
        assets: Sequence[str],
        interval_s: int,
        max_wait_s: float = 10.0,
        dropout_wait_s: float = 60.0,
    ) -> None:
        self.assets = tuple(assets)
        self.index = {a: i for i, a in enumerate(self.assets)}
        self.interval_ns = interval_s * 1_000_000_000
        self.max_wait_ns = int(max_wait_s * 1e9)
        self.dropout_wait_ns = int(dropout_wait_s * 1e9)
        self.pending: dict[int, dict[str, float]] = {}
        self.reported: set[str] = set()
        self.absent: set[str] = set()
        self.last_released_ns: int | None = None
        self.waiting_since_ns: int | None = None  # when the oldest pending bar began to wait
        self.late_bars = 0
        self.duplicates = 0
        self.unknown_assets = 0
        self.expired = 0

    @property
    def expected(self) -> set[str]:
        """The assets a bar waits for."""
        if self.last_released_ns is None:
            return set(self.assets) - self.absent
        return self.reported - self.absent

    def add(
        self, asset: str, bar_start_ns: int, close: float, stale: bool, now_ns: int
    ) -> list[Release]:
        """Take one bar; return the cross-sections it completes, oldest first."""
        if asset not in self.index:
            self.unknown_assets += 1
            return []
        self.reported.add(asset)
        self.absent.discard(asset)
        if self.last_released_ns is not None and bar_start_ns <= self.last_released_ns:
            self.late_bars += 1
            return []
        slot = self.pending.setdefault(bar_start_ns, {})
        if asset in slot:
            self.duplicates += 1
            return []
        slot[asset] = math.nan if stale else close
        if self.waiting_since_ns is None:
            self.waiting_since_ns = now_ns
        return self._release(now_ns)

    def expire(self, now_ns: int) -> list[Release]:
        """Release the oldest bar once it has waited too long (processing time).

        ``max_wait_s`` for assets that never reported (a venue not reached at start-up);
        ``dropout_wait_s`` once a missing asset has reported before: its bar builder may just
        be catching up, or moving to another worker after a crash, which takes the group's
        session timeout plus a restore.
        """
        if self.waiting_since_ns is None:
            return []
        t = min(self.pending)
        missing = self.expected - set(self.pending[t])
        wait = self.dropout_wait_ns if missing & self.reported else self.max_wait_ns
        if now_ns - self.waiting_since_ns < wait:
            return []
        self.absent |= self.expected - set(self.pending[t])
        self.expired += 1
        out = [self._pop(t)]
        return out + self._release(now_ns)

    def _release(self, now_ns: int) -> list[Release]:
        out: list[Release] = []
        while self.pending:
            t = min(self.pending)
            if not self.expected <= set(self.pending[t]):
                break
            out.append(self._pop(t))
        self.waiting_since_ns = now_ns if self.pending and out else self.waiting_since_ns
        if not self.pending:
            self.waiting_since_ns = None
        return out

    def _pop(self, t: int) -> Release:
        slot = self.pending.pop(t)
        closes = np.full(len(self.assets), np.nan)
        for asset, close in slot.items():
            closes[self.index[asset]] = close
        self.last_released_ns = t
        return t, closes
