"""Pieces every venue parser shares: the frame size limit and the checked liquidation event.

>>> frame_too_large("x" * 10)
False
>>> inst = Instrument("okx", "BTC-USDT-SWAP", "BTC", "crypto", contract_size=0.01)
>>> liq = liquidation(inst, ts_event_ns=1, ts_recv_ns=2, liquidated_side="long",
...                   qty_base=0.5, price=60_000.0, completeness="sampled",
...                   notional_label="sz × ctVal × bkPx")
>>> liq.notional_usd
30000.0
"""

from __future__ import annotations

import math
from typing import Literal

from connectors.base import Instrument
from connectors.fields import FieldError
from streams.events import Liquidation

MAX_FRAME_BYTES = 1 << 20
"""Frames over 1 MiB are refused unread (``oversize``): far above any venue's real pushes."""


def frame_too_large(raw: str | bytes) -> bool:
    """Whether the frame's UTF-8 size exceeds :data:`MAX_FRAME_BYTES`.

    A ``str`` is encoded only when its length alone cannot decide (every character is one to
    four bytes), so ordinary frames cost no copy.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        return len(raw) > MAX_FRAME_BYTES
    if len(raw) > MAX_FRAME_BYTES:
        return True
    if 4 * len(raw) <= MAX_FRAME_BYTES:
        return False
    return len(raw.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES


def annualized_rate(rate: float, interval_hours: float) -> float:
    """Funding per interval → per year, simple (not compounded): rate × (24 / h) × 365.

    >>> round(annualized_rate(0.0001, 8.0), 4)
    0.1095
    """
    return rate * (24.0 / interval_hours) * 365.0


def finite_positive(name: str, value: float) -> float:
    """``value`` (a product of positives) unless it overflowed to inf or underflowed to 0."""
    if not math.isfinite(value) or value <= 0:
        raise FieldError("absurd_value", f"{name} is {value:g}, must be a finite number > 0")
    return value


def liquidation(
    inst: Instrument,
    *,
    ts_event_ns: int,
    ts_recv_ns: int,
    liquidated_side: Literal["long", "short"],
    qty_base: float,
    price: float,
    completeness: Literal["complete", "sampled"],
    notional_label: str,
) -> Liquidation:
    """A :class:`Liquidation` of ``inst`` with ``notional_usd = qty_base × price`` checked.

    USDT (the quote of every linear contract we read) is taken as USD. ``notional_label``
    names the venue's fields in the error when the product overflows or underflows.
    """
    notional = finite_positive(f"notional {notional_label}", qty_base * price)
    return Liquidation(
        venue=inst.venue,
        symbol=inst.symbol,
        asset=inst.asset,
        asset_class=inst.asset_class,
        ts_event_ns=ts_event_ns,
        ts_recv_ns=ts_recv_ns,
        liquidated_side=liquidated_side,
        price=price,
        qty_base=qty_base,
        notional_usd=notional,
        completeness=completeness,
    )
