"""A one-asset universe (ROSE on Bybit) with its ccxt markets cached, for CLI process tests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.connectors.test_bybit_markets import ccxt_markets, raw_row


def write_rose_universe(tmp_path: Path) -> tuple[Path, Path]:
    """Write ``universe.toml`` and ``cache/markets/bybit.json``; return (universe, cache dir)."""
    universe = tmp_path / "universe.toml"
    universe.write_text(
        textwrap.dedent("""
        [assets.ROSE]
        class = "crypto"
        symbols = { bybit = "ROSEUSDT" }
        """)
    )
    cache = tmp_path / "cache"
    (cache / "markets").mkdir(parents=True)
    markets = ccxt_markets([raw_row("ROSEUSDT", "ROSE")])
    (cache / "markets" / "bybit.json").write_text(json.dumps(markets, default=str))
    return universe, cache
