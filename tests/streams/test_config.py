"""Settings from FIRESALE_* variables and the TOML universe: valid loads, clear failures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streams.config import ConfigError, load_settings, load_universe


def test_defaults_mean_embedded_broker_and_default_universe_spans_three_classes() -> None:
    settings = load_settings({})
    assert settings.kafka_bootstrap is None
    assert settings.bar_interval_s == 60
    assert settings.metrics_bind == "127.0.0.1"
    universe = load_universe(None)
    assert {"crypto", "equity", "metal"} <= set(universe.classes)
    assert universe.names[:4] == ("BTC", "ETH", "SOL", "XRP")
    assert universe.asset("GOLD").symbols["binance"] == "XAUUSDT"
    assert universe.asset("GOLD").session == "cme_metals"
    assert universe.by_symbol("okx")["ETH-USDT-SWAP"].name == "ETH"


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "FIRESALE_KAFKA_BOOTSTRAP": "k1:9092,k2:9093",
            "FIRESALE_BAR_INTERVAL_S": "5",
            "OTHER": "ignored",
        }
    )
    assert settings.kafka_bootstrap == "k1:9092,k2:9093"
    assert settings.bar_interval_s == 5
    assert load_settings({"FIRESALE_KAFKA_BOOTSTRAP": ""}).kafka_bootstrap is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"FIRESALE_BAR_INTERVAL_S": "0"},
            "FIRESALE_BAR_INTERVAL_S: Input should be greater than or equal to 1 (got '0')",
        ),
        (
            {"FIRESALE_BAR_INTERVAL_S": "301"},
            "FIRESALE_BAR_INTERVAL_S: Input should be less than or equal to 300",
        ),
        (
            {"FIRESALE_CORRELATION_WINDOW_BARS": "-5"},
            "FIRESALE_CORRELATION_WINDOW_BARS: Input should be greater than or equal to 3",
        ),
        (
            {"FIRESALE_KAFKA_BOOTSTRAP": "localhost"},
            "FIRESALE_KAFKA_BOOTSTRAP: Value error, 'localhost' is not host:port",
        ),
        (
            {"FIRESALE_KAFKA_BOOTSTRAP": "k1:99999"},
            "FIRESALE_KAFKA_BOOTSTRAP: Value error, 'k1:99999' is not host:port",
        ),
        (
            {"FIRESALE_METRICS_PORT": "http"},
            "FIRESALE_METRICS_PORT: Input should be a valid integer",
        ),
        (
            {"FIRESALE_LOG_LEVEL": "LOUD"},
            "FIRESALE_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        ),
    ],
)
def test_invalid_setting_names_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert expected in str(info.value)


def _universe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "universe.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_custom_universe_keeps_order_and_fields(tmp_path: Path) -> None:
    path = _universe(
        tmp_path,
        """
        [assets.ETH]
        class = "crypto"
        symbols = { bybit = "ETHUSDT" }
        [assets.GOLD]
        class = "metal"
        session = "cme_metals"
        symbols = { okx = "XAU-USDT-SWAP" }
    """,
    )
    universe = load_universe(path)
    assert universe.names == ("ETH", "GOLD")
    assert universe.classes == ("crypto", "metal")
    assert universe.source == str(path)
    assert universe.asset("ETH").session == "24/7"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[assets.BTC]\nclass = "commodity"\nsymbols = { binance = "BTCUSDT" }',
            "assets.BTC.class: unknown asset class 'commodity'; use one of crypto, equity, metal",
        ),
        (
            '[assets.BTC]\nclass = "crypto"\nsymbols = { binance = "BTCUSDT" }\n'
            '[assets.WBTC]\nclass = "crypto"\nsymbols = { binance = "BTCUSDT" }',
            "assets.WBTC.symbols.binance: duplicate symbol 'BTCUSDT': already used by BTC",
        ),
        (
            '[assets.BTC]\nclass = "crypto"\nsymbols = { kraken = "XBT" }',
            "assets.BTC.symbols.kraken: unknown venue",
        ),
        (
            '[assets.BTC]\nclass = "crypto"\nsymbols = {}',
            "assets.BTC.symbols: map at least one venue",
        ),
        (
            '[assets.btc]\nclass = "crypto"\nsymbols = { okx = "BTC-USDT-SWAP" }',
            "assets.btc: asset names are upper-case",
        ),
        (
            '[assets.BTC]\nclass = "crypto"\nsession = "nyse"\nsymbols = { okx = "B" }',
            "assets.BTC.session: unknown session 'nyse'",
        ),
        (
            '[assets.BTC]\nclass = "crypto"\nwindow = 3\nsymbols = { okx = "B" }',
            "assets.BTC.window: unknown key",
        ),
        (
            '[assets.BTC]\nclass = "crypto"\nsymbols = { okx = "" }',
            "assets.BTC.symbols.okx: symbol must be a non-empty string",
        ),
        ("[venues]\nx = 1", "venues: unknown top-level key"),
        ("", "assets: at least one [assets.<NAME>] table is required"),
        ("[assets.BTC\n", "not valid TOML"),
    ],
)
def test_invalid_universe_names_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = _universe(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_universe(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_universe_file_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"FIRESALE_UNIVERSE: cannot read .*nope.toml: No such file"
    ):
        load_universe(tmp_path / "nope.toml")
