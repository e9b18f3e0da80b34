"""Binance USD-M futures frames → canonical events. Pure: no socket, no clock, no logger.

One :class:`BinanceParser` per connection turns each raw WebSocket frame into
:class:`~streams.events.Liquidation`, :class:`~streams.events.PriceTick` and
:class:`~streams.events.Funding` events, :class:`~connectors.base.Reject` s and control flags.
It accepts both frame forms Binance sends: the combined-stream envelope
``{"stream": "btcusdt@aggTrade", "data": {...}}`` (what ``/market/stream?streams=`` connections
get, and what :mod:`connectors.binance.client` asks for) and the raw payload of a ``/ws``
connection (an event object, or a list of them for ``!markPrice@arr``).

Field choices (``shared/notes/exchanges.md`` §1 and §7):

- **forceOrder** → Liquidation. ``liquidated_side`` from the ORDER side ``o.S``: a ``SELL``
  liquidation order closes a **long**, ``BUY`` a short. ``qty_base`` = ``o.z`` (accumulated
  filled quantity, base units; not ``o.l``, the last fill only, nor ``o.q``, the order size),
  ``price`` = ``o.ap`` (average fill price; ``o.p`` is the order's limit price),
  ``notional_usd`` = ``z × ap`` (USDT taken as USD: a USDT de-peg is not corrected).
  ``ts_event_ns`` = ``o.T``, the order's trade time, i.e. when the liquidation happened;
  ``E`` is only when the throttled stream pushed its snapshot (up to ~1 s later).
  ``completeness`` = ``sampled``: Binance pushes at most the latest liquidation per symbol per
  1000 ms, so sums are lower bounds. A liquidation order that filled nothing (``z`` = 0, e.g.
  ``X`` = ``EXPIRED``) carries no forced flow: it is rejected as ``absurd_value`` (dead-lettered
  with the frame, so it stays visible) rather than emitted with a zero quantity.
- **markPriceUpdate** → a ``mark`` PriceTick (``p``), an ``index`` PriceTick (``i``, when sent:
  on TradFi perps such as ``XAUUSDT`` the index freezes while the reference market is closed,
  which makes it a session detector) and a Funding (``r`` per interval, ``T`` next funding
  time, ``mark_price`` = ``p``; the frame has no open interest). ``ts_event_ns`` = ``E``, the
  time the mark price and rate were computed (the frame has no other time of its own).
  ``interval_hours`` comes from the Instrument (default 8 h). COIN-M-style ``"r": ""`` or
  ``"T": 0`` (delivery contracts: no funding) gives the price ticks but no Funding.
- **aggTrade** → a ``trade`` PriceTick (``p``), ``ts_event_ns`` = ``T`` (trade time).
- **bookTicker** → a ``mid`` PriceTick, ``(b + a) / 2``, ``ts_event_ns`` = ``T`` (matching
  engine time; ``E`` is the push time). A crossed book (``b`` > ``a``) is ``absurd_value``.

Control frames: ``{"result": null, "id": N}`` → ``ack``; ``{"result": [...], "id": N}``
(LIST_SUBSCRIPTIONS) → ``info``; ``{"code": .., "msg": ..}`` or ``{"error": {...}}`` →
``error`` plus a ``venue_error`` Reject. Reject ``channel`` is the stream family (``forceOrder``,
``markPrice``, ``aggTrade``, ``bookTicker``), ``control`` or ``unknown``: a bounded set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import orjson

from connectors.base import Instrument, ParseResult, Reject, TickEvent
from connectors.fields import FieldError, ms_to_ns, number, positive, require, shown, text
from connectors.frames import MAX_FRAME_BYTES, annualized_rate, frame_too_large, liquidation
from streams.events import Funding, PriceTick

VENUE = "binance"
DEFAULT_FUNDING_INTERVAL_HOURS = 8.0
"""Binance's default settlement cycle; symbols listed by ``/fapi/v1/fundingInfo`` differ."""
MAX_ABS_FUNDING_RATE = 1.0
"""A per-interval rate of 100 % or more cannot be real (Binance caps are a few per cent)."""

Channel = Literal["forceOrder", "markPrice", "aggTrade", "bookTicker"]
CHANNELS: tuple[Channel, ...] = ("forceOrder", "markPrice", "aggTrade", "bookTicker")
_CHANNEL_OF_EVENT: dict[str, Channel] = {
    "forceOrder": "forceOrder",
    "markPriceUpdate": "markPrice",
    "aggTrade": "aggTrade",
    "bookTicker": "bookTicker",
}
_LIQUIDATED_SIDE: dict[str, Literal["long", "short"]] = {"SELL": "long", "BUY": "short"}


