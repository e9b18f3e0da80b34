"""OKX v5 public frames → canonical events. Pure: no socket, no clock, no logger.

Channels and what they become (field names in :mod:`connectors.okx.schemas`):

- ``liquidation-orders`` (``instType=SWAP``: every swap of OKX, filtered to the universe on
  ``data[].instId``) → :class:`~streams.events.Liquidation`, one per ``details[]`` entry (ccxt
  4.5 reads only ``details[0]`` and loses the rest of a batch).
- ``funding-rate`` → :class:`~streams.events.Funding`.
- ``mark-price`` → :class:`~streams.events.PriceTick` ``kind="mark"`` (``markPx``).
- ``trades`` → :class:`~streams.events.PriceTick` ``kind="trade"`` (``px``), one per trade.
  Chosen over ``tickers.last``: every print with its own trade time, whereas a ticker snapshot
  repeats a possibly older ``last`` under the snapshot's time.
- protocol: the text ``pong`` → control ``pong``; ``event`` ``subscribe``/``unsubscribe`` →
  ``ack``; ``error`` (and ``channel-conn-count-error``) → ``error`` plus a ``venue_error``
  reject; ``notice`` (64008: server restart soon) and ``channel-conn-count`` → ``info``.

``filtered`` counts ``data[]`` items (instruments) outside the universe, not their details.
``Reject.channel`` is one of the four channel names above or ``unknown`` (a bounded label).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import orjson

from connectors.base import Instrument, ParseResult, Reject, TickEvent, instruments_by_symbol
from connectors.fields import FieldError, ms_to_ns, number, positive, require, shown, text
from connectors.frames import (
    MAX_FRAME_BYTES,
    annualized_rate,
    finite_positive,
    frame_too_large,
    liquidation,
)
from streams.events import Funding, Liquidation, PriceTick

VENUE = "okx"
_NS_PER_HOUR = 3_600_000_000_000

_ACK_EVENTS = frozenset({"subscribe", "unsubscribe"})
_INFO_EVENTS = frozenset({"notice", "channel-conn-count"})
_ERROR_EVENTS = frozenset({"error", "channel-conn-count-error"})

_ItemParser = Callable[[Mapping[str, Any], Instrument, int], list[TickEvent | Reject]]


class OkxParser:
    """Parse OKX v5 public WebSocket frames into canonical events.

    Parameters
    ----------
    instruments : Sequence[Instrument]
        The universe's OKX instruments; ``contract_size`` is the instrument's ``ctVal`` and
        ``funding_interval_hours`` the fallback when a funding frame lacks ``nextFundingTime``.

    Notes
    -----
    Event time (``ts_event_ns``) is always OKX's own time of the fact: ``details[].ts`` (the
    liquidation), ``trades[].ts`` (the trade), ``mark-price`` ``ts``; for funding, ``ts`` is
    the push time, the only time the observation is valid at (``fundingTime`` is a future
    settlement, not when the rate was observed).

    Liquidations (OKX docs, "Liquidation orders channel"):

    - ``liquidated_side``: ``posSide`` (``long``/``short``) names the closed position
      directly; with ``posSide`` ``net``, missing or empty, it comes from the ORDER side
      (``sell`` closes a long, ``buy`` closes a short). When ``posSide`` is ``long``/``short``
      the order side must be the closing one (``long``+``sell``, ``short``+``buy``); a frame
      where they disagree is rejected (``absurd_value``) rather than guessed.
    - ``qty_base = sz × contract_size``: ``sz`` is in contracts (ctVal 0.01 BTC for
      ``BTC-USDT-SWAP``). Only valid for linear swaps, which ``markets.py`` enforces.
    - ``price = bkPx``, OKX's "liquidation mark price" (the price of the transaction with the
      liquidation account; older docs: bankruptcy price), not an average fill.
    - ``notional_usd = qty_base × bkPx``: USDT (the quote) is taken as USD; a de-peg would show
      in every USDT venue alike.
    - ``completeness = "sampled"``: "This data doesn't represent the total number of
      liquidations on OKX" (docs); older docs: at most one order per contract per second.

    Funding: ``fundingTime`` is the settlement time of the period being accrued, i.e. the NEXT
    settlement, when ``fundingRate`` is paid (in the docs' example ``ts`` = 07:31:15 UTC,
    ``fundingTime`` = 08:00, ``nextFundingTime`` = 16:00). So ``next_funding_ts_ns`` =
    ``fundingTime`` (ccxt calls it ``fundingTimestamp`` and calls ``nextFundingTime`` the next
    one, which is one period too far). ``interval_hours`` = ``nextFundingTime − fundingTime``
    (OKX intervals are 1-8 h), else the instrument's ``funding_interval_hours``;
    ``rate_annualized = rate × 24 / interval_hours × 365``. The frame carries no mark price or
    open interest (both None).

    Examples
    --------
    >>> from connectors.base import Instrument
    >>> parser = OkxParser([Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", 0.01)])
    >>> frame = ('{"arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},"data":[{"instType":'
    ...          '"SWAP","instId":"BTC-USDT-SWAP","markPx":"61234.5","ts":"1760130000000"}]}')
    >>> tick = parser.parse(frame, ts_recv_ns=1_760_130_000_050_000_000).events[0]
    >>> tick.price, tick.kind, tick.ts_event_ns
    (61234.5, 'mark', 1760130000000000000)
    >>> parser.parse("pong", 0).control
    'pong'
    >>> parser.parse(b"\\xff", 0).rejects[0].reason
    'malformed_json'
    """

    venue = VENUE

    def __init__(self, instruments: Sequence[Instrument]) -> None:
        self._instruments = instruments_by_symbol(instruments)
        self._channels: dict[str, _ItemParser] = {
            "liquidation-orders": self._liquidations,
            "funding-rate": self._funding,
            "mark-price": self._mark_price,
            "trades": self._trades,
        }

    def parse(self, raw: str | bytes, ts_recv_ns: int) -> ParseResult:
        """Turn one raw frame into events, rejects, a control kind and a filtered count.

        Never raises: every problem becomes a :class:`~connectors.base.Reject`; one bad item
        of a batch rejects that item only.
        """
        result = ParseResult()
        try:
            self._parse(raw, ts_recv_ns, result)
        except Exception as exc:  # a safety net: a parser bug must not kill the connection
            detail = f"unexpected {type(exc).__name__}: {str(exc)[:200]}"
            result.rejects.append(Reject("bad_type", detail))
        return result

    def _parse(self, raw: str | bytes, ts_recv_ns: int, result: ParseResult) -> None:
        if frame_too_large(raw):
            result.rejects.append(Reject("oversize", f"frame over {MAX_FRAME_BYTES} bytes"))
            return
        if raw == "pong" or raw == b"pong":
            result.control = "pong"
            return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            result.rejects.append(Reject("malformed_json", str(exc)[:200]))
            return
        if not isinstance(msg, dict):
            detail = f"top level is a JSON {type(msg).__name__}, expected an object"
            result.rejects.append(Reject("malformed_json", detail))
            return
        if "event" in msg:
            self._event(msg, result)
        elif "arg" in msg and "data" in msg:
            self._push(msg, ts_recv_ns, result)
        else:
            keys = ", ".join(sorted(str(k) for k in msg)[:8])
            result.rejects.append(Reject("unknown_message", f"no event/arg+data; keys: {keys}"))

    def _event(self, msg: Mapping[str, Any], result: ParseResult) -> None:
        event = msg["event"] if isinstance(msg["event"], str) else shown(msg["event"])
        channel = self._label(msg.get("arg"))
        if event in _ACK_EVENTS:
            result.control = "ack"
        elif event in _INFO_EVENTS:
            result.control = "info"
        elif event in _ERROR_EVENTS:
            result.control = "error"
            code, message = shown(msg.get("code", "?")), shown(msg.get("msg", ""))
            detail = f"{event} {str(code)[:20]}: {str(message)[:300]}"
            result.rejects.append(Reject("venue_error", detail, channel))
        else:
            detail = f"unknown event {str(event)[:40]!r}"
            result.rejects.append(Reject("unknown_message", detail, channel))

    def _push(self, msg: Mapping[str, Any], ts_recv_ns: int, result: ParseResult) -> None:
        channel = _channel_name(msg["arg"])
        item_parser = self._channels.get(channel)
        if item_parser is None:
            detail = f"unhandled channel {channel[:40]!r}"
            result.rejects.append(Reject("unknown_message", detail))
            return
        data = msg["data"]
        if not isinstance(data, list):
            detail = f"data must be a list, got {type(data).__name__}"
            result.rejects.append(Reject("bad_type", detail, channel))
            return
        if not data:  # nothing to parse, but a frame must never vanish silently
            result.rejects.append(Reject("missing_field", "data is an empty list", channel))
            return
        for item in data:
            try:
                instrument = self._instruments.get(text(item, "instId"))
                if instrument is None:
                    result.filtered += 1
                    continue
                outputs = item_parser(item, instrument, ts_recv_ns)
            except ValueError as exc:
                outputs = [_reject(exc, channel)]
            for out in outputs:
                if isinstance(out, Reject):
                    result.rejects.append(out)
                else:
                    result.events.append(out)

    def _label(self, arg: Any) -> str:
        """The channel as a bounded label: a known channel name or ``unknown``."""
        channel = _channel_name(arg)
        return channel if channel in self._channels else "unknown"

    def _liquidations(
        self, item: Mapping[str, Any], instrument: Instrument, ts_recv_ns: int
    ) -> list[TickEvent | Reject]:
        details = require(item, "details")
        if not isinstance(details, list):
            raise FieldError("bad_type", f"details must be a list, got {type(details).__name__}")
        if not details:
            raise FieldError("missing_field", f"details is empty for {instrument.symbol}")
        outputs: list[TickEvent | Reject] = []
        for detail in details:  # each detail alone: a bad one does not sink its neighbours
            try:
                outputs.append(_liquidation(detail, instrument, ts_recv_ns))
            except ValueError as exc:
                outputs.append(_reject(exc, "liquidation-orders"))
        return outputs

    def _funding(
        self, item: Mapping[str, Any], instrument: Instrument, ts_recv_ns: int
    ) -> list[TickEvent | Reject]:
        rate = number(item, "fundingRate")
        settle_ns = ms_to_ns(item, "fundingTime")
        if item.get("nextFundingTime") in (None, ""):
            if instrument.funding_interval_hours is None:
                raise FieldError(
                    "missing_field",
                    f"nextFundingTime is missing and {instrument.symbol} has no "
                    "funding_interval_hours to fall back on",
                )
            interval_hours = instrument.funding_interval_hours
        else:
            after_ns = ms_to_ns(item, "nextFundingTime")
            interval_hours = (after_ns - settle_ns) / _NS_PER_HOUR
        if not 0 < interval_hours <= 24:
            raise FieldError(
                "absurd_value",
                f"funding interval {interval_hours:g} h (nextFundingTime - fundingTime) "
                "is outside (0, 24]",
            )
        annualized = annualized_rate(rate, interval_hours)
        if not math.isfinite(annualized):
            raise FieldError("absurd_value", f"fundingRate {rate:g} annualizes to {annualized}")
        return [
            Funding(
                venue=VENUE,
                symbol=instrument.symbol,
                asset=instrument.asset,
                asset_class=instrument.asset_class,
                ts_event_ns=ms_to_ns(item, "ts"),
                ts_recv_ns=ts_recv_ns,
                rate=rate,
                interval_hours=interval_hours,
                rate_annualized=annualized,
                next_funding_ts_ns=settle_ns,
            )
        ]

    def _mark_price(
        self, item: Mapping[str, Any], instrument: Instrument, ts_recv_ns: int
    ) -> list[TickEvent | Reject]:
        return [_tick(instrument, item, "markPx", "mark", ts_recv_ns)]

    def _trades(
        self, item: Mapping[str, Any], instrument: Instrument, ts_recv_ns: int
    ) -> list[TickEvent | Reject]:
        return [_tick(instrument, item, "px", "trade", ts_recv_ns)]


def _reject(exc: ValueError, channel: str) -> Reject:
    """A reject from a field error (or another ValueError, e.g. ``int()`` of ``"²"``)."""
    if isinstance(exc, FieldError):
        return Reject(exc.reason, exc.detail, channel)
    return Reject("bad_type", str(exc)[:200], channel)


def _liquidation(detail: Any, instrument: Instrument, ts_recv_ns: int) -> Liquidation:
    side = text(detail, "side")
    if side not in ("buy", "sell"):
        raise FieldError("bad_type", f"side must be buy or sell, got {side[:20]!r}")
    from_order: Literal["long", "short"] = "long" if side == "sell" else "short"
    pos_side = detail.get("posSide")
    if pos_side in (None, "", "net"):
        liquidated: Literal["long", "short"] = from_order
    elif pos_side in ("long", "short"):
        if pos_side != from_order:
            raise FieldError(
                "absurd_value",
                f"posSide {pos_side} contradicts order side {side} "
                "(a long is closed by a sell, a short by a buy)",
            )
        liquidated = from_order
    else:
        raise FieldError(
            "bad_type", f"posSide must be long, short or net, got {shown(pos_side)!r:.30}"
        )
    contracts = positive(detail, "sz")
    price = positive(detail, "bkPx")
    qty_base = finite_positive("qty_base (sz × ctVal)", contracts * instrument.contract_size)
    return liquidation(
        instrument,
        ts_event_ns=ms_to_ns(detail, "ts"),
        ts_recv_ns=ts_recv_ns,
        liquidated_side=liquidated,
        qty_base=qty_base,
        price=price,
        completeness="sampled",
        notional_label="(qty_base × bkPx)",
    )


def _tick(
    instrument: Instrument,
    item: Mapping[str, Any],
    key: str,
    kind: Literal["trade", "mark"],
    ts_recv_ns: int,
) -> PriceTick:
    return PriceTick(
        venue=VENUE,
        symbol=instrument.symbol,
        asset=instrument.asset,
        asset_class=instrument.asset_class,
        ts_event_ns=ms_to_ns(item, "ts"),
        ts_recv_ns=ts_recv_ns,
        price=positive(item, key),
        kind=kind,
    )


def _channel_name(arg: Any) -> str:
    if isinstance(arg, Mapping):
        channel = arg.get("channel")
        if isinstance(channel, str) and channel:
            return channel
    return "unknown"
