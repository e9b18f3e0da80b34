"""Results and events of the co-selling detector (:mod:`signals.cosell`).

Re-exported by :mod:`signals.cosell`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["CoSellEvent", "CoSellResult", "EventType", "SellingAsset"]

EventType = Literal["cosell.start", "cosell.update", "cosell.end"]


@dataclass(frozen=True, slots=True)
class SellingAsset:
    """One asset in the evidence: its H-bar log return and that return in own-vol units."""

    asset: str
    asset_class: str
    cum_return: float
    z: float


@dataclass(frozen=True, slots=True)
class CoSellEvent:
    """``cosell.start`` / ``cosell.update`` / ``cosell.end`` with its evidence.

    Floats that are undefined are NaN (``None`` in :meth:`to_dict`). ``duration_s``,
    ``duration_bars`` (episode start → first bar of the final calm run), ``min_cum_return`` (the
    lowest H-bar log return of any asset seen in the episode) and its asset are set on ``end`` only.
    """

    id: str
    type: EventType
    bar_start_ns: int
    episode_start_ns: int
    score: float
    peak_score: float
    breadth: float
    classes: float
    corr: float
    liq: float
    selling: tuple[SellingAsset, ...]
    classes_hit: tuple[str, ...]
    corr_avg: float
    corr_avg_z: float
    absorption_ratio: float
    absorption_ratio_z: float
    corr_by_class_pair: tuple[tuple[str, float], ...] | None
    long_liq_notional_usd: float | None
    long_liq_z: float | None
    duration_s: float | None = None
    duration_bars: int | None = None
    min_cum_return: float | None = None
    min_cum_return_asset: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict (NaN → None, tuples → lists/dicts).

        Examples
        --------
        >>> e = CoSellEvent("cosell.start:0", "cosell.start", 0, 0, 0.7, 0.7, 1.0, 1.0,
        ...                 float("nan"), float("nan"), (), ("crypto",), 0.9, float("nan"),
        ...                 0.95, 1.5, None, None, None)
        >>> d = e.to_dict()
        >>> d["corr"], d["classes_hit"], d["absorption_ratio_z"]
        (None, ['crypto'], 1.5)
        """
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "selling":
                value = [{k: _json(getattr(s, k)) for k in s.__slots__} for s in value]
            elif name == "corr_by_class_pair" and value is not None:
                value = {pair: _json(rho) for pair, rho in value}
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = _json(value)
        return out


def _json(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True, slots=True)
class CoSellResult:
    """What one :meth:`CoSellDetector.update` found (components NaN when unavailable)."""

    bar_start_ns: int
    score: float
    breadth: float
    classes: float
    corr: float
    liq: float
    corr_avg_z: float
    absorption_ratio_z: float
    n_defined: int
    selling: tuple[SellingAsset, ...]
    classes_hit: tuple[str, ...]
    active: bool
    events: tuple[CoSellEvent, ...] = field(default=())
