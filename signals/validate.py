"""Input checks the bar-driven detectors share: a strictly increasing bar time and one
numeric value per asset, in the detector's asset order.

>>> check_bar_time(60, 0)
>>> as_vector([1.0, float("nan")], ("BTC", "GOLD"), "closes").tolist()
[1.0, nan]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from signals.errors import InvalidInputError


def check_bar_time(bar_start_ns: Any, previous_ns: int | None) -> None:
    """``bar_start_ns`` is an int after ``previous_ns`` (each bar once, in time order)."""
    if isinstance(bar_start_ns, bool) or not isinstance(bar_start_ns, int | np.integer):
        raise InvalidInputError(f"bar_start_ns={bar_start_ns!r} must be an int (ns since epoch)")
    if previous_ns is not None and bar_start_ns <= previous_ns:
        raise InvalidInputError(
            f"bar_start_ns={bar_start_ns} is not after the previous bar {previous_ns}: "
            "feed each bar once, in time order (drop duplicates upstream)"
        )


def as_vector(values: Any, assets: Sequence[str], what: str) -> NDArray[np.float64]:
    """``values`` as a float vector with one entry per asset (NaN = undefined)."""
    try:
        vec = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} are not numeric: {exc}") from exc
    if vec.shape != (len(assets),):
        raise InvalidInputError(
            f"{what} have shape {vec.shape}: expected ({len(assets)},), one per asset in the "
            f"order {list(assets)} (NaN = undefined)"
        )
    return vec
