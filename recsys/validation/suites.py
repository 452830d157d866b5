"""The expectation suites in ``expectations/`` and the parameters a run passes them.

Suites: ``raw_events`` (the events), ``catalog`` (the day's item catalog snapshot, when one was landed)
and ``partition_integrity`` (problems of the whole partition that column rules cannot express).
History-based parameters (volume, new users and items) compare with earlier accepted partitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.features import vocab
from recsys.storage import PartitionStore, layout
from recsys.validation.results import ValidationFailed, previous_summary

SUITES_DIR = Path(__file__).resolve().parents[2] / "expectations"
EVENTS_SUITE = "raw_events"
CATALOG_SUITE = "catalog"
INTEGRITY_SUITE = "partition_integrity"
# derived columns the share expectations of raw_events read (added to a copy of the partition)
NEW_USER, NEW_ITEM, TOP_ITEM = "_new_user", "_new_item", "_top_item"
EVENT_TIME_DTYPE = "_event_time_dtype"
# keys event_parameters adds for the margins to the thresholds, never passed to GX (the caller pops them)
VOLUME_AVERAGE, VOLUME_DAYS, TOP_ITEM_ID = "volume_average", "volume_days", "top_item_id"
TRAILING_KEYS = (VOLUME_AVERAGE, VOLUME_DAYS, TOP_ITEM_ID)


def load_suite(name: str = EVENTS_SUITE) -> dict[str, Any]:
    """The suite definition ``expectations/<name>.json`` as a dict."""
    path = SUITES_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValidationFailed(f"expectation suite {path} is missing") from err


def _history(store: PartitionStore, day: date, n: int) -> list[dict[str, Any]]:
    """Summaries of the last ``n`` accepted partitions before ``day`` (passed, or accepted by on-call)."""
    days = [d for d in store.partitions(layout.VALIDATION_REPORTS, complete_only=False) if d < day]
    accepted = []
    for earlier in reversed(days):
        summary = previous_summary(store, earlier)
        if summary is None:
            continue
        if summary.get("success") or summary.get("accepted"):
            accepted.append(summary)
        if len(accepted) == n:
            break
    return accepted


def suite_columns(frame: pd.DataFrame, suite: dict[str, Any]) -> pd.DataFrame:
    """The columns of ``frame`` that ``suite``'s expectations read, in their order; all of them if one
    expectation is about the table's columns as a whole.

    Great Expectations keeps the batch's DataFrame for the whole run and computes its metrics over it;
    columns no expectation reads (``session_id``, ``country``) only cost memory there (bench/scale).
    """
    wanted: set[str] = set()
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if expectation["type"].startswith("expect_table_column") or "column_list" in kwargs:
            return frame
        for key in ("column", "column_A", "column_B"):
            if isinstance(kwargs.get(key), str):
                wanted.add(kwargs[key])
    return frame[[c for c in frame.columns if c in wanted]]


@dataclass(frozen=True)
class EventTotals:
    """What the partition-level parameters and notes need of a partition's events, counted over all of its rows
    (by :func:`event_parameters` from one frame, or chunk by chunk by :mod:`recsys.validation.partition`).

    ``new_users`` / ``new_items``: rows whose id (as text) is not in ``known[users|items]``;
    ``top_item`` / ``top_count``: the most frequent item id (as text; ties: the first to occur) and its rows.
    """

    rows: int
    new_users: int
    new_items: int
    top_item: str | None
    top_count: int


def known_ids(store: PartitionStore, day: date) -> dict[str, pd.Index]:
    """``users`` / ``items`` -> the vocabulary ids first seen before ``day`` (the append-only vocab tables)."""
    return {name: vocab.known_before(store, name, day) for name in (vocab.USERS, vocab.ITEMS)}


def new_id_flags(frame: pd.DataFrame, column: str, known: pd.Index) -> pd.Series:
    """1.0 where ``frame[column]`` (as text) is not a known id, else 0.0 (all 0.0 without the column).

    Looked up in ``known``'s own hash table, built once per Index and kept by pandas (``get_indexer``):
    ``Series.isin`` hashes every known id again on each call, once per chunk and pass (bench/scale: 8.9 s per
    1M-row chunk against 1.65M known users, 0.6 s here; a 30M-event day 2 spent 450 CPU s in it)."""
    if column not in frame.columns:
        return pd.Series(0.0, index=frame.index)
    ids = frame[column].astype(str)
    if not known.is_unique:  # vocab ids are unique; an index that is not cannot be looked up this way
        return (~ids.isin(known)).astype("float64")
    return pd.Series((known.get_indexer(ids) < 0).astype("float64"), index=frame.index)


def time_dtype_column(frame: pd.DataFrame) -> pd.Series:
    """The dtype of ``event_time`` on every row (one category, not one string per row), or "missing"."""
    time_dtype = str(frame[schema.EVENT_TIME].dtype) if schema.EVENT_TIME in frame.columns else "missing"
    return pd.Series(
        pd.Categorical.from_codes(np.zeros(len(frame), dtype="int8"), categories=[time_dtype]), index=frame.index
    )


def top_item_flags(frame: pd.DataFrame, top: str | None) -> pd.Series:
    """1.0 where the item (as text) is ``top``, else 0.0."""
    if top is None or schema.ITEM_ID not in frame.columns:
        return pd.Series(0.0, index=frame.index)
    return (frame[schema.ITEM_ID].astype(str) == top).astype("float64")


def item_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per item id (as text), in the order the ids first occur (empty without the column)."""
    if schema.ITEM_ID not in frame.columns:
        return {}
    counts = frame[schema.ITEM_ID].astype(str).value_counts(sort=False)  # in order of first occurrence
    return {str(item): int(n) for item, n in counts.items()}


