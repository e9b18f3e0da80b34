"""Event-time bars: align asynchronous ticks of many assets on one grid (previous-tick sampling).

The grid is ``[k·Δ, (k+1)·Δ)`` in nanoseconds since the Unix epoch (UTC), Δ = ``interval_s``.
A bar's close is the last price whose *exchange* timestamp falls in the bar (ties: the last to
arrive wins); a bar with no tick is forward-filled and marked stale. Bars close when the
watermark (highest event time seen minus ``grace_s``) reaches their end, for all assets at once:
each closed grid time is emitted as one :class:`BarSet`.

Returns (:meth:`BarSet.log_returns`) are NaN, never 0, for an asset whose bar or previous bar is
stale: a forward-filled close gives a zero return that biases correlations toward 0 (the Epps
effect, see ``notes/streaming.md`` D.4), and the first fresh bar after a stale run spans several
intervals, so it is not comparable with the other assets' one-bar returns either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from signals.errors import InvalidInputError

NS_PER_S = 1_000_000_000
MAX_INTERVAL_S = 86_400


def _check_ns(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{name} is {value!r}: it must be an int of ns since the epoch")
    if value < 0:
        raise InvalidInputError(f"{name} is {value}: timestamps must be >= 0 (ns since epoch)")
    return int(value)


@dataclass(frozen=True, slots=True)
class Bar:
    """One asset's bar on the grid.

    Attributes
    ----------
    asset
        Canonical asset name.
    bar_start_ns
        Start of the bar, a multiple of ``interval_s`` seconds since the epoch.
    interval_s
        Bar length Δ in seconds.
    close
        Last price in the bar, or the forward-filled previous close when ``stale``; NaN before
        the asset's first tick.
    n_ticks
        Number of ticks merged into this bar.
    stale
        True when no tick fell in the bar.
    stale_bars
        Consecutive stale bars up to and including this one (0 when fresh).

    Examples
    --------
    >>> bar = Bar("BTC", 60_000_000_000, 60, 100.0, 3, False, 0)
    >>> bar.bar_end_ns
    120000000000
    >>> bar.to_dict()["close"]
    100.0
    """

    asset: str
    bar_start_ns: int
    interval_s: int
    close: float
    n_ticks: int
    stale: bool
    stale_bars: int

    @property
    def bar_end_ns(self) -> int:
        """End of the bar (exclusive)."""
        return self.bar_start_ns + self.interval_s * NS_PER_S

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able fields (a NaN close becomes ``None``)."""
        return {
            "asset": self.asset,
            "bar_start_ns": self.bar_start_ns,
            "interval_s": self.interval_s,
            "close": None if math.isnan(self.close) else self.close,
            "n_ticks": self.n_ticks,
            "stale": self.stale,
            "stale_bars": self.stale_bars,
        }


