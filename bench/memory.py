"""Where the worker's own Python memory goes over the whole fire-sale scenario (tracemalloc).

Run ``.venv/bin/python -m bench.memory``: the seeded scenario (34 h of event time, fire sale
and cascades included) through the worker's processing without Kafka (``streams.pipeline``),
printing the memory Python traces at every tenth of the events and the allocation sites that
grew most between the first tenth and the end. It separates our state from what RSS adds on
top (faust's and aiokafka's buffers, the allocator), which the soak (``bench/soak.py``) cannot.
"""

from __future__ import annotations

import gc
import tracemalloc

from prometheus_client import CollectorRegistry

from connectors.scenario import ScenarioParams, generate
from streams.config import load_universe
from streams.events import Funding, Liquidation, PriceTick
from streams.metrics import PipelineMetrics
from streams.pipeline import Pipeline

T0 = 1_762_214_400_000_000_000  # 2025-11-04T00:00:00Z


def main(bar_interval_s: int = 60, top: int = 8) -> None:
    """Print traced memory per tenth of the scenario and the top growing allocation sites."""
    universe = load_universe(None)
    params = ScenarioParams.preset("fire-sale", mark_interval_s=60, trade_rate_scale=0.01)
    events = [t.event for t in generate(params, universe.assets, T0, seed=3)]
    pipe = Pipeline(universe, bar_interval_s, PipelineMetrics.create(CollectorRegistry()))
    tracemalloc.start(5)
    n = len(events)
    tenths = {n * k // 10: k for k in range(1, 11)}
    first: tracemalloc.Snapshot | None = None
    print(f"{n} events, {params.duration_s / 3600:.0f} h of event time, {bar_interval_s} s bars")
    for i, event in enumerate(events, 1):
        assert isinstance(event, PriceTick | Liquidation | Funding)
        pipe.feed(event, event.ts_event_ns)
        if i in tenths:
            gc.collect()
            current, peak = (x / 2**20 for x in tracemalloc.get_traced_memory())
            print(f"{tenths[i] * 10:4d} %  traced {current:6.2f} MiB  peak {peak:6.2f}")
            if first is None:
                first = tracemalloc.take_snapshot()
    assert first is not None
    print(f"grew most since the first tenth (top {top}):")
    for stat in tracemalloc.take_snapshot().compare_to(first, "lineno")[:top]:
        print(f"  {stat}")


if __name__ == "__main__":
    main()
