"""Venue market metadata: disk cache, refresh, stale fallback, injected fetcher, URL override."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from connectors.markets import (
    MarketsUnavailableError,
    _point_at,
    cache_path,
    instruments_for,
    load_markets,
)
from streams.config import load_universe

MARKETS = {"BTC/USDT:USDT": {"id": "BTCUSDT", "swap": True, "linear": True, "contractSize": 1.0,
                             "info": {"symbol": "BTCUSDT", "fundingIntervalHours": 4}}}  # fmt: skip


def _fetcher(calls: list[str], result: Any = MARKETS, fail: bool = False) -> Any:
    async def fetch(venue: str) -> Any:
        calls.append(venue)
        if fail:
            raise ConnectionError("venue REST down")
        return result

    return fetch


def test_fetch_once_then_cache_then_refresh(tmp_path: Path) -> None:
    calls: list[str] = []
    first = load_markets("binance", tmp_path, fetch=_fetcher(calls))
    second = load_markets("binance", tmp_path, fetch=_fetcher(calls))
    assert first == second == MARKETS
    assert calls == ["binance"]  # the second read came from disk
    load_markets("binance", tmp_path, refresh=True, fetch=_fetcher(calls))
    assert calls == ["binance", "binance"]
    assert json.loads(cache_path(tmp_path, "binance").read_text()) == MARKETS


def test_old_cache_is_refetched_and_used_when_the_venue_is_down(tmp_path: Path) -> None:
    calls: list[str] = []
    load_markets("okx", tmp_path, fetch=_fetcher(calls))
    old = time.time() - 2 * 86_400
    os.utime(cache_path(tmp_path, "okx"), (old, old))
    stale = load_markets("okx", tmp_path, fetch=_fetcher(calls, fail=True))
    assert stale == MARKETS
    assert calls == ["okx", "okx"]  # it did try


def test_no_cache_and_venue_down_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MarketsUnavailableError, match=r"bybit: cannot load markets .*venue REST"):
        load_markets("bybit", tmp_path, fetch=_fetcher([], fail=True))


def test_instruments_for_dispatches_to_the_venue(tmp_path: Path) -> None:
    universe = load_universe(None)
    markets = {
        f"{sym}/USDT:USDT": {"id": f"{sym}USDT", "symbol": f"{sym}/USDT:USDT", "swap": True,
                             "linear": True, "contractSize": 1.0, "info": {}}
        for sym in ("BTC", "ETH", "SOL", "XRP", "XAU")
    }  # fmt: skip
    insts = instruments_for("binance", markets, universe)
    assert [(i.symbol, i.asset, i.asset_class, i.funding_interval_hours) for i in insts] == [
        ("BTCUSDT", "BTC", "crypto", 8.0),
        ("ETHUSDT", "ETH", "crypto", 8.0),
        ("SOLUSDT", "SOL", "crypto", 8.0),
        ("XRPUSDT", "XRP", "crypto", 8.0),
        ("XAUUSDT", "GOLD", "metal", 8.0),
    ]
    with pytest.raises(ValueError, match="no connector for venue 'kraken'"):
        instruments_for("kraken", markets, universe)


async def test_rest_url_override_rewrites_every_api_url() -> None:
    exchange = ccxt_async.binanceusdm()
    try:
        _point_at(exchange, "http://127.0.0.1:9999")
        urls: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, str):
                urls.append(node)
            elif isinstance(node, dict):
                for value in node.values():
                    walk(value)

        walk(exchange.urls["api"])
        http = [u for u in urls if u.startswith("http")]
        assert http
        assert all(u.startswith("http://127.0.0.1:9999") for u in http)
        assert "http://127.0.0.1:9999/fapi/v1" in http
    finally:
        await exchange.close()