@dataclass(frozen=True, slots=True)
class BarSet:
    """All assets' bars for one closed grid time.

    Attributes
    ----------
    bar_start_ns
        Start of the grid bar.
    interval_s
        Bar length Δ in seconds.
    bars
        One :class:`Bar` per asset, in the builder's asset order.
    excluded
        Assets that must leave correlation and breadth at this bar: never seen, or stale for more
        than ``max_stale_bars`` consecutive bars.

    Examples
    --------
    >>> b = BarBuilder(["BTC", "ETH"], interval_s=60, grace_s=0)
    >>> _ = b.add_tick("BTC", 0, 100.0)
    >>> _ = b.add_tick("ETH", 1, 10.0)
    >>> [first] = b.add_tick("BTC", 60 * NS_PER_S, 101.0)
    >>> _ = b.add_tick("ETH", 61 * NS_PER_S, 11.0)
    >>> [second] = b.add_tick("BTC", 120 * NS_PER_S, 99.0)
    >>> second.log_returns(first).round(6)
    array([0.00995, 0.09531])
    >>> second.closes()
    array([101.,  11.])
    """

    bar_start_ns: int
    interval_s: int
    bars: tuple[Bar, ...]
    excluded: tuple[str, ...]

    @property
    def assets(self) -> tuple[str, ...]:
        """Asset names in order."""
        return tuple(b.asset for b in self.bars)

    def closes(self) -> NDArray[np.float64]:
        """Closes (forward-filled within the stale limit); NaN for excluded assets."""
        out = np.array([b.close for b in self.bars], dtype=np.float64)
        if self.excluded:
            out[[b.asset in self.excluded for b in self.bars]] = np.nan
        return out

    def log_returns(self, prev: BarSet | None) -> NDArray[np.float64]:
        """Log returns from ``prev`` (the immediately preceding grid bar) to this bar.

        Parameters
        ----------
        prev
            The BarSet of the previous grid time, or None (then every return is NaN).

        Returns
        -------
        numpy.ndarray
            ``log(close_t / close_{t−1})`` per asset; NaN unless both bars of that asset are
            fresh (not stale). Stale bars therefore give NaN, not 0, and so does the first fresh
            bar after a stale run (it spans several intervals). Excluded assets are stale, so
            they are NaN too.

        Notes
        -----
        ``r_t = ln(p_t / p_{t−1})``; on stale bars and NaN see the module docstring and
        ``notes/streaming.md`` D.4 (Epps 1979).
        """
        out = np.full(len(self.bars), np.nan)
        if prev is None:
            return out
        if prev.interval_s != self.interval_s or (
            prev.bar_start_ns != self.bar_start_ns - self.interval_s * NS_PER_S
        ):
            raise InvalidInputError(
                f"prev starts at {prev.bar_start_ns} (interval {prev.interval_s}s): pass the "
                f"BarSet immediately before {self.bar_start_ns} on the same {self.interval_s}s grid"
            )
        if prev.assets != self.assets:
            raise InvalidInputError(
                f"prev has assets {prev.assets}, this bar {self.assets}: use one builder's output"
            )
        for i, (now, before) in enumerate(zip(self.bars, prev.bars, strict=True)):
            if not now.stale and not before.stale:
                out[i] = math.log(now.close / before.close)
        return out


@dataclass(frozen=True, slots=True)
class BarBuilderStats:
    """Counters of a :class:`BarBuilder` (see :meth:`BarBuilder.stats`).

    Examples
    --------
    >>> BarBuilder(["BTC"], interval_s=60).stats().late_ticks
    {'BTC': 0}
    """

    ticks_total: int
    late_ticks: Mapping[str, int]
    bars_closed: int
    watermark_ns: int | None
    closed_until_ns: int | None


