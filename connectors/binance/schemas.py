"""Binance USD-M futures WebSocket frames, with the field names Binance uses.

Sources: the USD-M "WebSocket Market Streams" docs (Liquidation Order Streams, Mark Price
Stream, Aggregate Trade Streams, Individual Symbol Book Ticker Streams, Live Subscribing /
Unsubscribing to streams) and ``shared/notes/exchanges.md`` §1. Numbers that carry prices,
quantities and rates arrive as **decimal strings** (``"9910"``); times are **integer
milliseconds** since the Unix epoch (UTC). Quantities of USD-M contracts are in **base units**
(BTC for ``BTCUSDT``); prices are in the quote asset (USDT).

Binance adds undocumented keys without notice (2026 frames carry ``ps``, ``st``, ``nq``, ``ap``);
the parser ignores keys it does not use. These TypedDicts document the wire; the parser never
trusts them (it reads every field through :mod:`connectors.fields`).

>>> frame: CombinedFrame = {"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade"}}
>>> frame["stream"].split("@")[1]
'aggTrade'
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class CombinedFrame(TypedDict):
    """Envelope of every frame on a combined-stream connection (``/market/stream?streams=``)."""

    stream: str  # stream name, lower-case symbol: "btcusdt@aggTrade", "!forceOrder@arr"
    data: Any  # the raw payload: one event object, or a list of them (!markPrice@arr@1s)


class ForceOrderOrder(TypedDict):
    """``o`` of a ``forceOrder`` event: the liquidation order as the engine filled it."""

    s: str  # symbol, e.g. "BTCUSDT"
    S: Literal["BUY", "SELL"]  # ORDER side: SELL = a LONG position was liquidated, BUY = short
    o: str  # order type, "LIMIT"
    f: str  # time in force, "IOC"
    q: str  # original order quantity, base units (COIN-M: contracts)
    p: str  # order (limit) price, quote per base: NOT the fill price
    ap: str  # average fill price, quote per base (the price firesale reports)
    X: str  # order status: "FILLED" normally; NEW / PARTIALLY_FILLED / EXPIRED possible
    l: str  # noqa: E741  (Binance's name) quantity of the LAST fill only, base units
    z: str  # ACCUMULATED filled quantity, base units (the quantity firesale reports)
    T: int  # order trade time, ms: when the (last) fill happened
    ps: NotRequired[str]  # undocumented (2026 captures): pair, e.g. "XRPUSDT"
    st: NotRequired[int]  # undocumented (2026 captures)


class ForceOrderEvent(TypedDict):
    """``<symbol>@forceOrder`` / ``!forceOrder@arr`` payload (one object per frame in 2026).

    At most the latest liquidation per symbol per 1000 ms is pushed: the feed is sampled.
    """

    e: Literal["forceOrder"]  # event type
    E: int  # event time, ms: when the stream pushed this snapshot (up to ~1 s after o.T)
    o: ForceOrderOrder


class MarkPriceUpdate(TypedDict):
    """``<symbol>@markPrice[@1s]`` payload; ``!markPrice@arr[@1s]`` sends a list of them."""

    e: Literal["markPriceUpdate"]  # event type
    E: int  # event time, ms: when mark price and funding were computed
    s: str  # symbol
    p: str  # mark price, quote per base
    i: str  # index price, quote per base (TradFi perps: frozen while the reference is closed)
    P: str  # estimated settle price, quote per base (meaningful only before settlement)
    r: str  # funding rate PER FUNDING INTERVAL, decimal ("0.00038167" = 0.038167 %); "" COIN-M
    T: int  # next funding time, ms; 0 for COIN-M delivery contracts
    ap: NotRequired[str]  # undocumented (2026 third-party frames)
    st: NotRequired[int]  # undocumented (2026 third-party frames)


class AggTrade(TypedDict):
    """``<symbol>@aggTrade`` payload (``/market``): trades aggregated by taker order and price."""

    e: Literal["aggTrade"]  # event type
    E: int  # event time, ms: push time
    a: int  # aggregate trade id
    s: str  # symbol
    p: str  # price, quote per base
    q: str  # quantity, base units
    f: int  # first trade id
    l: int  # noqa: E741  (Binance's name) last trade id
    T: int  # trade time, ms
    m: bool  # buyer is the maker (True means the taker SOLD)
    nq: NotRequired[str]  # undocumented (2026): quantity excluding RPI-order fills, base units


class BookTicker(TypedDict):
    """``<symbol>@bookTicker`` payload (``/public`` since the 2026 URL split): best bid/ask."""

    e: Literal["bookTicker"]  # event type
    u: int  # order book update id
    s: str  # symbol
    b: str  # best bid price, quote per base
    B: str  # best bid quantity, base units
    a: str  # best ask price, quote per base
    A: str  # best ask quantity, base units
    T: int  # transaction time, ms (matching engine)
    E: int  # event time, ms (push)
    ps: NotRequired[str]  # undocumented (2026)
    st: NotRequired[int]  # undocumented (2026)


class SubscribeRequest(TypedDict):
    """Client → server: ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``."""

    method: str  # "SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", ...
    params: NotRequired[list[str]]  # stream names
    id: int  # unsigned request id, echoed in the response


class SubscribeResponse(TypedDict):
    """Server → client answer to a request: ``{"result": null, "id": 1}`` (a list for LIST_*)."""

    result: list[str] | None  # null = accepted; a list answers LIST_SUBSCRIPTIONS
    id: int  # the request id


class ErrorResponse(TypedDict):
    """Server → client error: ``{"code": 2, "msg": "Invalid request: ..."}``."""

    code: int  # 0 unknown property, 1 bad value type, 2 invalid request, 3 invalid JSON
    msg: str  # human-readable reason
    id: NotRequired[int | None]  # the request id when known


class FundingInfoRow(TypedDict):
    """One row of REST ``GET /fapi/v1/fundingInfo``: symbols whose funding settings differ.

    Symbols absent from the answer settle every 8 h (Binance's default).
    """

    symbol: str  # symbol, e.g. "BLZUSDT"
    adjustedFundingRateCap: str  # per-interval cap, decimal
    adjustedFundingRateFloor: str  # per-interval floor, decimal
    fundingIntervalHours: int  # settlement cycle in hours (1, 4 or 8)
    disclaimer: bool  # undocumented meaning