def stream_channel(stream: str) -> Channel | None:
    """The channel family of a Binance stream name, or None when it is not one firesale reads.

    Examples
    --------
    >>> stream_channel("btcusdt@aggTrade"), stream_channel("!markPrice@arr@1s")
    ('aggTrade', 'markPrice')
    >>> stream_channel("!forceOrder@arr"), stream_channel("btcusdt@depth") is None
    ('forceOrder', True)
    """
    head, _, rest = stream.partition("@")
    name = head[1:] if head.startswith("!") else rest.partition("@")[0]
    return name if name in CHANNELS else None


class BinanceParser:
    """Parse Binance USD-M futures frames for the given instruments.

    Parameters
    ----------
    instruments
        The universe's Binance instruments (``venue`` = ``"binance"``). Items about other
        symbols are counted in ``ParseResult.filtered``. ``funding_interval_hours`` None
        means Binance's default 8 h.

    Raises
    ------
    ValueError
        An instrument of another venue, a duplicate symbol, a contract size that is not a
        finite number > 0, or a funding interval outside (0, 24] hours.

    Notes
    -----
    ``rate_annualized = rate × (24 / interval_hours) × 365`` (simple, not compounded), as in
    :class:`streams.events.Funding`. The module docstring lists which wire field feeds each
    canonical field and why.

    Examples
    --------
    >>> btc = Instrument(venue="binance", symbol="BTCUSDT", asset="BTC", asset_class="crypto")
    >>> parser = BinanceParser([btc])
    >>> frame = ('{"stream":"!forceOrder@arr","data":{"e":"forceOrder","E":1568014460893,'
    ...          '"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910",'
    ...          '"ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}')
    >>> liq = parser.parse(frame, ts_recv_ns=1_568_014_461_000_000_000).events[0]
    >>> liq.liquidated_side, liq.qty_base, liq.price, liq.completeness
    ('long', 0.014, 9910.0, 'sampled')
    >>> parser.parse('{"result":null,"id":1}', ts_recv_ns=0).control
    'ack'
    >>> parser.parse(b"\\xff", ts_recv_ns=0).rejects[0].reason
    'malformed_json'
    """

    def __init__(self, instruments: Sequence[Instrument]) -> None:
        self.venue: str = VENUE
        by_symbol: dict[str, Instrument] = {}
        for inst in instruments:
            if inst.venue != VENUE:
                raise ValueError(
                    f"instrument {inst.symbol!r} is for venue {inst.venue!r}: "
                    f"BinanceParser only takes venue={VENUE!r} instruments"
                )
            if inst.symbol in by_symbol:
                raise ValueError(f"instrument {inst.symbol!r} is listed twice: pass it once")
            if not (math.isfinite(inst.contract_size) and inst.contract_size > 0):
                raise ValueError(
                    f"contract_size of {inst.symbol!r} is {inst.contract_size}: "
                    "must be a finite number > 0 (1.0 on Binance USD-M)"
                )
            hours = inst.funding_interval_hours
            if hours is not None and not (math.isfinite(hours) and 0 < hours <= 24):
                raise ValueError(
                    f"funding_interval_hours of {inst.symbol!r} is {hours}: must be in (0, 24]"
                )
            by_symbol[inst.symbol] = inst
        self._instruments = by_symbol
        self._handlers: dict[Channel, Callable[[Mapping[str, Any], int], list[TickEvent] | None]]
        self._handlers = {
            "forceOrder": self._force_order,
            "markPrice": self._mark_price,
            "aggTrade": self._agg_trade,
            "bookTicker": self._book_ticker,
        }

    def parse(self, raw: str | bytes, ts_recv_ns: int) -> ParseResult:
        """Turn one raw frame into events, rejects and control flags. Never raises."""
        result = ParseResult()
        try:
            self._parse(raw, ts_recv_ns, result)
        except Exception as exc:  # a parser bug must not kill the connection: dead-letter it
            detail = f"internal parser error: {type(exc).__name__}: {str(exc)[:80]}"
            result.rejects.append(Reject("unknown_message", detail))
        return result

    def _parse(self, raw: str | bytes, ts_recv_ns: int, result: ParseResult) -> None:
        if frame_too_large(raw):
            detail = f"frame of more than {MAX_FRAME_BYTES} bytes"
            result.rejects.append(Reject("oversize", detail))
            return
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            result.rejects.append(Reject("malformed_json", f"not UTF-8 JSON: {str(exc)[:80]}"))
            return
        if isinstance(doc, list):
            self._items(doc, None, ts_recv_ns, result)
        elif not isinstance(doc, dict):
            detail = f"top level is a {type(doc).__name__}, expected an object or a list"
            result.rejects.append(Reject("malformed_json", detail))
        elif "stream" in doc and "data" in doc:
            self._combined(doc, ts_recv_ns, result)
        elif "e" in doc:
            self._items([doc], None, ts_recv_ns, result)
        elif "id" in doc and "result" in doc:
            result.control = "ack" if doc["result"] is None else "info"
        elif ("code" in doc and "msg" in doc) or isinstance(doc.get("error"), dict):
            err = doc["error"] if isinstance(doc.get("error"), dict) else doc
            result.control = "error"
            code, message = shown(err.get("code")), shown(err.get("msg"))
            detail = f"code={str(code)[:20]} msg={str(message)[:200]}"
            result.rejects.append(Reject("venue_error", detail, "control"))
        else:
            keys = ",".join(sorted(str(k) for k in doc)[:8])[:80]
            result.rejects.append(Reject("unknown_message", f"no known frame type; keys {keys}"))

    def _combined(self, doc: Mapping[str, Any], ts_recv_ns: int, result: ParseResult) -> None:
        stream, data = doc["stream"], doc["data"]
        if not isinstance(stream, str):
            detail = f"stream must be a string, got {type(stream).__name__}"
            result.rejects.append(Reject("malformed_json", detail))
            return
        channel = stream_channel(stream)
        if channel is None:
            result.rejects.append(Reject("unknown_message", f"unknown stream {stream[:60]!r}"))
        elif isinstance(data, dict):  # also !forceOrder@arr: one object per frame in 2026
            self._items([data], channel, ts_recv_ns, result)
        elif isinstance(data, list):
            self._items(data, channel, ts_recv_ns, result)
        else:
            detail = f"data of {stream[:60]!r} is a {type(data).__name__}, expected object/list"
            result.rejects.append(Reject("malformed_json", detail, channel))

    def _items(
        self, items: list[Any], hint: Channel | None, ts_recv_ns: int, result: ParseResult
    ) -> None:
        """Parse each item on its own: a bad one is rejected, the rest still yield events."""
        if not items:  # nothing to parse, but a frame must never vanish silently
            result.rejects.append(
                Reject("missing_field", "an empty list of events", hint or "unknown")
            )
            return
        for index, item in enumerate(items):
            where = f"item {index}: " if len(items) > 1 else ""
            channel: Channel | None = hint
            if not isinstance(item, dict):
                detail = f"{where}a {type(item).__name__}, expected an event object"
                result.rejects.append(Reject("bad_type", detail, hint or "unknown"))
                continue
            kind = item.get("e")
            if kind not in (None, ""):
                channel = _CHANNEL_OF_EVENT.get(kind) if isinstance(kind, str) else None
                if channel is None or (hint is not None and channel != hint):
                    detail = (
                        f"{where}event type e={str(shown(kind))[:40]!r} on stream {hint or '-'}"
                    )
                    result.rejects.append(Reject("unknown_message", detail, hint or "unknown"))
                    continue
            if channel is None:
                result.rejects.append(Reject("unknown_message", f"{where}no event type e"))
                continue
            try:
                events = self._handlers[channel](item, ts_recv_ns)
            except FieldError as exc:
                result.rejects.append(Reject(exc.reason, f"{where}{exc.detail}", channel))
                continue
            if events is None:
                result.filtered += 1
            else:
                result.events.extend(events)

    def _lookup(self, obj: Mapping[str, Any]) -> tuple[str, Instrument | None]:
        symbol = text(obj, "s")
        return symbol, self._instruments.get(symbol)

    def _force_order(self, item: Mapping[str, Any], ts_recv_ns: int) -> list[TickEvent] | None:
        order = require(item, "o")
        if not isinstance(order, dict):
            raise FieldError("bad_type", f"o must be an object, got {type(order).__name__}")
        try:
            symbol, inst = self._lookup(order)
        except FieldError as exc:
            raise FieldError(exc.reason, f"o.{exc.detail}") from None
        if inst is None:
            return None
        try:
            side = _LIQUIDATED_SIDE.get(text(order, "S"))
            if side is None:
                raise FieldError("bad_type", f"S is {str(order['S'])[:20]!r}, not BUY or SELL")
            filled = number(order, "z")
            if filled <= 0:
                status = str(shown(order.get("X")))[:20]
                raise FieldError(
                    "absurd_value",
                    f"z is {filled:g} (X={status}): the liquidation order filled nothing, "
                    "so there is no forced flow to record",
                )
            price = positive(order, "ap")
            ts_event_ns = ms_to_ns(order, "T")
        except FieldError as exc:
            raise FieldError(exc.reason, f"{symbol}: o.{exc.detail}") from None
        try:
            event = liquidation(
                inst,
                ts_event_ns=ts_event_ns,
                ts_recv_ns=ts_recv_ns,
                liquidated_side=side,
                qty_base=filled * inst.contract_size,
                price=price,
                completeness="sampled",
                notional_label="z*ap",
            )
        except FieldError as exc:
            raise FieldError(exc.reason, f"{symbol}: {exc.detail}") from None
        return [event]

    def _mark_price(self, item: Mapping[str, Any], ts_recv_ns: int) -> list[TickEvent] | None:
        symbol, inst = self._lookup(item)
        if inst is None:
            return None
        try:
            ts_event_ns = ms_to_ns(item, "E")
            mark = positive(item, "p")
            index = None if item.get("i") in (None, "") else positive(item, "i")
            funding: tuple[float, int] | None = None
            next_time = item.get("T")
            no_next = next_time in (None, "", 0, "0") and not isinstance(next_time, bool)
            if item.get("r") not in (None, "") and not no_next:
                rate = number(item, "r")
                if abs(rate) >= MAX_ABS_FUNDING_RATE:
                    raise FieldError("absurd_value", f"r is {rate:g}: not a funding rate")
                funding = (rate, ms_to_ns(item, "T"))
        except FieldError as exc:
            raise FieldError(exc.reason, f"{symbol}: {exc.detail}") from None
        events: list[TickEvent] = [_tick(inst, ts_event_ns, ts_recv_ns, mark, "mark")]
        if index is not None:
            events.append(_tick(inst, ts_event_ns, ts_recv_ns, index, "index"))
        if funding is not None:
            rate, next_funding_ts_ns = funding
            hours = inst.funding_interval_hours or DEFAULT_FUNDING_INTERVAL_HOURS
            events.append(
                Funding(
                    venue=VENUE,
                    symbol=symbol,
                    asset=inst.asset,
                    asset_class=inst.asset_class,
                    ts_event_ns=ts_event_ns,
                    ts_recv_ns=ts_recv_ns,
                    rate=rate,
                    interval_hours=hours,
                    rate_annualized=annualized_rate(rate, hours),
                    next_funding_ts_ns=next_funding_ts_ns,
                    mark_price=mark,
                    open_interest_usd=None,
                )
            )
        return events

    def _agg_trade(self, item: Mapping[str, Any], ts_recv_ns: int) -> list[TickEvent] | None:
        symbol, inst = self._lookup(item)
        if inst is None:
            return None
        try:
            price = positive(item, "p")
            ts_event_ns = ms_to_ns(item, "T")
        except FieldError as exc:
            raise FieldError(exc.reason, f"{symbol}: {exc.detail}") from None
        return [_tick(inst, ts_event_ns, ts_recv_ns, price, "trade")]

    def _book_ticker(self, item: Mapping[str, Any], ts_recv_ns: int) -> list[TickEvent] | None:
        symbol, inst = self._lookup(item)
        if inst is None:
            return None
        try:
            bid, ask = positive(item, "b"), positive(item, "a")
            if bid > ask:
                raise FieldError("absurd_value", f"crossed book: bid b={bid:g} > ask a={ask:g}")
            ts_event_ns = ms_to_ns(item, "T")
        except FieldError as exc:
            raise FieldError(exc.reason, f"{symbol}: {exc.detail}") from None
        mid = (bid + ask) / 2.0
        if not math.isfinite(mid):
            raise FieldError("absurd_value", f"{symbol}: mid (b+a)/2 is {mid:g}")
        return [_tick(inst, ts_event_ns, ts_recv_ns, mid, "mid")]


def _tick(
    inst: Instrument,
    ts_event_ns: int,
    ts_recv_ns: int,
    price: float,
    kind: Literal["trade", "mark", "index", "mid"],
) -> PriceTick:
    return PriceTick(
        venue=VENUE,
        symbol=inst.symbol,
        asset=inst.asset,
        asset_class=inst.asset_class,
        ts_event_ns=ts_event_ns,
        ts_recv_ns=ts_recv_ns,
        price=price,
        kind=kind,
    )