class BarBuilder:
    """Build event-time bars for a fixed set of assets (previous-tick sampling, watermark).

    Parameters
    ----------
    assets
        Canonical asset names (unique, non-empty); the order of :attr:`BarSet.bars`.
    interval_s
        Grid step Δ in whole seconds, 1..86 400; bars are aligned to the epoch (UTC).
    grace_s
        Watermark grace: how far behind the highest event time seen a tick may be and still
        count (default 2 s).
    idle_timeout_s
        If set, :meth:`advance` moves the watermark when no tick has been *received* for longer
        than this, so an idle source cannot hold the grid back. None (default) disables it.
    max_stale_bars
        An asset stale for more than this many consecutive bars is excluded (default 5).

    Notes
    -----
    Watermark ``W = max(ts_event) − grace``; every bar with ``end ≤ W`` closes, in order,
    including gap bars (forward-filled, stale). A bar's close is the price of the tick with the
    largest event time in ``[start, end)`` (ties: last arrival), which is the previous-tick
    sample at the grid time ``end`` (``notes/streaming.md`` D.4). A tick older than the end of
    the last closed bar is late: it is counted per asset and dropped, never merged. Until the
    first bar closes, a tick earlier than the grid start moves the start back.

    Idle timeout: with ``r`` the highest receive time seen and ``E`` the highest event time,
    ``advance(now)`` with ``now − r > idle_timeout`` sets ``W = E + (now − r) − grace``: event
    time is assumed to have moved on as processing time did since the last tick (this carries
    any exchange-clock offset). Without ``ts_recv_ns`` a tick's receive time is its event time.

    Examples
    --------
    >>> b = BarBuilder(["BTC", "GOLD"], interval_s=60, grace_s=2.0)
    >>> b.add_tick("BTC", 10 * NS_PER_S, 100.0)
    []
    >>> b.add_tick("BTC", 59 * NS_PER_S, 101.0)
    []
    >>> [bs] = b.add_tick("BTC", 62 * NS_PER_S, 102.0)
    >>> bs.bar_start_ns, bs.bars[0].close, bs.bars[0].n_ticks, bs.excluded
    (0, 101.0, 2, ('GOLD',))
    >>> b.add_tick("BTC", 30 * NS_PER_S, 99.0)  # late: bar 0 is closed
    []
    >>> b.late_ticks
    {'BTC': 1, 'GOLD': 0}
    """

    def __init__(
        self,
        assets: Sequence[str],
        interval_s: int,
        grace_s: float = 2.0,
        idle_timeout_s: float | None = None,
        max_stale_bars: int = 5,
    ) -> None:
        names = tuple(assets)
        if not names or any(not isinstance(a, str) or not a for a in names):
            raise InvalidInputError(f"assets is {names!r}: give one or more non-empty names")
        if len(set(names)) != len(names):
            raise InvalidInputError(f"assets {names!r} has duplicates: each asset once")
        if (
            isinstance(interval_s, bool)
            or not isinstance(interval_s, int)
            or not 1 <= interval_s <= MAX_INTERVAL_S
        ):
            raise InvalidInputError(
                f"interval_s is {interval_s!r}: it must be an int of seconds in 1..{MAX_INTERVAL_S}"
            )
        if not math.isfinite(grace_s) or grace_s < 0:
            raise InvalidInputError(f"grace_s is {grace_s!r}: it must be finite and >= 0")
        if idle_timeout_s is not None and (
            not math.isfinite(idle_timeout_s) or idle_timeout_s <= 0
        ):
            raise InvalidInputError(
                f"idle_timeout_s is {idle_timeout_s!r}: it must be finite and > 0, or None"
            )
        if (
            isinstance(max_stale_bars, bool)
            or not isinstance(max_stale_bars, int)
            or (max_stale_bars < 0)
        ):
            raise InvalidInputError(f"max_stale_bars is {max_stale_bars!r}: it must be an int >= 0")
        self._assets = names
        self._index = {a: i for i, a in enumerate(names)}
        self._interval_s = interval_s
        self._step_ns = interval_s * NS_PER_S
        self._grace_ns = round(grace_s * NS_PER_S)
        self._idle_ns = None if idle_timeout_s is None else round(idle_timeout_s * NS_PER_S)
        self._max_stale = max_stale_bars
        self._next_bar: int | None = None  # index of the first bar not closed yet
        self._max_event_ns: int | None = None
        self._max_recv_ns: int | None = None
        self._watermark_ns: int | None = None
        # per asset: bar index -> [ts of the sampled tick, its price, tick count]
        self._open: list[dict[int, list[float]]] = [{} for _ in names]
        self._last_close = [math.nan] * len(names)
        self._stale_run = [0] * len(names)
        self._late = [0] * len(names)
        self._ticks = 0
        self._bars_closed = 0

    @property
    def assets(self) -> tuple[str, ...]:
        """Asset names in output order."""
        return self._assets

    @property
    def interval_s(self) -> int:
        """Grid step Δ in seconds."""
        return self._interval_s

    @property
    def watermark_ns(self) -> int | None:
        """Current watermark (None before the first tick)."""
        return self._watermark_ns

    @property
    def closed_until_ns(self) -> int | None:
        """End of the last closed bar = start of the first open one; earlier ticks are late."""
        return None if self._next_bar is None else self._next_bar * self._step_ns

    def late_count(self, asset: str) -> int:
        """Late (dropped) ticks of one asset so far (KeyError for an unknown asset)."""
        return self._late[self._index[asset]]

    @property
    def late_ticks(self) -> dict[str, int]:
        """Late (dropped) ticks per asset."""
        return dict(zip(self._assets, self._late, strict=True))

    def stats(self) -> BarBuilderStats:
        """Counters: ticks seen, late ticks per asset, bars closed, watermark."""
        return BarBuilderStats(
            ticks_total=self._ticks,
            late_ticks=self.late_ticks,
            bars_closed=self._bars_closed,
            watermark_ns=self._watermark_ns,
            closed_until_ns=self.closed_until_ns,
        )

    def state(self) -> dict[str, Any]:
        """Everything needed to resume this builder elsewhere, as JSON-ready values.

        A stream worker checkpoints it next to the input offset it reflects, so a restarted
        worker resumes with its open bars intact instead of losing the ticks before its
        committed offset. :meth:`from_state` is the inverse.

        >>> b = BarBuilder(["BTC"], interval_s=60)
        >>> b.add_tick("BTC", 10 * NS_PER_S, 100.0)
        []
        >>> c = BarBuilder.from_state(["BTC"], 60, b.state())
        >>> [bs] = c.add_tick("BTC", 65 * NS_PER_S, 101.0)
        >>> bs.bars[0].close, bs.bars[0].n_ticks
        (100.0, 1)
        """
        return {
            "assets": list(self._assets),
            "interval_s": self._interval_s,
            "next_bar": self._next_bar,
            "max_event_ns": self._max_event_ns,
            "max_recv_ns": self._max_recv_ns,
            "watermark_ns": self._watermark_ns,
            "open": [
                [[k, int(ts), price, int(n)] for k, (ts, price, n) in sorted(o.items())]
                for o in self._open
            ],
            "last_close": [None if math.isnan(c) else c for c in self._last_close],
            "stale_run": list(self._stale_run),
            "late": list(self._late),
            "ticks": self._ticks,
            "bars_closed": self._bars_closed,
        }

    @classmethod
    def from_state(
        cls,
        assets: Sequence[str],
        interval_s: int,
        state: Mapping[str, Any],
        grace_s: float = 2.0,
        idle_timeout_s: float | None = None,
        max_stale_bars: int = 5,
    ) -> BarBuilder:
        """A builder resumed from :meth:`state` (same assets and interval, or an error)."""
        b = cls(assets, interval_s, grace_s, idle_timeout_s, max_stale_bars)
        try:
            if list(state["assets"]) != list(b._assets) or state["interval_s"] != interval_s:
                raise InvalidInputError(
                    f"state is for assets {state['assets']} at {state['interval_s']} s, "
                    f"not {list(b._assets)} at {interval_s} s"
                )
            b._next_bar = state["next_bar"]
            b._max_event_ns = state["max_event_ns"]
            b._max_recv_ns = state["max_recv_ns"]
            b._watermark_ns = state["watermark_ns"]
            b._open = [
                {int(k): [int(ts), float(p), int(n)] for k, ts, p, n in rows}
                for rows in state["open"]
            ]
            b._last_close = [math.nan if c is None else float(c) for c in state["last_close"]]
            b._stale_run = [int(x) for x in state["stale_run"]]
            b._late = [int(x) for x in state["late"]]
            b._ticks = int(state["ticks"])
            b._bars_closed = int(state["bars_closed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"bar builder state is malformed: {exc!r}") from exc
        if not len(b._open) == len(b._last_close) == len(b._stale_run) == len(b._assets):
            raise InvalidInputError("bar builder state is malformed: per-asset lists differ")
        return b

    def add_tick(
        self, asset: str, ts_event_ns: int, price: float, ts_recv_ns: int | None = None
    ) -> list[BarSet]:
        """Merge one tick and return the BarSets its watermark closes (oldest first).

        Parameters
        ----------
        asset
            One of the builder's assets.
        ts_event_ns
            Exchange time of the tick.
        price
            Finite price > 0.
        ts_recv_ns
            Our receive time (for the idle timeout); defaults to ``ts_event_ns``.

        Returns
        -------
        list of BarSet
            Closed grid times in order (empty when none closed, and for a late tick).

        Notes
        -----
        A late tick (``ts_event_ns < closed_until_ns``) is dropped and counted in
        :attr:`late_ticks`; a caller that wants to dead-letter it checks that condition first.
        """
        i = self._index.get(asset) if isinstance(asset, str) else None
        if i is None:
            raise InvalidInputError(
                f"asset {asset!r} is not one of {self._assets}: add it to the builder's assets"
            )
        ts = _check_ns("ts_event_ns", ts_event_ns)
        recv = ts if ts_recv_ns is None else _check_ns("ts_recv_ns", ts_recv_ns)
        if (
            isinstance(price, bool)
            or not isinstance(price, int | float | np.number)
            or not (math.isfinite(price) and price > 0)
        ):
            raise InvalidInputError(
                f"price for {asset!r} is {price!r}: prices must be finite and > 0"
            )
        self._ticks += 1
        self._max_recv_ns = recv if self._max_recv_ns is None else max(self._max_recv_ns, recv)
        k = ts // self._step_ns
        if self._next_bar is None or (k < self._next_bar and self._bars_closed == 0):
            self._next_bar = k
        elif k < self._next_bar:
            self._late[i] += 1
            return []
        slot = self._open[i].get(k)
        if slot is None:
            self._open[i][k] = [ts, float(price), 1]
        else:
            if ts >= slot[0]:
                slot[0], slot[1] = ts, float(price)
            slot[2] += 1
        self._max_event_ns = ts if self._max_event_ns is None else max(self._max_event_ns, ts)
        return self._close_through(self._max_event_ns - self._grace_ns)

    def advance(self, now_ns: int) -> list[BarSet]:
        """Apply the idle timeout at processing time ``now_ns`` (see Notes of the class).

        Returns the BarSets closed by it; always empty when ``idle_timeout_s`` is None, before
        the first tick, or while ticks keep arriving.

        Examples
        --------
        >>> b = BarBuilder(["BTC"], interval_s=60, grace_s=2.0, idle_timeout_s=5.0)
        >>> b.add_tick("BTC", 30 * NS_PER_S, 100.0, ts_recv_ns=31 * NS_PER_S)
        []
        >>> b.advance(35 * NS_PER_S)  # 4 s idle: not yet
        []
        >>> b.advance(62 * NS_PER_S)  # event time ≈ 30 + 31 = 61 s, watermark 59 s: not yet
        []
        >>> [bs] = b.advance(64 * NS_PER_S)  # watermark 61 s ≥ 60 s: bar 0 closes
        >>> bs.bar_start_ns, bs.bars[0].close
        (0, 100.0)
        """
        now = _check_ns("now_ns", now_ns)
        if self._idle_ns is None or self._max_event_ns is None or self._max_recv_ns is None:
            return []
        idle_ns = now - self._max_recv_ns
        if idle_ns <= self._idle_ns:
            return []
        return self._close_through(self._max_event_ns + idle_ns - self._grace_ns)

    def _close_through(self, watermark_ns: int) -> list[BarSet]:
        if self._watermark_ns is None or watermark_ns > self._watermark_ns:
            self._watermark_ns = watermark_ns
        assert self._next_bar is not None
        last = self._watermark_ns // self._step_ns - 1  # last bar with end <= watermark
        out: list[BarSet] = []
        while self._next_bar <= last:
            out.append(self._close_bar(self._next_bar))
            self._next_bar += 1
        return out

    def _close_bar(self, k: int) -> BarSet:
        start_ns = k * self._step_ns
        bars: list[Bar] = []
        excluded: list[str] = []
        for i, asset in enumerate(self._assets):
            slot = self._open[i].pop(k, None)
            if slot is not None:
                self._last_close[i] = slot[1]
                self._stale_run[i] = 0
                bars.append(Bar(asset, start_ns, self._interval_s, slot[1], int(slot[2]), False, 0))
            else:
                self._stale_run[i] += 1
                close = self._last_close[i]
                bars.append(
                    Bar(asset, start_ns, self._interval_s, close, 0, True, self._stale_run[i])
                )
            if math.isnan(self._last_close[i]) or self._stale_run[i] > self._max_stale:
                excluded.append(asset)
        self._bars_closed += 1
        return BarSet(start_ns, self._interval_s, tuple(bars), tuple(excluded))
