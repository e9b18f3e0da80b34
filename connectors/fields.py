"""Strict field readers shared by every venue parser.

Exchanges send numbers as strings (``"0.00038167"``), timestamps as ints or strings of
milliseconds, and sometimes empty strings for "no value". These helpers turn one field into a
checked Python value or raise :class:`FieldError` with a dead-letter reason and a detail that
names the field, so a parser can reject one item of a batch and go on.

>>> ms_to_ns({"T": "1760131200123"}, "T")
1760131200123000000
>>> positive({"p": "112000.5"}, "p")
112000.5
>>> positive({"p": "NaN"}, "p")
Traceback (most recent call last):
...
connectors.fields.FieldError: absurd_value: p is nan, must be a finite number > 0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from connectors.base import RejectReason

MIN_TS_MS = 1_262_304_000_000  # 2010-01-01: anything earlier is not an exchange time
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01


class FieldError(ValueError):
    """One field is missing, mistyped or absurd."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


def shown(value: Any) -> Any:
    """``value`` itself when a scalar, else a short description: safe to format into a detail.

    A list or object is not printed: ``repr`` of one nested 1000 levels deep (orjson accepts
    1024) raises ``RecursionError``, and a huge one would be copied whole only to be cut.

    >>> shown("SELLX"), shown(3), shown([[[]]]), shown({"a": 1})
    ('SELLX', 3, 'a list of 1 items', 'an object of 1 keys')
    """
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    return value


def require(obj: Mapping[str, Any], key: str) -> Any:
    """The value of ``key``; missing, None or ``""`` raise ``missing_field``."""
    if not isinstance(obj, Mapping):
        raise FieldError("bad_type", f"expected an object holding {key}, got {type(obj).__name__}")
    value = obj.get(key)
    if value is None or value == "":
        raise FieldError("missing_field", f"{key} is missing or empty")
    return value


def text(obj: Mapping[str, Any], key: str) -> str:
    """A non-empty string field."""
    value = require(obj, key)
    if not isinstance(value, str):
        raise FieldError("bad_type", f"{key} must be a string, got {type(value).__name__}")
    return value


def _float(obj: Mapping[str, Any], key: str) -> float:
    value = require(obj, key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError("bad_type", f"{key} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise FieldError("bad_type", f"{key} is not a number: {str(value)[:40]!r}") from None


def number(obj: Mapping[str, Any], key: str) -> float:
    """A finite number, sent as a JSON number or a numeric string."""
    result = _float(obj, key)
    if not math.isfinite(result):
        raise FieldError("absurd_value", f"{key} is {result}, must be finite")
    return result


def positive(obj: Mapping[str, Any], key: str) -> float:
    """A finite number > 0 (prices, quantities)."""
    value = _float(obj, key)
    if not math.isfinite(value) or value <= 0:
        raise FieldError("absurd_value", f"{key} is {value:g}, must be a finite number > 0")
    return value


def optional_number(obj: Mapping[str, Any], key: str) -> float | None:
    """Like :func:`number`, but a missing or empty field gives None."""
    if obj.get(key) in (None, ""):
        return None
    return number(obj, key)


def ms_to_ns(obj: Mapping[str, Any], key: str) -> int:
    """An epoch-milliseconds timestamp (int or numeric string) as integer nanoseconds."""
    value = require(obj, key)
    if isinstance(value, bool):
        raise FieldError("bad_type", f"{key} must be integer milliseconds, got a boolean")
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise FieldError("bad_type", f"{key} is not integer milliseconds: {value[:40]!r}")
        ms = int(value)
    elif isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer():
        ms = int(value)
    else:
        raise FieldError("bad_type", f"{key} must be integer milliseconds, got {shown(value)!r}")
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise FieldError("absurd_value", f"{key}={ms} is not a plausible epoch time in ms")
    return ms * 1_000_000
