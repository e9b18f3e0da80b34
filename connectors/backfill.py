"""REST backfill via ccxt: recent OHLCV at start-up and after a gap, published as price ticks.

The correlation windows need W bars of history before they say anything; a gap marker says
some bars may lack ticks. Both are repaired from the venues' kline endpoints (ccxt
``fetch_ohlcv``): each *closed* candle becomes one ``trade`` :class:`~streams.events.PriceTick`
with ``price = close``, published on ``ticks.price.v1`` like a live tick, so the bar builder
needs no second input.

- :func:`fetch_candles`: paginated, de-duplicated, sorted, validated candles.
- :func:`candles_to_ticks`: closed candles → ticks (pure).
- :class:`Backfiller`: :meth:`~Backfiller.warm_start` and :meth:`~Backfiller.fill_gap`;
  REST trouble is retried, logged and counted, never raised.
- :class:`GapFillRouter`: a :class:`~connectors.runner.FrameRouter` that starts a gap fill in
  the background after publishing each gap marker (used by :func:`connectors.app.run_connect`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from connectors.base import Instrument
from connectors.metrics import ConnectorMetrics
from connectors.runner import FrameRouter, Recorder, Sink
from streams.events import GapMarker, PriceTick, encode

log = logging.getLogger("firesale.connectors")

T = TypeVar("T")
MS_NS = 1_000_000
PRICE_TOPIC = "ticks.price.v1"
TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h")
"""Candle sizes a bar interval may be built from (no ``1s``: futures APIs do not serve it)."""
PAGE_LIMIT = {"binanceusdm": 1000, "bybit": 1000, "okx": 100}
"""Candles per request: each venue's documented maximum (OKX ``history-candles``: 100)."""
PRICE_CHANNELS = frozenset(
    {"aggTrade", "markPrice", "bookTicker", "tickers", "mark-price", "trades"}
)
"""Channels whose gap means missing *prices* (Binance families, Bybit ``tickers.<symbol>``
topics, OKX channels). Liquidation and funding gaps cannot be repaired from candles."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV candle: ``open_ms`` is its open time (ms since the epoch, UTC).

    Only ``close`` is validated (finite, > 0); the other fields are kept as the venue sent them.
    """

    open_ms: int
    open: float | None
    high: float | None
    low: float | None
    close: float
    volume: float | None


@dataclass(slots=True)
class BackfillStats:
    """Counters of one :class:`Backfiller` (``rejected`` and ``errors`` by bounded reason)."""

    requests: int = 0
    retries: int = 0
    candles: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ticks: int = 0
    dropped: int = 0
    gaps_filled: int = 0
    gaps_repeated: int = 0


def _to_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def validate_row(row: Sequence[Any]) -> Candle | str:
    """A ccxt OHLCV row ``[ts, o, h, l, c, v]`` as a :class:`Candle`, or why it is rejected.

    Examples
    --------
    >>> validate_row([60_000, 1.0, 2.0, 0.5, 1.5, 10.0])
    Candle(open_ms=60000, open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0)
    >>> validate_row([60_000, 1.0, 2.0, 0.5, float("nan"), 10.0])
    'close_not_finite'
    >>> validate_row([60_000, 1.0, 2.0, 0.5, 0.0, 10.0])
    'close_not_positive'
    """
    if len(row) < 5 or isinstance(row[0], bool) or not isinstance(row[0], int) or row[0] < 0:
        return "malformed_row"
    close = _to_float(row[4])
    if close is None:
        return "malformed_row"
    if not math.isfinite(close):
        return "close_not_finite"
    if close <= 0:
        return "close_not_positive"
    o, h, lo, v = (_to_float(x) for x in (row[1], row[2], row[3], row[5] if len(row) > 5 else None))
    return Candle(row[0], o, h, lo, close, v)


