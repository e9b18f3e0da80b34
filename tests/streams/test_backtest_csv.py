"""History CSV readers: every malformed-input class gives exit code 2 and a message naming the
file, line and column (no traceback); timestamps, intervals, grids and calendars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from streams.backtest import apply_universe, funding_params, liquidation_params
from streams.backtest_csv import (
    NS_PER_S,
    BacktestError,
    common_calendar,
    parse_interval,
    parse_ts,
    read_bars,
    read_funding,
    read_liquidations,
    regular_spacing_s,
)
from streams.cli import app

BARS = "ts,asset,asset_class,close"
OK_BARS = [
    "2025-10-10T00:00:00Z,BTC,crypto,100",
    "2025-10-10T00:05:00Z,BTC,crypto,101",
    "2025-10-10T00:10:00Z,BTC,crypto,102",
]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["backtest", *args, "--out", str(tmp_path / "out")])
    return result.exit_code, result.output


BAD_BARS = [
    ("", "line 1: empty file"),
    ("ts,asset,close\n2025-10-10,BTC,1\n", "line 1, column 'asset_class': missing column"),
    ("ts,asset,asset_class,close,close\n", "line 1, column 'close': duplicate column"),
    (f"{BARS}\n", "line 2: no data rows"),
    (f"{BARS}\n{OK_BARS[0]}\n2025-10-10T00:05:00Z,BTC,crypto\n", "line 3: expected 4 fields"),
    (f"{BARS}\nyesterday,BTC,crypto,1\n", "line 2, column 'ts': 'yesterday' is neither ISO"),
    (f"{BARS}\n1760054400000,BTC,crypto,1\n", "line 2, column 'ts': 1760054400000 is not epoch"),
    (f"{BARS}\n{OK_BARS[0]}\n{OK_BARS[1][:-3]}abc\n", "line 3, column 'close': 'abc' is not a"),
    (f"{BARS}\n{OK_BARS[0][:-3]}nan\n", "line 2, column 'close': 'nan': values must be finite"),
    (f"{BARS}\n{OK_BARS[0][:-3]}inf\n", "line 2, column 'close': 'inf': values must be finite"),
    (f"{BARS}\n{OK_BARS[0][:-3]}-5\n", "line 2, column 'close': '-5': must be > 0"),
    (f"{BARS}\n{OK_BARS[0][:-3]}0\n", "line 2, column 'close': '0': must be > 0"),
    (f"{BARS}\n2025-10-10,,crypto,1\n", "line 2, column 'asset': empty"),
    (f"{BARS}\n2025-10-10,BTC,crypto-x,1\n", "line 2, column 'asset_class': 'crypto-x': no '-'"),
    (
        f"{BARS}\n{OK_BARS[0]}\n2025-10-10T00:05:00Z,BTC,equity,1\n",
        "line 3, column 'asset_class': BTC is 'equity' here but 'crypto' on line 2",
    ),
    (
        f"{BARS}\n{OK_BARS[0]}\n{OK_BARS[1]}\n{OK_BARS[0]}\n",
        "line 4, column 'ts': duplicate row for BTC: see line 2",
    ),
    (
        "\n".join([BARS, *OK_BARS, "2025-10-10T00:12:00Z,BTC,crypto,1"]),
        "line 5, column 'ts': 2025-10-10T00:12:00Z is not on the 300 s grid (inferred)",
    ),
    (f"{BARS}\n{OK_BARS[0]}\n", "one bar time only: give --interval"),
    (f'{BARS}\n"2025-10-10,BTC,crypto,1\n', "line 2: expected 4 fields"),
    (b"ts,asset,asset_class,close\n2025-10-10,BT\xff,crypto,1\n", "not UTF-8"),
]


@pytest.mark.parametrize(("text", "message"), BAD_BARS)
def test_malformed_bars_exit_2_with_line_and_column(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    path = tmp_path / "bars.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    code, output = run_cli(tmp_path, "--bars", str(path))
    assert code == 2
    assert f"error: {path}: " in output
    assert message in " ".join(output.split())
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()  # nothing written for bad input


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        ("--liquidations", "ts,asset,side\n", "line 1, column 'notional_usd': missing column"),
        (
            "--liquidations",
            "ts,asset,side,notional_usd\n2025-10-10,BTC,sell,5\n",
            "line 2, column 'side': 'sell': use long or short (the liquidated position",
        ),
        (
            "--liquidations",
            "ts,asset,side,notional_usd\n2025-10-10,BTC,long,-5\n",
            "line 2, column 'notional_usd': '-5': must be >= 0",
        ),
        (
            "--liquidations",
            "ts,asset,side,notional_usd,completeness\n2025-10-10,BTC,long,5,partial\n",
            "line 2, column 'completeness': 'partial': use complete or sampled",
        ),
        (
            "--funding",
            "ts,asset,rate_annualized\n2025-10-10,BTC,high\n",
            "line 2, column 'rate_annualized': 'high' is not a number",
        ),
        (
            "--funding",
            "ts,asset,rate_annualized,open_interest_usd\n2025-10-10,BTC,0.1,-1\n",
            "line 2, column 'open_interest_usd': '-1': must be >= 0",
        ),
        ("--interval", "5 minutes", "--interval '5 minutes': give a positive whole number"),
        ("--calendar", "weekdays", "--calendar 'weekdays': use auto, union or common"),
        ("--config", "[assets.btc]\n", "assets.btc: asset names are upper-case"),
    ],
)
def test_malformed_options_and_side_files_exit_2(
    tmp_path: Path, option: str, text: str, message: str
) -> None:
    bars = write(tmp_path / "bars.csv", "\n".join([BARS, *OK_BARS]) + "\n")
    value = text
    if option in ("--liquidations", "--funding", "--config"):
        value = str(write(tmp_path / "side.txt", text))
    code, output = run_cli(tmp_path, "--bars", str(bars), option, value)
    assert code == 2
    assert message in " ".join(output.split())
    assert "Traceback" not in output


def test_missing_file_exits_2(tmp_path: Path) -> None:
    code, output = run_cli(tmp_path, "--bars", str(tmp_path / "nope.csv"))
    assert code == 2
    assert "cannot read" in output
    assert "No such file" in output


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2025-10-10T21:00:00Z", 1_760_130_000 * NS_PER_S),
        ("2025-10-10T21:00:00+00:00", 1_760_130_000 * NS_PER_S),
        ("2025-10-10 23:00:00+02:00", 1_760_130_000 * NS_PER_S),
        ("2025-10-10T21:00:00", 1_760_130_000 * NS_PER_S),  # no offset: UTC
        ("2025-10-10T21:00:00.25Z", 1_760_130_000 * NS_PER_S + 250_000_000),
        ("2025-10-10", 1_760_054_400 * NS_PER_S),
        ("1760130000", 1_760_130_000 * NS_PER_S),
        ("1760130000.000000001", 1_760_130_000 * NS_PER_S + 1),
        (" 0 ", 0),
    ],
)
def test_timestamps(text: str, ns: int) -> None:
    assert parse_ts(text) == ns


@pytest.mark.parametrize("text", ["", "-5", "1e9", "10/10/2025", "100000000000"])
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_ts(text)


def test_intervals() -> None:
    assert [parse_interval(x) for x in ("1", "45s", "5m", "1h", "1d", " 2H ")] == [
        1, 45, 300, 3600, 86_400, 7200,
    ]  # fmt: skip
    for bad in ("0m", "5 min", "-5m", "m", "1.5h"):
        with pytest.raises(BacktestError, match="--interval"):
            parse_interval(bad)


def test_grid_interval_inferred_from_median_spacing_with_gaps_left_nan(tmp_path: Path) -> None:
    days = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 14]  # weekdays only: weekend spacing is 3 days
    rows = [f"{86_400 * (20_000 + d)},SPY,equity,{100 + d}" for d in days]
    rows += [f"{86_400 * (20_000 + d)},BTC,crypto,{10 + d}" for d in range(0, 15, 2)]
    bars = read_bars(write(tmp_path / "b.csv", "\n".join([BARS, *rows]) + "\n"))
    assert (bars.interval_s, bars.interval_inferred, bars.assets) == (86_400, True, ("SPY", "BTC"))
    assert bars.times_ns.size == 15
    assert np.isnan(bars.closes[5:7, 0]).all()  # the weekend: no row, NaN, never filled
    assert np.isfinite(bars.closes[::2, 1]).all()
    assert np.isnan(bars.closes[1::2, 1]).all()
    given = read_bars(tmp_path / "b.csv", interval_s=43_200)
    assert given.times_ns.size == 29
    assert not given.interval_inferred
    common = common_calendar(bars)  # both classes have a close
    assert (common.times_ns // NS_PER_S // 86_400 - 20_000).tolist() == [0, 2, 4, 8, 10, 14]


def test_side_files_sorted_zero_rows_dropped_optional_columns(tmp_path: Path) -> None:
    liq = read_liquidations(write(tmp_path / "l.csv", (
        "ts,asset,side,notional_usd,completeness\n"
        "2025-10-10T00:10:00Z,ETH,SHORT,5,sampled\n"
        "2025-10-10T00:00:00Z,BTC,long,0,\n"
        "2025-10-10T00:05:00Z,BTC,long,7,\n"
    )))  # fmt: skip
    assert liq.asset == ("BTC", "ETH")
    assert liq.side == ("long", "short")
    assert liq.complete == (True, False)
    assert liq.zero_rows == 1
    fund = read_funding(write(tmp_path / "f.csv", (
        "ts,asset,rate_annualized,venue,open_interest_usd\n"
        "2025-10-10T08:00:00Z,BTC,-0.2,,\n"
        "2025-10-10T00:00:00Z,BTC,0.1,okx,5e9\n"
    )))  # fmt: skip
    assert fund.venue == ("okx", "history")
    assert fund.open_interest_usd == (5e9, None)
    assert fund.rate_annualized.tolist() == [0.1, -0.2]


def test_regular_spacing_and_fitted_parameters() -> None:
    h4 = 14_400 * NS_PER_S
    assert regular_spacing_s(np.array([0, h4, 3 * h4, 4 * h4]), 300) == 14_400
    assert regular_spacing_s(np.array([0, h4, 2 * h4, 4 * h4]) + NS_PER_S, 300) == 14_400
    assert regular_spacing_s(np.array([0, h4, h4 + 7 * NS_PER_S, 2 * h4]), 300) is None
    assert regular_spacing_s(np.array([0, 60, 120]) * NS_PER_S, 300) is None  # finer than bars
    assert regular_spacing_s(np.array([0, h4]), 300) is None  # too few to tell
    p = liquidation_params(86_400)
    assert (p.windows_s, p.intensity_window_s, p.baseline_s) == ((86_400,), 86_400, 42 * 86_400)
    assert liquidation_params(None).intensity_window_s == 300
    assert funding_params(60).max_age_s == 900.0  # live defaults for sub-15-minute spacing


def test_apply_universe_unknown_file_is_a_backtest_error(tmp_path: Path) -> None:
    bars = read_bars(write(tmp_path / "b.csv", "\n".join([BARS, *OK_BARS]) + "\n"))
    with pytest.raises(BacktestError, match="cannot read"):
        apply_universe(bars, tmp_path / "missing.toml")