def add_counts(total: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    """``total`` with ``counts`` (a later chunk's :func:`item_counts`) added, in place; ids keep their first order."""
    for item, n in counts.items():
        total[item] = total.get(item, 0) + n
    return total


def top_item(counts: dict[str, int]) -> tuple[str | None, int]:
    """The most frequent item of :func:`item_counts` and its rows; of several, the first to occur (None, 0: none)."""
    if not counts:
        return None, 0
    top = max(counts, key=counts.__getitem__)  # max keeps the first of equal keys
    return top, counts[top]


def derived_columns(frame: pd.DataFrame, known: dict[str, pd.Index], top: str | None) -> pd.DataFrame:
    """``frame`` (a shallow copy: its columns are not copied) with the derived columns the suite reads."""
    derived = frame.copy(deep=False)
    derived[EVENT_TIME_DTYPE] = time_dtype_column(frame)
    derived[NEW_USER] = new_id_flags(frame, schema.USER_ID, known[vocab.USERS])
    derived[NEW_ITEM] = new_id_flags(frame, schema.ITEM_ID, known[vocab.ITEMS])
    derived[TOP_ITEM] = top_item_flags(frame, top)
    return derived


def event_parameters(
    store: PartitionStore, day: date, frame: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str]]:
    """The frame with the derived share columns, the suite parameters, and notes on what was compared.

    History-based checks pass with an explanatory note while there is no history yet.
    """
    known = known_ids(store, day)
    top, _ = top_item(item_counts(frame))
    derived = derived_columns(frame, known, top)
    totals = EventTotals(
        rows=len(frame), new_users=int(derived[NEW_USER].sum()), new_items=int(derived[NEW_ITEM].sum()),
        top_item=top, top_count=int(derived[TOP_ITEM].sum()),
    )
    params, notes = partition_parameters(store, day, settings, totals, {k: len(v) for k, v in known.items()})
    return derived, params, notes