async def with_retries(
    call: Callable[[], Awaitable[T]], retries: int, backoff_s: float, stats: BackfillStats
) -> T:
    """Await ``call()``; on a ccxt ``NetworkError`` (down, timeout, rate limit) retry up to
    ``retries`` times after ``backoff_s``, ``2·backoff_s``... Other errors are permanent."""
    import ccxt

    for attempt in range(retries + 1):
        stats.requests += 1
        try:
            return await call()
        except ccxt.NetworkError as exc:
            if attempt == retries:
                raise
            stats.retries += 1
            delay = backoff_s * 2**attempt
            log.info("backfill: %s; retry %d in %.1f s", type(exc).__name__, attempt + 1, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def fetch_candles(
    exchange: Any,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int,
    *,
    limit: int | None = None,
    stats: BackfillStats | None = None,
    retries: int = 2,
    backoff_s: float = 0.5,
) -> list[Candle]:
    """Candles of ``symbol`` (ccxt unified) opening in ``[since_ms, until_ms)``, oldest first.

    The span is cut into windows of ``limit`` candles (default: the venue's maximum,
    :data:`PAGE_LIMIT`), each asked with ``since`` = window start and ``until`` = window end.
    As no window can hold more than one page, the result is complete whether the venue
    returns the earliest (Binance) or the latest (Bybit, OKX) ``limit`` rows of a range.
    Rows are de-duplicated by open time (the last one seen wins), sorted, and validated: a
    NaN/inf or non-positive close, or a malformed row, is dropped, counted in
    ``stats.rejected`` by reason and logged. ``since_ms`` is floored to the candle grid. A
    window's end is asked as its last millisecond (never a candle's open time), so venues
    with an inclusive end (Binance, Bybit) and an exclusive one (OKX ``after``) agree. The
    candle still forming at ``until_ms`` is included; :func:`candles_to_ticks` skips it.

    Raises
    ------
    ccxt.BaseError
        A page still failed after ``retries`` (see :func:`with_retries`).

    Examples
    --------
    >>> class Stub:  # a venue that serves one candle per minute, close = minute number
    ...     id = "stub"
    ...     def parse_timeframe(self, tf): return 60
    ...     async def fetch_ohlcv(self, symbol, tf, since, limit, params):
    ...         return [[t, 1.0, 1.0, 1.0, t / 60_000, 1.0]
    ...                 for t in range(since, params["until"] + 1, 60_000)][:limit]
    >>> candles = asyncio.run(fetch_candles(Stub(), "X/USDT:USDT", "1m", 90_000, 330_000, limit=2))
    >>> [(c.open_ms, c.close) for c in candles]
    [(60000, 1.0), (120000, 2.0), (180000, 3.0), (240000, 4.0), (300000, 5.0)]
    """
    stats = BackfillStats() if stats is None else stats
    step_ms = int(exchange.parse_timeframe(timeframe)) * 1000
    page = limit or PAGE_LIMIT.get(str(getattr(exchange, "id", "")), 100)
    found: dict[int, Candle] = {}
    cursor = since_ms // step_ms * step_ms
    while cursor < until_ms:
        end = min(until_ms - 1, cursor + page * step_ms - 1)

        def call(start: int = cursor, stop: int = end) -> Awaitable[list[list[Any]]]:
            result: Awaitable[list[list[Any]]] = exchange.fetch_ohlcv(
                symbol, timeframe, start, page, {"until": stop}
            )
            return result

        for row in await with_retries(call, retries, backoff_s, stats):
            checked = validate_row(row)
            if isinstance(checked, str):
                stats.rejected[checked] += 1
                log.warning(
                    "backfill %s %s: candle %r rejected (%s)", symbol, timeframe, row, checked
                )
            elif cursor <= checked.open_ms <= end:  # rows outside belong to another window
                stats.duplicates += checked.open_ms in found
                found[checked.open_ms] = checked
        cursor = end + 1
    stats.candles += len(found)
    return [found[t] for t in sorted(found)]


def candles_to_ticks(
    instrument: Instrument,
    candles: Sequence[Candle],
    interval_s: int,
    ts_recv_ns: int,
    *,
    until_ms: int | None = None,
) -> list[PriceTick]:
    """One ``trade`` tick per closed candle: ``price = close`` at the candle's last millisecond.

    Parameters
    ----------
    instrument
        Where the candles come from (venue, symbol, asset, class of every tick).
    candles
        Validated candles of ``interval_s`` seconds.
    interval_s
        The candle length.
    ts_recv_ns
        Our clock when the candles were received (every tick's ``ts_recv_ns``).
    until_ms
        Candles not closed by then (``open_ms + interval > until_ms``) are still forming and
        skipped; default: the receive time.

    Notes
    -----
    ``ts_event_ns = (open_ms + interval_s·1000 − 1 ms)``: the candle's close is the last trade
    *inside* ``[open, open + interval)``, so its tick goes at the last instant of that
    interval (Binance's own ``closeTime`` convention). The bar builder samples the previous
    tick at each grid time and puts a tick at ``t`` in bar ``⌊t/Δ⌋``: at the candle's end
    itself the close would land in the *next* bar; one millisecond earlier it is exactly the
    previous-tick sample of the bar that ends with the candle (when the candle size divides
    Δ and both grids are epoch-aligned, as they are).

    Examples
    --------
    >>> btc = Instrument("binance", "BTCUSDT", "BTC", "crypto")
    >>> bars = [Candle(0, 1.0, 1.0, 1.0, 100.0, 1.0), Candle(60_000, 1.0, 1.0, 1.0, 101.0, 1.0)]
    >>> [(t.ts_event_ns, t.price) for t in candles_to_ticks(btc, bars, 60, 90 * 10**9)]
    [(59999000000, 100.0)]
    """
    until = ts_recv_ns // MS_NS if until_ms is None else until_ms
    return [
        PriceTick(
            venue=instrument.venue,
            symbol=instrument.symbol,
            asset=instrument.asset,
            asset_class=instrument.asset_class,
            ts_event_ns=(c.open_ms + interval_s * 1000 - 1) * MS_NS,
            ts_recv_ns=ts_recv_ns,
            price=c.close,
            kind="trade",
        )
        for c in candles
        if c.open_ms + interval_s * 1000 <= until
    ]


def timeframe_for(exchange: Any, interval_s: int) -> tuple[str, int]:
    """The largest candle size (name, seconds) of :data:`TIMEFRAMES` the venue serves that
    divides ``interval_s``; ``1m`` when none does (bars under a minute then get one tick a
    minute, the rest are forward-filled).

    Examples
    --------
    >>> import ccxt
    >>> okx = ccxt.okx()
    >>> [timeframe_for(okx, interval_s) for interval_s in (300, 120, 3600, 10)]
    [('5m', 300), ('1m', 60), ('1h', 3600), ('1m', 60)]
    """
    served = [tf for tf in TIMEFRAMES if tf in (exchange.timeframes or {})]
    sizes = [(tf, int(exchange.parse_timeframe(tf))) for tf in served]
    fits = [(tf, s) for tf, s in sizes if interval_s % s == 0]
    return max(fits, key=lambda p: p[1]) if fits else ("1m", 60)


def unified_symbol(exchange: Any, venue_id: str) -> str:
    """ccxt's unified symbol for a venue id, preferring the perpetual swap (Bybit ``BTCUSDT``
    is both a spot and a linear-swap id).

    Raises
    ------
    LookupError
        The venue id is not among the exchange's loaded markets.
    """
    candidates = list((exchange.markets_by_id or {}).get(venue_id) or [])
    for kind in ("swap", "future"):
        for market in candidates:
            if market.get(kind):
                return str(market["symbol"])
    if not candidates:
        raise LookupError(f"{exchange.id}: no market with id {venue_id!r}; refresh the markets")
    return str(candidates[0]["symbol"])


def make_exchange(venue: str, markets: Any = None, rest_url: str | None = None) -> Any:
    """A ccxt async exchange for ``venue`` (:data:`connectors.markets.CCXT_CLASS`), with
    ``markets`` injected (e.g. the cached ones: no REST call for them) and every REST URL
    pointed at ``rest_url`` when given (tests, proxies). Close it with ``await ex.close()``."""
    import ccxt.async_support as ccxt_async

    from connectors.markets import CCXT_CLASS, CCXT_OPTIONS, _point_at

    exchange = getattr(ccxt_async, CCXT_CLASS[venue])(CCXT_OPTIONS[venue])
    if rest_url:
        _point_at(exchange, rest_url)
    if markets:
        exchange.set_markets(markets)
    return exchange


class Backfiller:
    """Publish candle closes as price ticks at start-up and after gaps.

    Parameters
    ----------
    exchanges
        venue → ccxt async exchange (:func:`make_exchange`); venues without one are not
        backfilled. Markets are loaded on first use unless injected.
    instruments
        venue → instruments, as :func:`connectors.app.run_connect` takes them. The order
        matters: :meth:`warm_start` fetches each asset from the *first* venue listing it (one
        venue is enough to warm a window; candles of one venue are also self-consistent),
        falling back to the next venue only if that one fails.
    sink
        Where ticks go (``ticks.price.v1``, key ``venue:symbol``); None until
        :func:`~connectors.app.run_connect` attaches its producer.
    interval_s, lookback_bars
        The bar grid: gaps are filled with candles of :func:`timeframe_for` ``(interval_s)``;
        ``lookback_bars`` is what run_connect asks :meth:`warm_start` for (the window W).
    retries, backoff_s
        Per request, see :func:`with_retries`.
    max_gap_s
        A longer gap is filled for its last ``max_gap_s`` only.
    clock_ns
        Our clock, for ``ts_recv_ns``.

    Notes
    -----
    Ticks of all instruments are published merged in event-time order, so a bar builder
    sharing one watermark across assets does not find the second asset's history "late".
    Gap ticks arrive after the live ticks that followed the gap: a bar builder whose
    watermark has passed them counts them late; they serve consumers that rebuild bars.

    Examples
    --------
    >>> import ccxt
    >>> class Stub(ccxt.binanceusdm):  # closes 100, 101, ... one a minute; no network
    ...     async def fetch_ohlcv(self, symbol, tf, since, limit, params):
    ...         return [[t, 1, 1, 1, 100 + t // 60_000, 1] for t in range(0, 600_000, 60_000)]
    >>> ex = Stub()
    >>> market = {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "spot": False, "swap": True}
    >>> _ = ex.set_markets([market])
    >>> from streams.events import decode
    >>> class Out:
    ...     async def put(self, topic, key, value):
    ...         tick = decode(PriceTick, value)
    ...         print(topic, key, tick.ts_event_ns, tick.price, tick.kind); return True
    >>> btc = Instrument("binance", "BTCUSDT", "BTC", "crypto")
    >>> bf = Backfiller({"binance": ex}, {"binance": [btc]}, Out(), clock_ns=lambda: 0)
    >>> asyncio.run(bf.warm_start(lookback_bars=2, interval_s=60, now_ms=330_000))
    ticks.price.v1 b'binance:BTCUSDT' 239999000000 103.0 trade
    ticks.price.v1 b'binance:BTCUSDT' 299999000000 104.0 trade
    2
    """

    def __init__(
        self,
        exchanges: Mapping[str, Any],
        instruments: Mapping[str, Sequence[Instrument]],
        sink: Sink | None,
        *,
        interval_s: int = 60,
        lookback_bars: int = 120,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_gap_s: float = 6 * 3600,
        price_channels: Collection[str] = PRICE_CHANNELS,
        clock_ns: Callable[[], int] = time.time_ns,
        concurrency: int = 4,
        warm_timeout_s: float = 120.0,
    ) -> None:
        self.exchanges = exchanges
        self.instruments = {v: tuple(i) for v, i in instruments.items()}
        self.sink = sink
        self.interval_s = interval_s
        self.lookback_bars = lookback_bars
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_gap_s = max_gap_s
        self.price_channels = frozenset(price_channels)
        self.clock_ns = clock_ns
        self.warm_timeout_s = warm_timeout_s
        self.stats = BackfillStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._done: OrderedDict[tuple[str, int, int, str], None] = OrderedDict()

    async def warm_start(self, lookback_bars: int, interval_s: int, now_ms: int) -> int:
        """Publish the last ``lookback_bars`` closed bars' worth of candle closes per asset.

        The span is ``[end − lookback_bars·Δ, now_ms]`` with ``end`` the last bar boundary
        at or before ``now_ms``; the candle still forming at ``now_ms`` is skipped. Returns
        the number of ticks published; failures are counted in :attr:`stats` (an asset that
        no venue could serve gets no history), and whatever is not done after
        ``warm_timeout_s`` is abandoned.
        """
        step_ms = interval_s * 1000
        since_ms = now_ms // step_ms * step_ms - lookback_bars * step_ms
        by_asset: dict[str, list[Instrument]] = {}
        for venue, insts in self.instruments.items():
            if venue in self.exchanges:
                for inst in insts:
                    by_asset.setdefault(inst.asset, []).append(inst)

        async def one_asset(candidates: list[Instrument]) -> list[PriceTick]:
            for inst in candidates:
                ticks = await self._ticks(inst, interval_s, since_ms, now_ms)
                if ticks is not None:
                    return ticks
            log.warning("backfill: no venue served %s history", candidates[0].asset)
            return []

        tasks = [asyncio.create_task(one_asset(c)) for c in by_asset.values()]
        if not tasks:
            return 0
        done, pending = await asyncio.wait(tasks, timeout=self.warm_timeout_s)
        for task in pending:
            task.cancel()
            self.stats.errors["timeout"] += 1
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("backfill: warm start timed out for %d assets", len(pending))
        return await self._publish([t for task in done for t in task.result()])

    async def fill_gap(self, marker: GapMarker) -> int:
        """Publish candle closes over ``[from, to]`` of a gap on a price channel.

        The instruments are the venue's (Bybit ``tickers.<symbol>``: that symbol's); each
        instrument's interval is done once, however many channel markers repeat it. Candles
        from the one containing ``from`` to the last one closed by ``to``. Returns the ticks
        published.
        """
        symbol_channel, dot, symbol = marker.channel.partition(".")
        if dot and symbol_channel in self.price_channels:
            insts = [i for i in self.instruments.get(marker.venue, ()) if i.symbol == symbol]
        elif marker.channel in self.price_channels:
            insts = list(self.instruments.get(marker.venue, ()))
        else:
            return 0
        if marker.venue not in self.exchanges:
            return 0
        todo = []
        for inst in insts:
            key = (marker.venue, marker.from_ns, marker.to_ns, inst.symbol)
            if key not in self._done:
                self._done[key] = None
                todo.append(inst)
        while len(self._done) > 4096:
            self._done.popitem(last=False)
        if not todo:
            self.stats.gaps_repeated += 1
            return 0
        to_ms = marker.to_ns // MS_NS
        from_ms = max(marker.from_ns // MS_NS, to_ms - int(self.max_gap_s * 1000))
        results = await asyncio.gather(
            *(self._ticks(i, self.interval_s, from_ms, to_ms) for i in todo)
        )
        self.stats.gaps_filled += 1
        return await self._publish([t for ticks in results if ticks for t in ticks])

    async def close(self) -> None:
        """Close the exchanges' HTTP sessions."""
        for exchange in self.exchanges.values():
            await exchange.close()

    async def _ticks(
        self, inst: Instrument, interval_s: int, since_ms: int, until_ms: int
    ) -> list[PriceTick] | None:
        """Closed-candle ticks of ``inst`` in ``[since, until]``; None (counted) on failure."""
        exchange = self.exchanges[inst.venue]
        try:
            async with self._slots:
                if not exchange.markets:
                    await with_retries(
                        exchange.load_markets, self.retries, self.backoff_s, self.stats
                    )
                timeframe, candle_s = timeframe_for(exchange, interval_s)
                candles = await fetch_candles(
                    exchange,
                    unified_symbol(exchange, inst.symbol),
                    timeframe,
                    since_ms,
                    until_ms,
                    stats=self.stats,
                    retries=self.retries,
                    backoff_s=self.backoff_s,
                )
        except Exception as exc:
            self.stats.errors[_error_kind(exc)] += 1
            log.warning(
                "backfill %s %s failed: %s: %s", inst.venue, inst.symbol, type(exc).__name__, exc
            )
            return None
        return candles_to_ticks(inst, candles, candle_s, self.clock_ns(), until_ms=until_ms)

    async def _publish(self, ticks: list[PriceTick]) -> int:
        if self.sink is None:
            raise RuntimeError("Backfiller has no sink: pass one, or let run_connect attach it")
        published = 0
        for tick in sorted(ticks, key=lambda t: (t.ts_event_ns, t.venue, t.symbol)):
            key = f"{tick.venue}:{tick.symbol}".encode()
            if await self.sink.put(PRICE_TOPIC, key, encode(tick)):
                published += 1
            else:
                self.stats.dropped += 1
        self.stats.ticks += published
        return published


def _error_kind(exc: Exception) -> str:
    """A bounded name for a failure (a metric label in waiting)."""
    import ccxt

    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return "rate_limited"
    if isinstance(exc, ccxt.NetworkError):
        return "unavailable"
    if isinstance(exc, LookupError | ccxt.BadSymbol):
        return "unknown_symbol"
    if isinstance(exc, ccxt.BaseError):
        return "exchange_error"
    return "internal"


class GapFillRouter(FrameRouter):
    """A :class:`FrameRouter` that, after publishing a gap marker, fills it in the background."""

    def __init__(
        self,
        sink: Sink,
        metrics: ConnectorMetrics,
        recorder: Recorder | None,
        backfill: Backfiller,
    ) -> None:
        super().__init__(sink, metrics, recorder)
        self.backfill = backfill
        self._fills: set[asyncio.Task[int]] = set()

    async def on_gap(self, marker: GapMarker) -> None:
        """Publish the marker, then start :meth:`Backfiller.fill_gap` as a task."""
        await super().on_gap(marker)
        task = asyncio.create_task(self.backfill.fill_gap(marker))
        self._fills.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._fills.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.backfill.stats.errors["internal"] += 1
            log.error("backfill: gap fill failed", exc_info=task.exception())

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give running fills ``timeout_s`` to finish, then cancel them."""
        if self._fills:
            _, pending = await asyncio.wait(set(self._fills), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
