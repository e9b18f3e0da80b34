"""OKX v5 public WebSocket frames, with the field names OKX uses.

Source: the OKX v5 API docs (https://www.okx.com/docs-v5/en/, copies of 2026-07) and the recorded
frames in ``tests/fixtures/exchanges/okx_*.json`` (provenance in ``SOURCES_okx.md``). OKX sends
every number and every timestamp as a **string** (``"0.007831"``, ``"1692266434010"``); an empty
string ``""`` means "no value". Timestamps are Unix epoch **milliseconds**, UTC.

These TypedDicts document the wire format; the parser reads frames with the strict readers of
:mod:`connectors.fields` and never trusts these types at run time.

Examples
--------
>>> arg: OkxArg = {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}
>>> request: OkxSubscribeRequest = {"id": "1", "op": "subscribe", "args": [arg]}
>>> request["args"][0]["channel"]
'mark-price'
"""

from __future__ import annotations

from typing import Literal, TypedDict


class OkxArg(TypedDict, total=False):
    """One channel subscription (``args[]`` of a request, ``arg`` of an ack or a push)."""

    channel: str  # channel name: liquidation-orders | funding-rate | mark-price | trades | ...
    instId: str  # instrument id, e.g. "BTC-USDT-SWAP" (per-instrument channels)
    instType: str  # SWAP | FUTURES | MARGIN | OPTION (liquidation-orders: all instruments of it)
    instFamily: str  # e.g. "BTC-USDT" (replaces the retired ``uly`` subscription parameter)


class OkxSubscribeRequest(TypedDict):
    """Client → server: ``{"id":"1","op":"subscribe","args":[...]}``.

    ``id`` (optional on the wire, up to 32 alphanumerics) is echoed in the ack. Every
    subscribe/unsubscribe counts against OKX's 480 per hour per connection.
    """

    id: str
    op: Literal["subscribe", "unsubscribe"]
    args: list[OkxArg]


class OkxEvent(TypedDict, total=False):
    """Server → client protocol message (no market data).

    - ack: ``{"id":"1","event":"subscribe","arg":{...},"connId":"a4d3ae55"}``, one per arg.
    - error: ``{"id":"1","event":"error","code":"60012","msg":"Invalid request: ...",
      "connId":"a4d3ae55"}`` (60012 invalid request, 60018 channel does not exist).
    - notice: ``{"event":"notice","code":"64008","msg":"The connection will soon be closed for
      a service upgrade. Please reconnect."}``.
    - channel-conn-count: how many connections hold a channel (informational).
    """

    id: str  # the request's id, echoed
    event: str  # subscribe | unsubscribe | error | notice | channel-conn-count | ...
    arg: OkxArg  # the channel the ack is about
    code: str  # error/notice code, e.g. "60012", "64008"
    msg: str  # human-readable error/notice text
    connId: str  # OKX's connection id (for their support)


class OkxLiquidationDetail(TypedDict, total=False):
    """One liquidation order, ``data[].details[]`` of ``liquidation-orders``."""

    side: str  # ORDER side of the liquidation order: "sell" closes a long, "buy" closes a short
    posSide: str  # position side: "long" | "short" (hedge mode) | "net" (net mode: use side)
    sz: str  # quantity in CONTRACTS for SWAP/FUTURES (× the instrument's ctVal = base units)
    bkPx: str  # "liquidation mark price": the price of the transaction with OKX's liquidation
    # account (older docs: bankruptcy price); quote currency (USDT) per base unit
    bkLoss: str  # bankruptcy loss, settlement currency ("0" when none)
    ccy: str  # liquidation currency, MARGIN only ("" otherwise)
    ts: str  # liquidation time, epoch ms


class OkxLiquidationItem(TypedDict, total=False):
    """One instrument of a ``liquidation-orders`` push (``data[]``)."""

    instId: str  # instrument id, e.g. "BTC-USDT-SWAP" (the channel covers ALL of instType)
    instType: str  # SWAP | FUTURES | MARGIN | OPTION
    instFamily: str  # e.g. "BTC-USDT"
    uly: str  # underlying, e.g. "BTC-USDT" (legacy alias of instFamily)
    details: list[OkxLiquidationDetail]  # one or more liquidation orders: read them ALL


class OkxFundingRateItem(TypedDict, total=False):
    """One ``funding-rate`` push item (pushed every 30-90 s per instrument)."""

    instId: str  # instrument id
    instType: str  # SWAP (FUTURES for "X-Perp" instruments such as BTC-USD_UM_XPERP-310404)
    fundingRate: str  # rate of the CURRENT period, paid at fundingTime (0.0001 = 0.01 %)
    fundingTime: str  # settlement time of the current period = the NEXT settlement, epoch ms
    nextFundingTime: str  # the settlement after fundingTime, epoch ms
    prevFundingTime: str  # the last settlement, epoch ms (X-Perps only)
    nextFundingRate: str  # deprecated: always "" now
    method: str  # "current_period" (rate fixed for the period being accrued)
    formulaType: str  # "noRate" | "withRate": whether an interest-rate leg is in the formula
    minFundingRate: str  # floor of fundingRate
    maxFundingRate: str  # cap of fundingRate
    premium: str  # premium index (mark vs index)
    interestRate: str  # interest-rate component ("" with formulaType noRate)
    impactValue: str  # depth-weighted impact notional ("" when unused)
    settState: str  # "processing" | "settled": state of the last settlement
    settFundingRate: str  # the rate settled at the last settlement
    ts: str  # push (data generation) time, epoch ms


class OkxMarkPriceItem(TypedDict, total=False):
    """One ``mark-price`` push item (every 200 ms on change, else every 10 s)."""

    instId: str  # instrument id
    instType: str  # SWAP | FUTURES | MARGIN | OPTION
    markPx: str  # mark price, quote currency per base unit
    ts: str  # mark price time, epoch ms


class OkxTradeItem(TypedDict, total=False):
    """One ``trades`` push item: one taker order's fills, aggregated."""

    instId: str  # instrument id
    tradeId: str  # id of the last aggregated fill
    px: str  # trade price, quote currency per base unit
    sz: str  # quantity: CONTRACTS for SWAP/FUTURES, base currency for SPOT
    side: str  # taker side: buy | sell
    ts: str  # trade time, epoch ms
    count: str  # number of fills aggregated (absent in frames before 2023)
    source: str  # "0" normal order, "1" enhanced liquidity program
    seqId: int  # sequence id of the push


class OkxPush(TypedDict):
    """Server → client market data: ``{"arg":{...},"data":[...]}``."""

    arg: OkxArg
    data: list[object]


class OkxInstrument(TypedDict, total=False):
    """Raw ``GET /api/v5/public/instruments`` row (ccxt puts it in ``market['info']``)."""

    instId: str  # e.g. "XAU-USDT-SWAP"
    instType: str  # SPOT | MARGIN | SWAP | FUTURES | OPTION
    ctType: str  # "linear" (USDT/USDC-margined) | "inverse" (coin-margined)
    ctVal: str  # contract value: how many ctValCcy one contract is (0.01 for BTC-USDT-SWAP)
    ctValCcy: str  # unit of ctVal: the base currency for linear, "USD" for inverse swaps
    ctMult: str  # contract multiplier ("1" for swaps)
    settleCcy: str  # margin and settlement currency: USDT, USDC, or the coin for inverse
    state: str  # live | suspend | preopen | test | rebase
    instCategory: str  # asset class (third-party evidence): 1 crypto, 3 stocks, 4 commodities
    ruleType: str  # "normal" | "pre_market" | "rebase_contract" (leveraged-ETF contracts)
