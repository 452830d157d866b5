"""The expectation suites in ``expectations/`` and the parameters a run passes them.

Suites: ``raw_events`` (the events), ``catalog`` (the day's item catalog snapshot, when one was landed)
and ``partition_integrity`` (problems of the whole partition that column rules cannot express).
History-based parameters (volume, new users and items) compare with earlier accepted partitions.
"""

from __future__ import annotations

import json
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


def event_parameters(
    store: PartitionStore, day: date, frame: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str]]:
    """The frame with the derived share columns, the suite parameters, and notes on what was compared.

    History-based checks pass with an explanatory note while there is no history yet.
    """
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
            f"{len(frame)} rows; the last {len(history)} accepted partitions "
            f"({history[-1]['date']} .. {history[0]['date']}) averaged {average:.0f} rows, "
            f"so {params['volume_min']} .. {params['volume_max']} are expected (factor {factor:g})"
        )
    else:
        params["volume_min"], params["volume_max"] = 1, None
        notes["volume within the trailing average"] = (
            f"{len(frame)} rows; no accepted partition before {day} yet, so only non-empty is checked"
        )

    # a shallow copy (copy-on-write: the added columns never reach ``frame``), so the partition's columns
    # are not held twice; the dtype column is one category, not one string per row (10M rows: 10 MB, not 280)
    derived = frame.copy(deep=False)
    time_dtype = str(frame[schema.EVENT_TIME].dtype) if schema.EVENT_TIME in frame.columns else "missing"
    derived[EVENT_TIME_DTYPE] = pd.Series(
        pd.Categorical.from_codes(np.zeros(len(frame), dtype="int8"), categories=[time_dtype]), index=frame.index
    )
    cutoff = day.isoformat()
    for column, name, kind, limit_name in (
        (schema.USER_ID, vocab.USERS, NEW_USER, "max_new_user_share"),
        (schema.ITEM_ID, vocab.ITEMS, NEW_ITEM, "max_new_item_share"),
    ):
        table = vocab.load(store, name)
        known = set(table.loc[table[vocab.FIRST_SEEN] < cutoff, vocab.ID].astype(str))
        check = f"share of new {name}"
        limit = getattr(settings, f"validation_{limit_name}")
        if column in frame.columns:
            derived[kind] = (~frame[column].astype(str).isin(known)).astype("float64")
        else:
            derived[kind] = pd.Series(0.0, index=frame.index)
        if known:
            params[limit_name] = limit
            share = float(derived[kind].mean()) if len(frame) else 0.0
            notes[check] = (
                f"{share:.1%} of the events are by {name} not seen before {day} "
                f"({len(known)} known); at most {limit:.0%} allowed"
            )
        else:
            params[limit_name] = 1.0
            notes[check] = f"no vocabulary before {day} yet (first partition): every id is new, not checked"

    check = "top item share"
    if schema.ITEM_ID in frame.columns and len(frame):
        top = frame[schema.ITEM_ID].astype(str).value_counts().index[0]
        derived[TOP_ITEM] = (frame[schema.ITEM_ID].astype(str) == top).astype("float64")
        share = float(derived[TOP_ITEM].mean())
    else:
        top, share = None, 0.0
        derived[TOP_ITEM] = pd.Series(0.0, index=frame.index)
    params[TOP_ITEM_ID] = None if top is None else str(top)
    if len(frame) >= settings.validation_min_rows_for_shares:
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
    return derived, params, notes


def catalog_parameters(settings: Settings) -> dict[str, Any]:
    """The parameters of the catalog suite."""
    return {"max_id_length": settings.validation_max_id_length, "max_price": settings.validation_max_price,
            "invalid_id": schema.INVALID_ID_REGEX}
