"""Bybit v5 linear frames → canonical events (pure: no socket, no clock, no logger).

Channels (wire fields in :mod:`connectors.bybit.schemas`):

- ``allLiquidation.{symbol}``: every liquidation, batched every 500 ms → :class:`Liquidation`
  with ``completeness="complete"``. ``S`` is the **position** side (``Buy`` = a long was
  liquidated: the opposite of Binance/OKX, whose side is the liquidation order's).
  ``qty_base`` = ``v`` × contract size (1 on linear), ``price`` = ``p``, the **bankruptcy
  price** (the fill is at or better than it), ``notional_usd`` = ``qty_base × p`` with USDT
  (USDC on USDC perps) taken as USD. ``ts_event_ns`` = the item's ``T`` (liquidation time): the
  frame's ``ts`` is only the batch's push time, up to 500 ms later.
- ``liquidation.{symbol}``: the deprecated one-per-second feed (``data`` is an object: ``symbol``,
  ``side``, ``size``, ``price``, ``updatedTime`` = ``ts_event_ns``), same side semantics →
  ``sampled``.
- ``tickers.{symbol}``: a snapshot, then deltas holding only the fields that changed. The parser
  keeps per-symbol state and merges each delta (an absent field is unchanged; ``""`` means the
  venue has no value). From the merged state: a ``mark`` :class:`PriceTick` when ``markPrice``
  is in the frame, a ``trade`` tick when ``lastPrice`` is, and a :class:`Funding` when a funding
  or open-interest field is. ``ts_event_ns`` = the frame's ``ts``, the time Bybit's system
  generated the data: the ticker carries no per-field exchange time.

Funding: ``rate`` = ``fundingRate`` (per interval); ``interval_hours`` = the frame's
``fundingIntervalHour`` when known (it tracks interval changes live), else the instrument's;
``next_funding_ts_ns`` from ``nextFundingTime``; ``mark_price`` = merged ``markPrice``.
``open_interest_usd`` = ``singleOpenInterestValue`` (one side, the conventional figure Binance
and OKX report), else ``openInterestValue / 2``: Bybit's docs of 2026-10 define
``openInterestValue`` as **both sides summed**, and every open contract has one long and one
short holder. Dated futures send ``fundingRate: ""`` and yield no Funding.

A delta for a symbol with no snapshot yet (state lost, or a frame replayed out of order) is
rejected as ``missing_field``: the fields it omits are unknown until the next snapshot (a
resubscribe). A field that fails validation is rejected and left out of the state, so one bad
value cannot poison later events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import orjson

from connectors.base import (
    Instrument,
    ParseResult,
    Reject,
    RejectReason,
    instruments_by_symbol,
)
from connectors.fields import FieldError, ms_to_ns, number, positive, shown, text
from connectors.frames import MAX_FRAME_BYTES, annualized_rate, frame_too_large, liquidation
from streams.events import Funding, Liquidation, PriceTick

VENUE = "bybit"
BUG_PREFIX = "parser bug: "  # detail prefix of the never-expected safety net (tests assert on it)

_POSITION_SIDE: dict[str, Literal["long", "short"]] = {"Buy": "long", "Sell": "short"}
_PRICE_KINDS: tuple[tuple[str, Literal["mark", "trade"]], ...] = (
    ("markPrice", "mark"),
    ("lastPrice", "trade"),
)
_FUNDING_FIELDS = (
    "fundingRate",
    "nextFundingTime",
    "fundingIntervalHour",
    "openInterestValue",
    "singleOpenInterestValue",
)


def _ms(obj: Mapping[str, Any], key: str) -> int:
    """:func:`ms_to_ns`, but a digit string ``int()`` refuses (``"²"``) is ``bad_type`` too."""
    try:
        return ms_to_ns(obj, key)
    except FieldError:
        raise
    except ValueError:
        raise FieldError("bad_type", f"{key} is not integer milliseconds") from None


def _non_negative(obj: Mapping[str, Any], key: str) -> float:
    value = number(obj, key)
    if value < 0:
        raise FieldError("absurd_value", f"{key} is {value:g}, must be >= 0")
    return value


def _hours(obj: Mapping[str, Any], key: str) -> float:
    value = positive(obj, key)
    if value > 24:
        raise FieldError("absurd_value", f"{key} is {value:g}, must be <= 24 hours")
    return value


_TICKER_READERS: dict[str, Callable[[Mapping[str, Any], str], float | int]] = {
    "lastPrice": positive,
    "markPrice": positive,
    "fundingRate": number,
    "nextFundingTime": _ms,
    "fundingIntervalHour": _hours,
    "openInterestValue": _non_negative,
    "singleOpenInterestValue": _non_negative,
}


_Ticker: TypeAlias = dict[str, float | int | None]
"""Merged ticker state of one symbol: the validated fields events need (None = no value)."""


class BybitParser:
    """Parse Bybit v5 public linear frames into canonical events.

    Holds the merged ``tickers`` state per symbol, so use one parser per connection and a fresh
    one after a reconnect (the resubscription brings new snapshots).

    Parameters
    ----------
    instruments
        The universe's Bybit instruments; items about other symbols are counted in
        ``ParseResult.filtered``.

    Examples
    --------
    >>> btc = Instrument("bybit", "BTCUSDT", "BTC", "crypto", funding_interval_hours=8.0)
    >>> parser = BybitParser([btc])
    >>> frame = ('{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1739502303204,'
    ...          '"data":[{"T":1739502302929,"s":"BTCUSDT","S":"Buy","v":"0.5","p":"95000"}]}')
    >>> liq = parser.parse(frame, ts_recv_ns=1_739_502_303_300_000_000).events[0]
    >>> liq.liquidated_side, liq.qty_base, liq.price, liq.notional_usd, liq.completeness
    ('long', 0.5, 95000.0, 47500.0, 'complete')
    >>> parser.parse('{"success":true,"ret_msg":"pong","conn_id":"c","op":"ping"}', 0).control
    'pong'
    """

    venue: str = VENUE

    def __init__(self, instruments: Sequence[Instrument]) -> None:
        self._instruments = instruments_by_symbol(instruments)
        self._tickers: dict[str, _Ticker] = {}

    def parse(self, raw: str | bytes, ts_recv_ns: int) -> ParseResult:
        """Turn one raw WebSocket frame into events, rejects and control. Never raises."""
        result = ParseResult()
        try:
            self._parse(raw, ts_recv_ns, result)
        except Exception as exc:  # a bug, not bad input: keep the connection alive, dead-letter
            detail = f"{BUG_PREFIX}{type(exc).__name__}: {exc}"
            result.rejects.append(Reject("bad_type", detail[:500]))
        return result

    # -- framing -----------------------------------------------------------------------------

    def _parse(self, raw: str | bytes, ts_recv_ns: int, result: ParseResult) -> None:
        if frame_too_large(raw):
            result.rejects.append(
                Reject("oversize", f"frame exceeds {MAX_FRAME_BYTES} bytes (1 MiB)")
            )
            return
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                result.rejects.append(
                    Reject("malformed_json", f"invalid UTF-8 at byte {exc.start}")
                )
                return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            result.rejects.append(Reject("malformed_json", f"not JSON: {str(exc)[:120]}"))
            return
        if not isinstance(msg, dict):
            result.rejects.append(
                Reject("malformed_json", f"top level is {type(msg).__name__}, expected an object")
            )
            return
        topic = msg.get("topic")
        if topic is not None:
            self._data(msg, topic, ts_recv_ns, result)
        elif "op" in msg:
            _control(msg, result)
        else:
            keys = ", ".join(sorted(str(k) for k in msg)[:8])
            result.rejects.append(
                Reject("unknown_message", f"neither a topic nor an op frame (keys: {keys})")
            )

    def _data(self, msg: dict[str, Any], topic: Any, ts_recv_ns: int, res: ParseResult) -> None:
        if not isinstance(topic, str):
            res.rejects.append(
                Reject("bad_type", f"topic must be a string, got {shown(topic)!r:.40}")
            )
            return
        prefix = topic.partition(".")[0]
        if prefix == "allLiquidation":
            self._all_liquidation(msg, ts_recv_ns, res)
        elif prefix == "liquidation":
            self._deprecated_liquidation(msg, ts_recv_ns, res)
        elif prefix == "tickers":
            self._ticker(msg, ts_recv_ns, res)
        else:
            res.rejects.append(Reject("unknown_message", f"unknown topic {topic[:64]!r}"))

    # -- liquidations ------------------------------------------------------------------------

    def _all_liquidation(self, msg: dict[str, Any], ts_recv_ns: int, res: ParseResult) -> None:
        channel = "allLiquidation"
        data = msg.get("data")
        if not isinstance(data, list):
            reason: RejectReason = "missing_field" if data is None else "bad_type"
            res.rejects.append(Reject(reason, "data must be an array of liquidations", channel))
            return
        if not data:  # nothing to parse, but a frame must never vanish silently
            res.rejects.append(Reject("missing_field", "data is an empty array", channel))
            return
        for index, item in enumerate(data):
            try:
                event = self._liquidation(item, ("s", "S", "v", "p", "T"), "complete", ts_recv_ns)
            except FieldError as exc:
                res.rejects.append(Reject(exc.reason, f"data[{index}]: {exc.detail}", channel))
                continue
            if event is None:
                res.filtered += 1
            else:
                res.events.append(event)

    def _deprecated_liquidation(
        self, msg: dict[str, Any], ts_recv_ns: int, res: ParseResult
    ) -> None:
        data = msg.get("data")
        if data is None:
            res.rejects.append(Reject("missing_field", "data is missing", "liquidation"))
            return
        # The docs example says updatedTime, the docs table updateTime: accept both.
        time_key = "updatedTime"
        if isinstance(data, dict) and "updatedTime" not in data and "updateTime" in data:
            time_key = "updateTime"
        keys = ("symbol", "side", "size", "price", time_key)
        try:
            event = self._liquidation(data, keys, "sampled", ts_recv_ns)
        except FieldError as exc:
            res.rejects.append(Reject(exc.reason, f"data: {exc.detail}", "liquidation"))
            return
        if event is None:
            res.filtered += 1
        else:
            res.events.append(event)

    def _liquidation(
        self,
        item: Any,
        keys: tuple[str, str, str, str, str],
        completeness: Literal["complete", "sampled"],
        ts_recv_ns: int,
    ) -> Liquidation | None:
        """One liquidation item, or None when its symbol is outside the universe."""
        symbol_key, side_key, size_key, price_key, time_key = keys
        symbol = text(item, symbol_key)
        instrument = self._instruments.get(symbol)
        if instrument is None:
            return None
        side_text = text(item, side_key)
        side = _POSITION_SIDE.get(side_text)
        if side is None:
            raise FieldError("bad_type", f"{side_key} is {side_text[:20]!r}, expected Buy or Sell")
        qty_base = positive(item, size_key) * instrument.contract_size
        price = positive(item, price_key)
        ts_event_ns = _ms(item, time_key)
        return liquidation(
            instrument,
            ts_event_ns=ts_event_ns,
            ts_recv_ns=ts_recv_ns,
            liquidated_side=side,
            qty_base=qty_base,
            price=price,
            completeness=completeness,
            notional_label=f"{size_key} × {price_key}",
        )

    # -- tickers -----------------------------------------------------------------------------

    def _ticker(self, msg: dict[str, Any], ts_recv_ns: int, res: ParseResult) -> None:
        channel = "tickers"
        data = msg.get("data")
        if data is None:
            res.rejects.append(Reject("missing_field", "data is missing", channel))
            return
        try:
            symbol = text(data, "symbol")  # also refuses a data that is not an object
        except FieldError as exc:
            res.rejects.append(Reject(exc.reason, f"data: {exc.detail}", channel))
            return
        instrument = self._instruments.get(symbol)
        if instrument is None:
            res.filtered += 1
            return
        kind = msg.get("type")
        if kind not in ("snapshot", "delta"):
            detail = f"{symbol}: type is {shown(kind)!r:.30}, expected snapshot or delta"
            res.rejects.append(Reject("bad_type", detail, channel))
            return
        state = self._tickers.get(symbol)
        if kind == "delta" and state is None:
            detail = (
                f"{symbol}: delta before any snapshot, so the fields it omits are unknown; "
                "dropped until the next snapshot (resubscribe)"
            )
            res.rejects.append(Reject("missing_field", detail, channel))
            return
        changed: dict[str, float | int | None] = {}
        for key, read in _TICKER_READERS.items():
            if key not in data:
                continue
            try:
                changed[key] = None if data[key] in ("", None) else read(data, key)
            except FieldError as exc:
                res.rejects.append(Reject(exc.reason, f"{symbol}: {exc.detail}", channel))
        if state is None or kind == "snapshot":
            state = self._tickers[symbol] = dict(changed)
        else:
            state.update(changed)
        try:
            ts_event_ns = _ms(msg, "ts")
            self._ticker_events(instrument, state, changed, ts_event_ns, ts_recv_ns, res)
        except FieldError as exc:
            res.rejects.append(Reject(exc.reason, f"{symbol}: {exc.detail}", channel))

    def _ticker_events(
        self,
        inst: Instrument,
        state: _Ticker,
        changed: Mapping[str, float | int | None],
        ts_event_ns: int,
        ts_recv_ns: int,
        res: ParseResult,
    ) -> None:
        common: dict[str, Any] = {
            "venue": VENUE,
            "symbol": inst.symbol,
            "asset": inst.asset,
            "asset_class": inst.asset_class,
            "ts_event_ns": ts_event_ns,
            "ts_recv_ns": ts_recv_ns,
        }
        for key, kind in _PRICE_KINDS:
            price = changed.get(key)
            if price is not None:
                res.events.append(PriceTick(**common, price=float(price), kind=kind))
        if any(key in changed for key in _FUNDING_FIELDS):
            funding = _funding(inst, state, common)
            if funding is not None:
                res.events.append(funding)


def _funding(inst: Instrument, state: _Ticker, common: Mapping[str, Any]) -> Funding | None:
    """A Funding from the merged state; None when the contract has no funding (dated future)."""
    rate = state.get("fundingRate")
    if rate is None:
        return None
    next_ns = state.get("nextFundingTime")
    if next_ns is None:
        raise FieldError("missing_field", "nextFundingTime is unknown while fundingRate is set")
    interval_hours = state.get("fundingIntervalHour") or inst.funding_interval_hours
    if interval_hours is None:
        raise FieldError(
            "missing_field",
            "fundingIntervalHour is absent and the instrument has no funding_interval_hours",
        )
    rate_annualized = annualized_rate(rate, interval_hours)
    if not math.isfinite(rate_annualized):
        raise FieldError("absurd_value", f"fundingRate {rate:g} annualizes to {rate_annualized}")
    single = state.get("singleOpenInterestValue")
    both = state.get("openInterestValue")
    open_interest_usd = single if single is not None else (None if both is None else both / 2)
    mark = state.get("markPrice")
    return Funding(
        **common,
        rate=float(rate),
        interval_hours=float(interval_hours),
        rate_annualized=rate_annualized,
        next_funding_ts_ns=int(next_ns),
        mark_price=None if mark is None else float(mark),
        open_interest_usd=None if open_interest_usd is None else float(open_interest_usd),
    )


def _control(msg: dict[str, Any], res: ParseResult) -> None:
    """A reply to one of our requests: subscribe ack or failure, pong."""
    op = msg.get("op")
    success = msg.get("success")
    if op == "pong" or (op == "ping" and success is True):
        res.control = "pong"
    elif success is True:
        res.control = "ack" if op in ("subscribe", "unsubscribe") else "info"
    elif success is False:
        res.control = "error"
        detail = f"{shown(op)!s:.20} failed: {shown(msg.get('ret_msg'))!s:.300}"
        res.rejects.append(Reject("venue_error", detail, "control"))
    else:
        detail = f"op {shown(op)!s:.20} reply without a boolean success"
        res.rejects.append(Reject("unknown_message", detail, "control"))
