"""Every command refuses a bad configuration at start: exit 2, the key named, no traceback.

One case per class of mistake (out of range, malformed, unknown name, duplicate, missing
file), for each long-running command. Nothing here reaches Kafka or an exchange: the checks
run before either is touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CASES = {
    "out of range": ({"FIRESALE_BAR_INTERVAL_S": "0"}, None, "FIRESALE_BAR_INTERVAL_S"),
    "negative window": (
        {"FIRESALE_CORRELATION_WINDOW_BARS": "-5"},
        None,
        "FIRESALE_CORRELATION_WINDOW_BARS: Input should be greater than or equal to 3",
    ),
    "malformed bootstrap": (
        {"FIRESALE_KAFKA_BOOTSTRAP": "localhost"},
        None,
        "FIRESALE_KAFKA_BOOTSTRAP: Value error, 'localhost' is not host:port",
    ),
    "unknown venue": ({"FIRESALE_VENUES": "kraken"}, None, "FIRESALE_VENUES"),
    "unknown asset class": (
        {},
        '[assets.BTC]\nclass = "commodity"\nsymbols = { binance = "BTCUSDT" }',
        "assets.BTC.class: unknown asset class 'commodity'",
    ),
    "duplicate symbol": (
        {},
        '[assets.BTC]\nclass = "crypto"\nsymbols = { binance = "BTCUSDT" }\n'
        '[assets.WBTC]\nclass = "crypto"\nsymbols = { binance = "BTCUSDT" }',
        "assets.WBTC.symbols.binance: duplicate symbol 'BTCUSDT': already used by BTC",
    ),
    "missing universe file": (
        {"FIRESALE_UNIVERSE": "/nonexistent/universe.toml"},
        None,
        "FIRESALE_UNIVERSE",
    ),
}
COMMANDS = (["worker"], ["connect", "--no-backfill"], ["run"], ["run", "--scenario", "calm"])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("case", list(CASES))
def test_command_refuses_bad_configuration(tmp_path: Path, command: list[str], case: str) -> None:
    env_changes, universe_body, expected = CASES[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRESALE_")}
    env |= {"FIRESALE_KAFKA_HOME": str(tmp_path / "kafka"), "FIRESALE_METRICS_PORT": "0"}
    env |= env_changes
    if universe_body is not None:
        path = tmp_path / "universe.toml"
        path.write_text(textwrap.dedent(universe_body))
        env["FIRESALE_UNIVERSE"] = str(path)
    proc = subprocess.run(
        [sys.executable, "-m", "streams", *command],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert expected in " ".join(out.split()), out
    assert "Traceback" not in out
    assert not (tmp_path / "kafka").exists()  # refused before any broker was started
