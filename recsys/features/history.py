"""Each customer's recent purchases: the query tower's input besides the user id.

``features/dt=<day>/history.parquet`` is a snapshot as of the end of ``day``: for every user, up to
``length`` distinct items, most recently bought first, with the number of days each was bought
(``days``) and the last day it was (``last_day``). It is derived from the previous snapshot plus
the day's examples, so it costs O(users x length) per day and stays bounded however long the
history gets. A model for day D reads the snapshot of the latest day *before* D (what was known
when D's queries were asked); a serving process reads the newest.

Items are kept by id, not row: a history outlives vocabulary changes (an item still below the
minimum count has no row yet and is simply skipped when the history is turned into rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from recsys import schema
from recsys.storage import PartitionStore, layout

HISTORY_FILE = "history.parquet"
DAYS = "days"
LAST_DAY = "last_day"
HIST_ITEMS = "hist_items"  # example columns: the user's history before the example's day
HIST_DAYS = "hist_days"
COLUMNS = (schema.USER_ID, schema.ITEM_ID, DAYS, LAST_DAY)


def empty() -> pd.DataFrame:
    return pd.DataFrame({schema.USER_ID: pd.Series(dtype="string"), schema.ITEM_ID: pd.Series(dtype="string"),
                         DAYS: pd.Series(dtype="int64"), LAST_DAY: pd.Series(dtype="string")})


def update(previous: pd.DataFrame, pairs: pd.DataFrame, day: date, length: int) -> pd.DataFrame:
    """The snapshot after ``day``: ``previous`` plus the day's distinct (user_id, item_id) ``pairs``."""
    if length < 1:
        raise ValueError(f"history length must be >= 1, got {length}")
    today = pairs[[schema.USER_ID, schema.ITEM_ID]].astype(str).drop_duplicates()
    today = today.assign(**{DAYS: 1, LAST_DAY: day.isoformat()})
    both = pd.concat([previous[list(COLUMNS)].astype({schema.USER_ID: str, schema.ITEM_ID: str}), today],
                     ignore_index=True)
    merged = both.groupby([schema.USER_ID, schema.ITEM_ID], as_index=False, sort=False).agg(
        **{DAYS: (DAYS, "sum"), LAST_DAY: (LAST_DAY, "max")}
    )
    merged = merged.sort_values([schema.USER_ID, LAST_DAY, schema.ITEM_ID], ascending=[True, False, True])
    merged = merged.groupby(schema.USER_ID, sort=False).head(length)
    return merged.reset_index(drop=True).astype(
        {schema.USER_ID: "string", schema.ITEM_ID: "string", DAYS: "int64", LAST_DAY: "string"}
    )


def load(store: PartitionStore, day: date) -> pd.DataFrame:
    """The snapshot written with the features of ``day`` (empty if that day has none)."""
    path = f"{layout.features(day)}/{HISTORY_FILE}"
    return store.read_parquet(path) if store.exists(path) else empty()


def load_before(store: PartitionStore, day: date) -> pd.DataFrame:
    """What was known before ``day``: the snapshot of the latest feature partition before it."""
    earlier = [d for d in store.partitions(layout.FEATURES) if d < day]
    return load(store, earlier[-1]) if earlier else empty()


def load_latest(store: PartitionStore) -> pd.DataFrame:
    days = store.partitions(layout.FEATURES)
    return load(store, days[-1]) if days else empty()


def by_user(snapshot: pd.DataFrame) -> dict[str, tuple[list[str], list[int]]]:
    """user id -> (item ids most recent first, days bought) of a snapshot."""
    out: dict[str, tuple[list[str], list[int]]] = {}
    ordered = snapshot.sort_values([schema.USER_ID, LAST_DAY, schema.ITEM_ID], ascending=[True, False, True])
    for user, group in ordered.groupby(schema.USER_ID, sort=False):
        out[str(user)] = (group[schema.ITEM_ID].astype(str).tolist(), group[DAYS].astype(int).tolist())
    return out


def attach(examples: pd.DataFrame, snapshot: pd.DataFrame) -> pd.DataFrame:
    """``examples`` with ``hist_items`` / ``hist_days``: each example user's history in ``snapshot``."""
    users = by_user(snapshot)
    none: tuple[list[str], list[int]] = ([], [])
    found = [users.get(str(u), none) for u in examples[schema.USER_ID]]
    return examples.assign(**{HIST_ITEMS: [f[0] for f in found], HIST_DAYS: [f[1] for f in found]})


def to_rows(
    items: list[list[str]] | pd.Series, days: list[list[int]] | pd.Series, item_rows: Mapping[str, int], length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Histories as padded arrays: rows [N, length] int64 (0 = padding) and days [N, length] float32.

    Items without a row in ``item_rows`` (unknown, or pending below the minimum count) are skipped.
    """
    rows = np.zeros((len(items), length), dtype=np.int64)
    counts = np.zeros((len(items), length), dtype=np.float32)
    for n, (ids, ds) in enumerate(zip(items, days, strict=True)):
        kept = [(item_rows[i], d) for i, d in zip(ids, ds, strict=True) if item_rows.get(i, 0) > 0][:length]
        if kept:
            rows[n, : len(kept)] = [r for r, _ in kept]
            counts[n, : len(kept)] = [d for _, d in kept]
    return rows, counts
