"""The storage layout: every path the product reads or writes, built in one place.

The same relative paths are used on a local root and on HDFS (see DESIGN.md, "Storage layout").
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

SUCCESS = "_SUCCESS"
_PARTITION_NAME = re.compile(r"dt=\d{4}-\d{2}-\d{2}")

RAW_EVENTS = "raw/events"
RAW_CATALOG = "raw/catalog"
RAW_LATE_EVENTS = "raw/late_events"  # the Kafka sink: events of a day that was already closed
RAW_INVALID_EVENTS = "raw/invalid_events"  # the Kafka sink: messages that are not valid events
SINK_STATE = "streaming/sink"  # the Kafka sink, per topic partition: the chunk being written and running totals
QUARANTINE_EVENTS = "quarantine/events"
FEATURES = "features"
VOCAB = "vocab"
MODELS = "models/two_tower/versions"
REGISTRY = "registry/two_tower.json"
VALIDATION_REPORTS = "reports/validation"

# file names inside those directories
SUMMARY_FILE = "summary.json"  # reports/validation/dt=<day>/: the validation summary of the partition
REASON_FILE = "reason.json"  # quarantine/events/dt=<day>/: why the partition was quarantined
EXAMPLES_FILE = "examples.parquet"  # features/dt=<day>/: the training and holdout examples
STATS_FILE = "stats.json"  # features/dt=<day>/: cleaning and example statistics
QUERY_FILE = "query_history.parquet"  # features/dt=<day>/: each example's history (see features.history)
HISTORY_FILE = "history.parquet"  # features/dt=<day>/: each customer's recent items after the day
TABLES_FILE = "tables.npz"  # models/.../<n>/: the embedding tables
METADATA_FILE = "metadata.json"  # models/.../<n>/: how the version was trained
INDEX_FILE = "index.parquet"  # models/.../<n>/: the serving index (written on deploy)
INDEX_META_FILE = "index.json"  # models/.../<n>/: what the serving index was built from


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


def shift_day(day: date, days: int) -> date:
    """``day`` plus ``days`` (negative: minus), held at ``date.min`` / ``date.max`` instead of overflowing.

    Every window around a partition date (trend, history, retrain, late deadlines, the day after the
    newest partition) is computed with this, so a date at the edge of the calendar (0001-01-01,
    9999-12-31) or a huge window never raises OverflowError: the window just ends at the calendar's edge.
    """
    ordinal = min(max(day.toordinal() + days, date.min.toordinal()), date.max.toordinal())
    return date.fromordinal(ordinal)


def shift_time(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held at the first / last representable instant instead of overflowing."""
    try:
        return moment + delta
    except OverflowError:
        edge = datetime.max if delta > timedelta(0) else datetime.min
        return edge.replace(tzinfo=moment.tzinfo)


def day_start(day: date) -> datetime:
    """The first instant of ``day`` in UTC."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def day_end(day: date) -> datetime:
    """The last instant (microsecond) of ``day`` in UTC (representable for 9999-12-31 too)."""
    return datetime.combine(day, time.max, tzinfo=UTC)


def raw_events(day: date) -> str:
    return f"{RAW_EVENTS}/{partition_name(day)}"


def late_events(day: date) -> str:
    """``raw/late_events/dt=D``: events of day D the Kafka sink received after it closed D."""
    return f"{RAW_LATE_EVENTS}/{partition_name(day)}"


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


def validation_summary(day: date) -> str:
    """``reports/validation/dt=<day>/summary.json``."""
    return f"{validation_report(day)}/{SUMMARY_FILE}"
