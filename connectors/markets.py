"""Market metadata from ccxt (contract sizes, symbol maps, funding intervals), cached on disk.

``load_markets(venue)`` asks ccxt's REST client for the venue's instruments once and keeps the
result in ``<cache>/markets/<venue>.json``; later starts read the file until it is older than
``max_age_s`` (or ``refresh=True``). Tests and offline runs inject markets by writing that file,
or skip this module and pass :class:`~connectors.base.Instrument` lists directly.

Each venue's ``markets.instruments_from_markets`` turns ccxt's unified market dicts into the
instruments its parser needs (OKX ``ctVal``, Bybit ``fundingInterval``...).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from connectors.base import Instrument
from streams.config import Settings, Universe

log = logging.getLogger("firesale.connectors")

CCXT_CLASS = {"binance": "binanceusdm", "bybit": "bybit", "okx": "okx"}
# Only the market types the connectors use: fewer REST calls and a smaller cache (ccxt would
# otherwise also list spot and options).
CCXT_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {},
    "bybit": {"options": {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]}}},
    "okx": {"options": {"defaultType": "swap", "fetchMarkets": {"types": ["swap"]}}},
}

Markets = Mapping[str, Mapping[str, Any]]


class MarketsUnavailableError(Exception):
    """Markets could not be fetched and no cached copy exists."""


def cache_path(cache_dir: Path, venue: str) -> Path:
    """Where the venue's markets are cached."""
    return cache_dir / "markets" / f"{venue}.json"


async def fetch_markets(venue: str, rest_url: str | None = None) -> dict[str, Any]:
    """Fetch the venue's markets with ccxt (async REST). ``rest_url`` overrides the API host."""
    import ccxt.async_support as ccxt_async

    exchange = getattr(ccxt_async, CCXT_CLASS[venue])(CCXT_OPTIONS[venue])
    if rest_url:
        _point_at(exchange, rest_url)
    try:
        markets: dict[str, Any] = await exchange.load_markets()
        if venue == "binance":
            try:
                rows = await exchange.fapiPublicGetFundingInfo()
                for market in markets.values():
                    market.setdefault("info", {})
                for row in rows:
                    for market in markets.values():
                        if market.get("id") == row.get("symbol"):
                            market["info"]["fundingIntervalHours"] = row.get("fundingIntervalHours")
            except Exception as exc:  # the default 8 h then applies; say so
                log.warning("binance fundingInfo unavailable (%s): 8 h funding assumed", exc)
        return markets
    finally:
        await exchange.close()


def _point_at(exchange: Any, rest_url: str) -> None:
    """Rewrite every REST URL of a ccxt exchange to ``rest_url`` (tests, proxies)."""

    def rewrite(node: Any) -> Any:
        if isinstance(node, str) and node.startswith("http"):
            path = node.split("//", 1)[1].split("/", 1)
            return rest_url.rstrip("/") + ("/" + path[1] if len(path) > 1 else "")
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        return node

    exchange.urls["api"] = rewrite(exchange.urls["api"])
    exchange.hostname = rest_url.split("//", 1)[1].rstrip("/")


def load_markets(
    venue: str,
    cache_dir: Path,
    *,
    max_age_s: float = 24 * 3600,
    refresh: bool = False,
    fetch: Callable[[str], Any] | None = None,
) -> Markets:
    """The venue's markets, from the cache when fresh, else from ccxt (then cached).

    When fetching fails and a stale cache exists, the stale copy is used (with a warning):
    contract sizes rarely change, and a venue's REST outage should not stop the connectors.
    """
    path = cache_path(cache_dir, venue)
    if path.exists() and not refresh and time.time() - path.stat().st_mtime < max_age_s:
        cached: Markets = json.loads(path.read_text())
        return cached
    try:
        fetched: dict[str, Any] = asyncio.run(fetch(venue) if fetch else fetch_markets(venue))
    except Exception as exc:
        if path.exists():
            log.warning("%s markets refresh failed (%s): using the cached copy", venue, exc)
            stale: Markets = json.loads(path.read_text())
            return stale
        raise MarketsUnavailableError(
            f"{venue}: cannot load markets ({exc}) and no cached copy in {path}; check the "
            f"network or place a ccxt markets JSON there"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fetched, default=str))
    tmp.replace(path)
    return fetched


def instruments_for(venue: str, markets: Markets, universe: Universe) -> Sequence[Instrument]:
    """The universe's instruments on ``venue`` (dispatches to the venue's markets module)."""
    if venue == "binance":
        from connectors.binance.markets import instruments_from_markets as binance

        return binance(markets, universe)
    if venue == "bybit":
        from connectors.bybit.markets import instruments_from_markets as bybit

        return bybit(markets, universe)
    if venue == "okx":
        from connectors.okx.markets import instruments_from_markets as okx

        return okx(markets, universe)
    raise ValueError(f"no connector for venue {venue!r} (have: {', '.join(CCXT_CLASS)})")


def resolve_instruments(
    settings: Settings,
    universe: Universe,
    venues: Sequence[str],
    refresh: bool = False,
    markets_out: dict[str, Markets] | None = None,
) -> dict[str, Sequence[Instrument]]:
    """Each venue's instruments for the universe, from cached ccxt market metadata."""
    result: dict[str, Sequence[Instrument]] = {}
    for venue in venues:
        if not universe.by_symbol(venue):
            continue
        markets = load_markets(
            venue,
            settings.cache_dir,
            max_age_s=settings.markets_max_age_s,
            refresh=refresh,
            fetch=lambda v: fetch_markets(v, settings.rest_url(v)),
        )
        result[venue] = instruments_for(venue, markets, universe)
        if markets_out is not None:
            markets_out[venue] = markets
    return result
