"""Values as the pages show them (escaped HTML text), and the axis ceiling both plots round to."""

from __future__ import annotations

import math
from html import escape
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: floats to ``digits`` decimals, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is >= ``value`` (> 0): a plot's axis top."""
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value * (1 - 1e-9):
            return float(candidate)
    return float(10 ** (exponent + 1))
