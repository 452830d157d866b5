"""Values as the pages show them (escaped HTML text)."""

from __future__ import annotations

from html import escape
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: floats to ``digits`` decimals, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))
