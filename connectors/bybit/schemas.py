"""Bybit v5 public linear WebSocket frames, with the field names Bybit uses.

Source: the official docs (``bybit-exchange/docs`` at commit ``072c197d``, 2026-07-24, and a stored
copy of https://bybit-exchange.github.io/docs/v5/websocket/public/ticker of 2026-10-10), checked
against the verbatim frames in ``tests/fixtures/exchanges/bybit_*.json``. Numbers come as decimal
strings unless noted; times are epoch milliseconds (UTC). USDT-settled perpetuals quote in USDT.

These types document the wire format; the parser reads frames through the strict readers of
:mod:`connectors.fields`, never by trusting these annotations.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# ---------------------------------------------------------------------------------------------
# Requests (client → server)


class SubscribeRequest(TypedDict):
    """``{"req_id":"sub-0","op":"subscribe","args":["allLiquidation.BTCUSDT", ...]}``."""

    req_id: str  # echoed in the reply; free text chosen by the client
    op: Literal["subscribe", "unsubscribe"]
    args: list[str]  # topics; the sum of their lengths must stay ≤ 21,000 chars per connection


class PingRequest(TypedDict):
    """``{"req_id":"7","op":"ping"}``: send every 20 s, or the server cuts the link after 10 min."""

    req_id: str
    op: Literal["ping"]


# ---------------------------------------------------------------------------------------------
# Replies to requests (server → client)


class OpResponse(TypedDict):
    """Reply to a request: subscribe ack/failure or pong (linear/inverse format).

    ``bybit_subscribe_ack.json``: ``{"success":true,"ret_msg":"","conn_id":"…","req_id":"",
    "op":"subscribe"}``; ``bybit_pong.json``: same shape with ``ret_msg="pong"``, ``op="ping"``.
    A failed subscribe has ``success=false`` and ``ret_msg`` like
    ``"error:handler not found,topic:dcp.future"``.
    """

    success: bool  # false = the request failed; ret_msg says why
    ret_msg: str  # "" for an ack, "pong" for a pong, the error text otherwise
    conn_id: str  # server-side connection id
    req_id: NotRequired[str]  # the request's req_id ("" when the request had none)
    op: str  # the request's op: "subscribe", "unsubscribe", "ping"


# ---------------------------------------------------------------------------------------------
# allLiquidation.{symbol}: every liquidation, batched every 500 ms


class AllLiquidationItem(TypedDict):
    """One liquidation (an element of ``data``)."""

    T: int  # liquidation time, ms (number, not a string)
    s: str  # symbol, e.g. "BTCUSDT"
    S: Literal["Buy", "Sell"]  # POSITION side: "Buy" = a long position was liquidated
    v: str  # executed size, base coin for linear contracts (USD for inverse)
    p: str  # bankruptcy price (quote currency, USDT), not the fill price


class AllLiquidationFrame(TypedDict):
    """``{"topic":"allLiquidation.ROSEUSDT","type":"snapshot","ts":…,"data":[…]}``.

    ``type`` is always ``snapshot`` but every item is a new event (a list, not state).
    """

    topic: str  # "allLiquidation.{symbol}"
    type: Literal["snapshot"]
    ts: int  # push time of the batch, ms (≤ 500 ms after the items' T)
    data: list[AllLiquidationItem]


# ---------------------------------------------------------------------------------------------
# liquidation.{symbol}: deprecated (page deleted 2025-11-19), at most one per second per symbol


class LiquidationData(TypedDict):
    """The single liquidation of a deprecated ``liquidation.{symbol}`` frame."""

    updatedTime: int  # liquidation time, ms (the docs table calls it updateTime)
    symbol: str
    side: Literal["Buy", "Sell"]  # POSITION side, as in allLiquidation: "Buy" = long liquidated
    size: str  # executed size, base coin
    price: str  # bankruptcy price, USDT


class LiquidationFrame(TypedDict):
    """``{"topic":"liquidation.BTCUSDT","type":"snapshot","ts":…,"data":{…}}`` (an object)."""

    topic: str
    type: Literal["snapshot"]
    ts: int  # push time, ms
    data: LiquidationData


# ---------------------------------------------------------------------------------------------
# tickers.{symbol}: snapshot, then deltas holding only the fields that changed (every 100 ms)


class TickerData(TypedDict, total=False):
    """Linear ticker fields (all strings). A delta carries ``symbol`` plus the changed fields."""

    symbol: str  # always present
    tickDirection: str  # PlusTick, ZeroPlusTick, MinusTick, ZeroMinusTick
    price24hPcnt: str  # 24 h change as a fraction ("0.023333" = +2.33 %)
    lastPrice: str  # last traded price, USDT
    prevPrice24h: str  # price 24 h ago
    highPrice24h: str
    lowPrice24h: str
    prevPrice1h: str
    markPrice: str  # mark price, USDT (used for liquidations and unrealised PnL)
    indexPrice: str  # index price, USDT
    openInterest: str  # open interest, base coin, BOTH sides summed (docs of 2026-10)
    openInterestValue: str  # open interest value, USDT, BOTH sides summed (2 × one side)
    singleOpenInterest: str  # open interest, base coin, one side (the conventional figure)
    singleOpenInterestValue: str  # open interest value, USDT, one side
    turnover24h: str  # 24 h turnover, USDT
    volume24h: str  # 24 h volume, base coin
    fundingIntervalHour: str  # funding settlement cycle, whole hours ("8"); perpetuals only
    fundingCap: str  # funding rate cap (absolute, per interval)
    nextFundingTime: str  # next settlement, ms as a STRING; "" on dated futures
    fundingRate: str  # current rate per interval, fraction ("0.0001" = 0.01 %); "" on futures
    bid1Price: str
    bid1Size: str  # base coin
    ask1Price: str
    ask1Size: str  # base coin
    deliveryTime: str  # dated futures only, ISO 8601 UTC
    basisRate: str  # dated futures only
    preOpenPrice: str  # pre-market contracts only
    preQty: str
    curPreListingPhase: str


class TickerFrame(TypedDict):
    """``{"topic":"tickers.BTCUSDT","type":"snapshot"|"delta","data":{…},"cs":…,"ts":…}``."""

    topic: str  # "tickers.{symbol}"
    type: Literal["snapshot", "delta"]
    data: TickerData
    cs: int  # cross sequence (matching-engine version)
    ts: int  # time the system generated the data, ms


# ---------------------------------------------------------------------------------------------
# REST instruments-info row (ccxt keeps it as ``market["info"]``)


class InstrumentInfo(TypedDict, total=False):
    """The fields of ``GET /v5/market/instruments-info?category=linear`` that markets.py reads."""

    symbol: str  # "BTCUSDT", the WebSocket topic suffix
    contractType: str  # LinearPerpetual, LinearFutures
    status: str  # Trading, PreLaunch, Settling, Delivering, Closed
    baseCoin: str
    quoteCoin: str
    settleCoin: str
    fundingInterval: int  # funding cycle in MINUTES (480 = 8 h); 0 for dated futures
    symbolType: str  # "", innovation, adventure, xstocks, commodity, stock, forex