def partition_parameters(
    store: PartitionStore, day: date, settings: Settings, totals: EventTotals, known: dict[str, int]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The suite parameters (with :data:`TRAILING_KEYS`) and the notes, from the partition's ``totals`` and the
    number of ``known`` users and items (:func:`known_ids`); a pure function of them and the earlier summaries."""
    rows = totals.rows
    late = timedelta(hours=settings.validation_late_hours)
    params: dict[str, Any] = {  # at the calendar's edges the window ends there (layout.shift_time)
        "day_start": pd.Timestamp(layout.shift_time(layout.day_start(day), -late)),
        "day_end": pd.Timestamp(layout.day_end(day)),
        "now": pd.Timestamp(datetime.now(UTC)),
        "max_id_length": settings.validation_max_id_length,
        "invalid_id": schema.INVALID_ID_REGEX,
        "max_quantity": settings.validation_max_quantity,
        "max_price": settings.validation_max_price,
        "min_unique_event_ids": 1.0 - settings.validation_max_duplicate_ratio,
        "range_mostly": 1.0 - settings.validation_range_tolerance,
    }
    notes: dict[str, str] = {}

    history = _history(store, day, settings.validation_history)
    # what the margins to the thresholds are measured against (TRAILING_KEYS)
    params[VOLUME_AVERAGE], params[VOLUME_DAYS], params[TOP_ITEM_ID] = None, len(history), None
    if history:
        average = sum(int(s["rows"]) for s in history) / len(history)
        params[VOLUME_AVERAGE] = average
        factor = settings.validation_volume_factor
        params["volume_min"] = max(1, int(average / factor))
        params["volume_max"] = int(average * factor) + 1
        notes["volume within the trailing average"] = (
            f"{rows} rows; the last {len(history)} accepted partitions "
            f"({history[-1]['date']} .. {history[0]['date']}) averaged {average:.0f} rows, "
            f"so {params['volume_min']} .. {params['volume_max']} are expected (factor {factor:g})"
        )
    else:
        params["volume_min"], params["volume_max"] = 1, None
        notes["volume within the trailing average"] = (
            f"{rows} rows; no accepted partition before {day} yet, so only non-empty is checked"
        )

    for name, new, limit_name in (
        (vocab.USERS, totals.new_users, "max_new_user_share"),
        (vocab.ITEMS, totals.new_items, "max_new_item_share"),
    ):
        check = f"share of new {name}"
        limit = getattr(settings, f"validation_{limit_name}")
        if known[name]:
            params[limit_name] = limit
            share = new / rows if rows else 0.0
            notes[check] = (
                f"{share:.1%} of the events are by {name} not seen before {day} "
                f"({known[name]} known); at most {limit:.0%} allowed"
            )
        else:
            params[limit_name] = 1.0
            notes[check] = f"no vocabulary before {day} yet (first partition): every id is new, not checked"

    check = "top item share"
    top = totals.top_item
    share = totals.top_count / rows if top is not None and rows else 0.0
    params[TOP_ITEM_ID] = top
    if rows >= settings.validation_min_rows_for_shares:
        params["max_top_item_share"] = settings.validation_max_top_item_share
        notes[check] = (
            f"item {top} has {share:.1%} of the events; at most "
            f"{settings.validation_max_top_item_share:.0%} allowed"
        )
    else:
        params["max_top_item_share"] = 1.0
        notes[check] = (
            f"item {top} has {share:.1%} of the events; not checked below "
            f"{settings.validation_min_rows_for_shares} rows"
        )
    return params, notes


def catalog_parameters(settings: Settings) -> dict[str, Any]:
    """The parameters of the catalog suite."""
    return {"max_id_length": settings.validation_max_id_length, "max_price": settings.validation_max_price,
            "invalid_id": schema.INVALID_ID_REGEX}


# --- engines: the suites are written once, with pandas type names; the Spark backend (recsys.spark) reads
# them through these, so backend-specific type names live here and nowhere else ---------------------------
PANDAS, SPARK = "pandas", "spark"
# a suite's pandas type name -> the pyspark.sql.types class that holds such values
SPARK_TYPES = {
    "str": "StringType", "StringDtype": "StringType", "object": "StringType",
    "int64": "LongType", "Int64": "LongType", "int32": "IntegerType", "Int32": "IntegerType",
    "float64": "DoubleType", "Float64": "DoubleType", "float32": "FloatType", "Float32": "FloatType",
    "bool": "BooleanType", "boolean": "BooleanType",
}
# a Spark type as the pandas path names the same column's dtype (what reports show, on both engines)
PANDAS_NAMES = {
    "StringType": "StringDtype", "LongType": "int64", "IntegerType": "int32", "ShortType": "int16",
    "ByteType": "int8", "DoubleType": "float64", "FloatType": "float32", "BooleanType": "bool",
    # Spark timestamps are instants in microseconds; without a time zone they are local times
    "TimestampType": "datetime64[us, UTC]", "TimestampNTZType": "datetime64[us]", "DateType": "date",
}


def engine_suite(suite: dict[str, Any], engine: str = PANDAS) -> dict[str, Any]:
    """``suite`` as ``engine`` runs it: on Spark, every ``type_list`` in Spark's type names."""
    if engine == PANDAS:
        return suite
    out = json.loads(json.dumps(suite))
    for expectation in out.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if isinstance(kwargs.get("type_list"), list):
            kwargs["type_list"] = list(dict.fromkeys(SPARK_TYPES.get(t, t) for t in kwargs["type_list"]))
    return out


def engine_checks(checks: list[dict[str, Any]], suite: dict[str, Any], engine: str = PANDAS) -> list[dict[str, Any]]:
    """Compact checks (:func:`recsys.validation.results.compact`) of ``engine_suite(suite, engine)`` as the
    pandas engine reports them: the suite's own type lists, observed types in pandas' names."""
    if engine == PANDAS:
        return checks
    lists = {e["kwargs"].get("column"): e["kwargs"]["type_list"] for e in suite.get("expectations", [])
             if isinstance(e.get("kwargs", {}).get("type_list"), list)}
    for check in checks:
        type_list = lists.get(check.get("column")) if "type_list" in (check.get("expected") or {}) else None
        if type_list is None:
            continue
        check["expected"]["type_list"] = list(type_list)
        if isinstance(check.get("observed_value"), str):
            check["observed_value"] = PANDAS_NAMES.get(check["observed_value"], check["observed_value"])
    return checks


def spark_dtype_name(spark_type: Any) -> str:
    """The value of :data:`EVENT_TIME_DTYPE` for a Spark column of type ``spark_type`` (its pandas name)."""
    name = type(spark_type).__name__
    return PANDAS_NAMES.get(name, spark_type.simpleString())
