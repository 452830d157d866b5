"""Validation of raw partitions with Great Expectations: reports, and quarantine on failure.

The names below are imported on first use, so that :mod:`recsys.validation.health` (read by the Airflow
plugin's pages, which Airflow imports in every one of its processes) loads without pandas or GX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.validation.partition import validate_partition
    from recsys.validation.results import ValidationFailed, ValidationReport

__all__ = ["ValidationFailed", "ValidationReport", "validate_partition"]
_MODULE_OF = {"ValidationFailed": "results", "ValidationReport": "results", "validate_partition": "partition"}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
