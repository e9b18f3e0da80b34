"""Connector throughput: replay → parse → normalize → KafkaSink, against a raw aiokafka loop.

Run ``.venv/bin/python -m bench.connectors [--quick] [--bootstrap HOST:PORT] [--profile]``.
Without ``--bootstrap`` an embedded Kafka broker is started in a temporary directory on a free
port (and stopped at the end); the topics are created with :func:`streams.topics.ensure_topics`.

1. A recording of N realistic frames is written with :class:`~connectors.record.FrameRecorder`:
   variants of the verbatim fixtures (``tests/fixtures/exchanges``) with fresh timestamps,
   random-walk prices and sizes, over the instruments passed to the parsers (so nothing is
   filtered, except the out-of-universe items that the all-market feeds really carry).
2. A dry run into a list sink captures the exact messages our path produces (and checks that
   no frame was dead-lettered).
3. **ours**: :func:`connectors.app.replay_files` (``speed=None``) into a started
   :class:`~connectors.sink.KafkaSink`, timed to the end of the final ``flush``.
4. **baseline**: one ``AIOKafkaProducer`` with the sink's settings (acks=all, idempotent, lz4,
   same linger and batch size) sending the same pre-encoded messages, every ``send`` first and
   one ``gather`` of all the futures at the end: the best a hand-written loop can do.
5. Without Kafka: the replay into a null sink, the parsers alone on in-memory frames, and
   reading the recording alone, so the cost split is visible.

Every measurement runs ``--repeats`` times (ours and baseline interleaved, with a pause before
each Kafka run so the broker's after-work does not spill into the next); medians are reported as
wall-clock seconds (``time.perf_counter``: the broker's work is part of the cost) and as this
process's CPU seconds (``time.process_time``: robust to other jobs on a shared machine). The
ratio is ours/baseline in messages per second; ``--profile`` adds a cProfile of one more run.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import gc
import importlib.util
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from connectors.app import replay_files, specs_for
from connectors.base import Instrument
from connectors.metrics import ConnectorMetrics
from connectors.record import FrameRecorder, read_recording
from connectors.sink import KafkaSink, SinkSettings
from deploy.kafka import broker
from streams.topics import ensure_topics

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "exchanges"
Msg = tuple[str, bytes, bytes]
Frame = tuple[str, int, str]  # (connection, ts_recv_ns, raw)

AssetClass = Literal["crypto", "equity", "metal", "fx", "rates"]
ASSETS: dict[str, tuple[AssetClass, str, str | None, float, float]] = {
    # asset: class, Bybit/Binance linear symbol, OKX swap, start price, OKX ctVal
    "BTC": ("crypto", "BTCUSDT", "BTC-USDT-SWAP", 112_000.0, 0.01),
    "ETH": ("crypto", "ETHUSDT", "ETH-USDT-SWAP", 4_100.0, 0.1),
    "SOL": ("crypto", "SOLUSDT", "SOL-USDT-SWAP", 190.0, 1.0),
    "XRP": ("crypto", "XRPUSDT", "XRP-USDT-SWAP", 2.6, 100.0),
    "GOLD": ("metal", "XAUUSDT", "XAU-USDT-SWAP", 4_000.0, 0.001),
    "SPX": ("equity", "SPYUSDT", None, 660.0, 0.0),
    "NDX": ("equity", "QQQUSDT", None, 600.0, 0.0),
}
BINANCE_ASSETS = ("BTC", "ETH", "SOL", "XRP", "GOLD")
OTHER_MARK_SYMBOLS = 100
"""Out-of-universe items per ``!markPrice@arr@1s`` frame (the live one has ~700: filtered)."""
SETTLE_S = 2.0
"""Pause before each Kafka run, so the broker's after-work (log flush, GC) of one run does not
slow the next one down."""
MIX = {  # share of frames per kind, roughly a busy second of the default universe
    "bybit_liq": 0.12,
    "bybit_ticker": 0.30,
    "okx_liq": 0.08,
    "okx_funding": 0.03,
    "okx_mark": 0.12,
    "okx_trades": 0.15,
    "binance_force": 0.06,
    "binance_mark_arr": 0.005,
    "binance_agg": 0.135,
}


def has_binance() -> bool:
    """Whether the Binance connector package exists in this tree."""
    return importlib.util.find_spec("connectors.binance") is not None


def universe(binance: bool) -> dict[str, list[Instrument]]:
    """The benchmark's instruments per venue (the default universe's symbols)."""
    out: dict[str, list[Instrument]] = {"bybit": [], "okx": [], "binance": []}
    for asset, (cls, linear, swap, _, ct_val) in ASSETS.items():
        out["bybit"].append(Instrument("bybit", linear, asset, cls, funding_interval_hours=8.0))
        if swap:
            out["okx"].append(Instrument("okx", swap, asset, cls, ct_val, 8.0))
        if binance and asset in BINANCE_ASSETS:
            out["binance"].append(Instrument("binance", linear, asset, cls, 1.0, 8.0))
    return {venue: insts for venue, insts in out.items() if insts}


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class FrameFactory:
    """Realistic variants of the fixture frames: moving clock, random-walk prices, sizes."""

    def __init__(self, instruments: Mapping[str, Sequence[Instrument]], seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.inst = instruments
        self.conn = {v: specs_for(v, list(i), None)[0].name for v, i in instruments.items() if i}
        self.price = {a: row[3] for a, row in ASSETS.items()}
        self.now_ms, self.recv_ns = 1_760_000_000_000, 0
        self.tpl = {
            "bybit_liq": _fixture("bybit_allLiquidation.json"),
            "bybit_snap": _fixture("bybit_tickers_docs.json"),
            "bybit_delta": _fixture("bybit_tickers_derived_delta_linear.json"),
            "okx_liq": _fixture("okx_liquidation-orders_derived_batch.json"),
            "okx_funding": _fixture("okx_funding-rate.json"),
            "okx_mark": _fixture("okx_mark-price.json"),
            "okx_trades": _fixture("okx_trades.json"),
        }
        if "binance" in self.conn:
            self.tpl |= {
                "binance_force": _fixture("binance_forceOrder_derived_combined.json"),
                "binance_mark": _fixture("binance_markPrice_derived_arr_combined.json"),
                "binance_agg": _fixture("binance_aggTrade_combined.json"),
            }
        kinds = [k for k in MIX if not k.startswith("binance") or "binance" in self.conn]
        self.kinds, self.weights = kinds, [MIX[k] for k in kinds]

    def frames(self, n: int) -> list[Frame]:
        """``n`` frames: one Bybit ticker snapshot per symbol first, then the mix."""
        out = [self._bybit_ticker(i, snapshot=True) for i in self.inst["bybit"]]
        while len(out) < n:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            out.append(getattr(self, "_" + kind)())
        return out[:n]

    # -- helpers -----------------------------------------------------------------------------
    def _start(self, template: str, venue: str) -> tuple[Any, Instrument, int]:
        """A fresh copy of a template, an instrument of ``venue`` and the advanced clock."""
        self.now_ms += max(1, int(self.rng.expovariate(1 / 3)))  # ~300 frames/s
        return copy.deepcopy(self.tpl[template]), self.rng.choice(self.inst[venue]), self.now_ms

    def _frame(self, venue: str, doc: Any) -> Frame:
        # Receipt order is recording order: receive times never go back (latency 20-80 ms).
        recv_ns = (self.now_ms + self.rng.randint(20, 80)) * 1_000_000
        self.recv_ns = max(recv_ns, self.recv_ns + 1_000)
        return self.conn[venue], self.recv_ns, json.dumps(doc, separators=(",", ":"))

    def _px(self, asset: str) -> str:
        self.price[asset] *= 1.0 + self.rng.gauss(0.0, 3e-4)
        return f"{self.price[asset]:.6g}"

    def _size(self, scale: float = 1.0) -> str:
        return f"{self.rng.lognormvariate(0.0, 1.2) * scale:.4g}"

    def _rate(self) -> str:
        return f"{self.rng.gauss(1e-4, 2e-4):.8f}"

    # -- Bybit: allLiquidation batches, tickers snapshot + deltas ----------------------------
    def _bybit_liq(self) -> Frame:
        doc, inst, ts = self._start("bybit_liq", "bybit")
        doc["topic"], doc["ts"], item = f"allLiquidation.{inst.symbol}", ts, doc["data"][0]
        doc["data"] = [
            item
            | {"T": ts - self.rng.randint(0, 499), "s": inst.symbol, "p": self._px(inst.asset)}
            | {"S": self.rng.choice(("Buy", "Sell")), "v": self._size(1e4 / self.price[inst.asset])}
            for _ in range(self.rng.choice((1, 1, 2, 3, 5, 8)))
        ]
        return self._frame("bybit", doc)

    def _bybit_ticker(self, inst: Instrument | None = None, snapshot: bool = False) -> Frame:
        snapshot = snapshot or self.rng.random() < 0.01
        doc, picked, ts = self._start("bybit_snap" if snapshot else "bybit_delta", "bybit")
        inst = inst or picked
        doc["topic"], doc["ts"], doc["cs"] = f"tickers.{inst.symbol}", ts, ts * 3
        data, px, r = doc["data"], self._px(inst.asset), self.rng.random()
        data |= {"symbol": inst.symbol, "bid1Price": px, "ask1Price": px}
        if snapshot or r < 0.6:
            data["lastPrice"] = px
        if snapshot or r > 0.6:
            data |= {"markPrice": px, "indexPrice": px}
        if snapshot or self.rng.random() < 0.2:
            data |= {"openInterest": self._size(1e5), "openInterestValue": self._size(1e9)}
        data["fundingRate"] = self._rate()
        if not snapshot and self.rng.random() > 0.1:
            del data["fundingRate"]
        return self._frame("bybit", doc)

    # -- OKX: liquidation-orders (SWAP-wide), funding-rate, mark-price, trades ---------------
    def _okx_liq(self) -> Frame:
        doc, _, ts = self._start("okx_liq", "okx")
        tpl_item, tpl_detail, items = doc["data"][0], doc["data"][0]["details"][0], []
        for inst in self.rng.choices(self.inst["okx"], k=self.rng.choice((1, 1, 2, 3))):
            details = []
            for _ in range(self.rng.choice((1, 1, 2, 3))):
                side = self.rng.choice(("buy", "sell"))
                pos = self.rng.choice(("net", "long" if side == "sell" else "short"))
                details.append(
                    tpl_detail
                    | {"bkPx": self._px(inst.asset), "posSide": pos, "side": side}
                    | {
                        "sz": str(self.rng.randint(1, 500)),
                        "ts": str(ts - self.rng.randint(0, 999)),
                    }
                )
            family = inst.symbol.removesuffix("-SWAP")
            items.append(tpl_item | {"details": details, "instId": inst.symbol, "uly": family})
        if self.rng.random() < 0.5:  # the SWAP-wide feed also carries other instruments
            items.append(tpl_item | {"instId": "DOGE-USDT-SWAP", "uly": "DOGE-USDT"})
        doc["data"] = items
        return self._frame("okx", doc)

    def _okx_funding(self) -> Frame:
        doc, inst, ts = self._start("okx_funding", "okx")
        settle = (ts // 28_800_000 + 1) * 28_800_000
        doc["arg"]["instId"] = inst.symbol
        doc["data"][0] |= {"instId": inst.symbol, "fundingRate": self._rate(), "ts": str(ts)}
        doc["data"][0] |= {"fundingTime": str(settle), "nextFundingTime": str(settle + 28_800_000)}
        return self._frame("okx", doc)

    def _okx_mark(self) -> Frame:
        doc, inst, ts = self._start("okx_mark", "okx")
        doc["arg"]["instId"] = inst.symbol
        doc["data"][0] |= {"instType": "SWAP", "instId": inst.symbol, "ts": str(ts)}
        doc["data"][0]["markPx"] = self._px(inst.asset)
        return self._frame("okx", doc)

    def _okx_trades(self) -> Frame:
        doc, inst, ts = self._start("okx_trades", "okx")
        doc["arg"]["instId"], tpl = inst.symbol, doc["data"][0]
        doc["data"] = [
            tpl
            | {"instId": inst.symbol, "tradeId": str(ts + i), "seqId": ts + i, "ts": str(ts)}
            | {"px": self._px(inst.asset), "sz": str(self.rng.randint(1, 50))}
            | {"side": self.rng.choice(("buy", "sell"))}
            for i in range(self.rng.choice((1, 1, 1, 2, 3)))
        ]
        return self._frame("okx", doc)

    # -- Binance: !forceOrder@arr, !markPrice@arr@1s, aggTrade (combined streams) ------------
    def _binance_force(self) -> Frame:
        doc, inst, ts = self._start("binance_force", "binance")
        qty, px = self._size(1e4 / self.price[inst.asset]), self._px(inst.asset)
        doc["data"]["E"], order = ts, doc["data"]["o"]
        order |= {"s": inst.symbol, "S": self.rng.choice(("BUY", "SELL")), "T": ts - 3}
        order |= {"q": qty, "l": qty, "z": qty, "p": px, "ap": px}
        return self._frame("binance", doc)

    def _binance_mark_arr(self) -> Frame:
        doc, _, ts = self._start("binance_mark", "binance")
        tpl, settle = doc["data"][0], (ts // 28_800_000 + 1) * 28_800_000
        symbols = [(i.symbol, self._px(i.asset)) for i in self.inst["binance"]]
        symbols += [(f"ALT{k}USDT", "1.2345") for k in range(OTHER_MARK_SYMBOLS)]
        doc["data"] = [
            tpl | {"E": ts, "s": sym, "p": px, "i": px, "P": px, "r": self._rate(), "T": settle}
            for sym, px in symbols
        ]
        return self._frame("binance", doc)

    def _binance_agg(self) -> Frame:
        doc, inst, ts = self._start("binance_agg", "binance")
        doc["stream"] = f"{inst.symbol.lower()}@aggTrade"
        doc["data"] |= {"E": ts, "s": inst.symbol, "p": self._px(inst.asset), "T": ts - 1}
        doc["data"] |= {"a": ts, "f": ts, "l": ts, "q": self._size()}
        return self._frame("binance", doc)


def write_recording(frames: Sequence[Frame], directory: Path) -> list[Path]:
    """Record ``frames`` as ``firesale connect --record`` would."""
    recorder = FrameRecorder(directory)
    for connection, ts_recv_ns, raw in frames:
        recorder.write(connection, ts_recv_ns, raw)
    recorder.close()
    return recorder.files


class ListSink:
    """Captures what the router produces (the dry run), or only counts it (``keep=False``)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.messages: list[Msg] = []

    async def put(self, topic: str, key: bytes, value: bytes) -> bool:
        if self.keep:
            self.messages.append((topic, key, value))
        return True


