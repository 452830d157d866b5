"""The storage layout: every path the product reads or writes, built in one place.

The same relative paths are used on a local root and on HDFS (see DESIGN.md, "Storage layout").
"""

from __future__ import annotations

import re
from datetime import date

SUCCESS = "_SUCCESS"
_PARTITION_NAME = re.compile(r"dt=\d{4}-\d{2}-\d{2}")

RAW_EVENTS = "raw/events"
RAW_CATALOG = "raw/catalog"
QUARANTINE_EVENTS = "quarantine/events"
FEATURES = "features"
VOCAB = "vocab"
MODELS = "models/two_tower/versions"
REGISTRY = "registry/two_tower.json"
VALIDATION_REPORTS = "reports/validation"


def partition_name(day: date) -> str:
    """``dt=YYYY-MM-DD``."""
    return f"dt={day.isoformat()}"


def parse_partition_name(name: str) -> date | None:
    """The date of a ``dt=YYYY-MM-DD`` directory name, or None for anything else."""
    if not _PARTITION_NAME.fullmatch(name):
        return None
    try:
        return date.fromisoformat(name[3:])
    except ValueError:
        return None


def raw_events(day: date) -> str:
    return f"{RAW_EVENTS}/{partition_name(day)}"


def raw_catalog(day: date) -> str:
    return f"{RAW_CATALOG}/{partition_name(day)}"


def quarantine_events(day: date) -> str:
    return f"{QUARANTINE_EVENTS}/{partition_name(day)}"


def features(day: date) -> str:
    return f"{FEATURES}/{partition_name(day)}"


def vocab_table(name: str) -> str:
    """``vocab/<name>.parquet``: an append-only id -> row table (``users`` or ``items``)."""
    return f"{VOCAB}/{name}.parquet"


def model_version(version: int) -> str:
    return f"{MODELS}/{version}"


def validation_report(day: date) -> str:
    return f"{VALIDATION_REPORTS}/{partition_name(day)}"