@dataclass(frozen=True, slots=True)
class Row:
    """One measured path: its repeats as (wall, process CPU) seconds."""

    label: str
    messages: int
    frames: int
    runs: list[tuple[float, float]]

    @property
    def wall_s(self) -> float:
        return statistics.median(w for w, _ in self.runs)

    @property
    def cpu_s(self) -> float:
        return statistics.median(c for _, c in self.runs)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.wall_s


async def _timed(fn: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(wall, this process's CPU) seconds of ``await fn()``."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - wall, time.process_time() - cpu


async def run_ours(
    files: list[Path], instruments: Mapping[str, Sequence[Instrument]], bootstrap: str, n: int
) -> tuple[float, float]:
    """Replay → KafkaSink including the final flush; raises unless exactly ``n`` delivered."""
    sink = KafkaSink(bootstrap, ConnectorMetrics.create(CollectorRegistry()))
    await sink.start()

    async def go() -> None:
        await replay_files(files, instruments, sink, CollectorRegistry(), speed=None)
        await sink.flush(timeout_s=600)

    try:
        seconds = await _timed(go)
    finally:
        await sink.stop()
    if (sink.delivered, sink.dropped, sink.maybe_delivered) != (n, 0, 0):
        raise RuntimeError(
            f"KafkaSink delivered {sink.delivered} of {n} messages "
            f"(dropped {sink.dropped}, maybe delivered {sink.maybe_delivered})"
        )
    return seconds


async def run_baseline(messages: Sequence[Msg], bootstrap: str) -> tuple[float, float]:
    """A raw aiokafka producer with KafkaSink's settings: every send, then one gather."""
    from aiokafka import AIOKafkaProducer

    s = SinkSettings()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=s.linger_ms,
        compression_type=s.compression,
        request_timeout_ms=s.request_timeout_ms,
        max_batch_size=256 * 1024,  # as KafkaSink
    )
    await producer.start()

    async def go() -> None:
        send = producer.send
        futures = [await send(topic, value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)

    try:
        return await _timed(go)
    finally:
        await producer.stop()


async def parse_only(
    frames: Sequence[Frame], instruments: Mapping[str, Sequence[Instrument]]
) -> tuple[float, float]:
    """The venue parsers alone on in-memory frames (a fresh parser per connection)."""
    specs = [s for v, i in instruments.items() for s in specs_for(v, list(i), None)]
    parsers = {spec.name: spec.parser_factory() for spec in specs}

    async def go() -> None:
        for connection, ts_recv_ns, raw in frames:
            parsers[connection].parse(raw, ts_recv_ns)

    return await _timed(go)


async def read_only(files: list[Path]) -> tuple[float, float]:
    """Reading the recording back (gunzip + JSON lines), nothing else."""

    async def go() -> None:
        for _ in read_recording(files):
            pass

    return await _timed(go)


async def run_bench(
    bootstrap: str,
    n_frames: int,
    repeats: int,
    workdir: Path,
    profile: bool = False,
    settle_s: float = SETTLE_S,
) -> dict[str, Row]:
    """Every measurement, keyed ``ours``, ``baseline``, ``null_sink``, ``parse``, ``read``.

    Raises RuntimeError when a synthetic frame is dead-lettered or the Kafka run does not
    deliver exactly the dry run's messages.
    """
    instruments = universe(has_binance())
    frames = FrameFactory(instruments).frames(n_frames)
    files = write_recording(frames, workdir / "recording")
    dry = ListSink()
    await replay_files(files, instruments, dry, CollectorRegistry())
    messages, n = dry.messages, len(dry.messages)
    letters = [v for t, _, v in messages if t == "ticks.deadletter.v1"]
    if letters:
        raise RuntimeError(f"{len(letters)} synthetic frames were dead-lettered: {letters[0]!r}")
    by_topic = dict(Counter(t for t, _, _ in messages))
    by_venue = dict(Counter(k.split(b":")[0].decode() for _, k, _ in messages))
    print(f"{n_frames} frames -> {n} messages; {by_topic}; {by_venue}", flush=True)
    await ensure_topics(bootstrap)
    await run_baseline(messages[:5_000], bootstrap)  # warm-up: broker, metadata, producer ids
    ours, base = [], []
    for _ in range(repeats):  # interleaved, so drift of the shared machine hits both alike
        await asyncio.sleep(settle_s)
        ours.append(await run_ours(files, instruments, bootstrap, n))
        await asyncio.sleep(settle_s)
        base.append(await run_baseline(messages, bootstrap))
    null_sink = ListSink(keep=False)
    null = [
        await _timed(lambda: replay_files(files, instruments, null_sink, CollectorRegistry()))
        for _ in range(repeats)
    ]
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await run_ours(files, instruments, bootstrap, n)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
        stats.sort_stats("tottime").print_stats(30)
    return {
        "ours": Row("ours: replay -> KafkaSink, incl. flush", n, n_frames, ours),
        "baseline": Row("baseline: raw aiokafka, pre-encoded", n, n_frames, base),
        "null_sink": Row("no Kafka: replay -> null sink", n, n_frames, null),
        "parse": Row(
            "no Kafka: parsers only, in memory",
            n,
            n_frames,
            [await parse_only(frames, instruments) for _ in range(repeats)],
        ),
        "read": Row(
            "no Kafka: read recording only",
            n,
            n_frames,
            [await read_only(files) for _ in range(repeats)],
        ),
    }


def print_table(rows: Mapping[str, Row], repeats: int) -> float:
    """Print the table; return the ratio ours/baseline (msgs/s of the medians)."""
    print(f"\nmedian of {repeats} runs; python {platform.python_version()}, {os.cpu_count()} CPUs")
    print("(wall: perf_counter, broker work included; CPU: this Python process only)")
    head = f"{'path':<40}{'messages':>9}{'frames':>7}{'wall s':>7}{'(min-max)':>13}"
    print(f"{head}{'CPU s':>7}{'msgs/s':>9}{'frames/s':>9}")
    for r in rows.values():
        walls = [w for w, _ in r.runs]
        spread = f"({min(walls):.2f}-{max(walls):.2f})"
        print(
            f"{r.label:<40}{r.messages:>9}{r.frames:>7}{r.wall_s:>7.3f}{spread:>13}"
            f"{r.cpu_s:>7.3f}{r.msgs_per_s:>9,.0f}{r.frames / r.wall_s:>9,.0f}"
        )
    ratio = rows["ours"].msgs_per_s / rows["baseline"].msgs_per_s
    verdict = "meets" if ratio >= 0.5 else "BELOW"
    print(f"\nratio ours/baseline = {ratio:.2f} ({verdict} the aim of >= 0.5)")
    cpu_ratio = rows["baseline"].cpu_s / rows["ours"].cpu_s
    print(f"same ratio in this process's CPU seconds = {cpu_ratio:.2f} (robust to other load)")
    base, null = rows["baseline"].wall_s, rows["null_sink"].wall_s
    print(
        f"if parsing and producing costs simply added up (one Python thread): "
        f"baseline / (baseline + null sink) = {base / (base + null):.2f}"
    )
    return ratio


def main(argv: Sequence[str] | None = None) -> dict[str, Row]:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.connectors", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1000 frames: a smoke run")
    parser.add_argument("--bootstrap", help="use this Kafka (host:port), not an embedded one")
    parser.add_argument("--frames", type=int, help="frames in the recording (default 40000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more 'ours' run")
    args = parser.parse_args(argv)
    n_frames = args.frames or (1_000 if args.quick else 40_000)
    with tempfile.TemporaryDirectory(prefix="firesale-bench-") as tmp:
        home, bootstrap = Path(tmp) / "kafka", args.bootstrap
        if bootstrap is None:
            print("starting an embedded Kafka broker ...", flush=True)
            bootstrap = broker.start(home, None, detach=False).bootstrap
        try:
            settle_s = 0.2 if args.quick else SETTLE_S
            bench = run_bench(bootstrap, n_frames, args.repeats, Path(tmp), args.profile, settle_s)
            rows = asyncio.run(bench)
        finally:
            if args.bootstrap is None:
                broker.stop(home)
    print_table(rows, args.repeats)
    return rows


if __name__ == "__main__":
    main()
