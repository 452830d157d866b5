"""Append-only vocabularies: id -> embedding row tables that only ever grow.

Row 0 is reserved for out-of-vocabulary ids. An id is counted every day it occurs (once per example,
i.e. per distinct user-item pair of the day) and gets its own row once it has been seen
``min_count`` times; until then it is *pending* and shares row 0, so one-off ids do not bloat the
embedding tables. Rows are given in order of qualification (ties broken by id), after every row
given before, so a row, once given, never changes meaning.

Columns: ``id``; ``row`` (0 while pending); ``first_seen`` (the day the id first occurred);
``count`` (occurrences counted so far); ``qualified`` (the day the row was given, "" while
pending); ``last_day`` (the last day counted, which makes re-counting a day a no-op).
"""

from __future__ import annotations

import io
from datetime import date

import numpy as np
import pandas as pd

from recsys.storage import PartitionStore, layout

ID = "id"
ROW = "row"
FIRST_SEEN = "first_seen"
COUNT = "count"
QUALIFIED = "qualified"
LAST_DAY = "last_day"
OOV_ROW = 0
USERS = "users"
ITEMS = "items"

DTYPES = {ID: "string", ROW: "int64", FIRST_SEEN: "string", COUNT: "int64", QUALIFIED: "string", LAST_DAY: "string"}


def empty() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DTYPES.items()})


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    """Tables written before min-count existed list qualified ids only: count 1, qualified on first_seen."""
    table = table.copy()
    if COUNT not in table:
        table[COUNT] = 1
    if QUALIFIED not in table:
        table[QUALIFIED] = table[FIRST_SEEN]
    if LAST_DAY not in table:
        table[LAST_DAY] = table[FIRST_SEEN]
    return table[list(DTYPES)].astype(DTYPES)


def load(store: PartitionStore, name: str) -> pd.DataFrame:
    """The vocabulary ``name`` (``users`` or ``items``); empty if none was written yet."""
    path = layout.vocab_table(name)
    return _complete(store.read_parquet(path)) if store.exists(path) else empty()


def known_before(store: PartitionStore, name: str, day: date) -> pd.Index:
    """The ids of vocabulary ``name`` first seen before ``day``, as an Index of ``str`` (for ``isin``).

    Reads only the ``id`` and ``first_seen`` columns of the table (not a Python set of every id).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = layout.vocab_table(name)
    if not store.exists(path):
        return pd.Index([], dtype=object)
    table = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=[ID, FIRST_SEEN])
    ids = table.column(ID).filter(pc.less(table.column(FIRST_SEEN).cast("string"), day.isoformat()))
    return pd.Index(ids.cast("string").to_numpy(zero_copy_only=False).astype(object), dtype=object)


def grow(vocab: pd.DataFrame, ids: pd.Series, day: date, min_count: int = 1) -> tuple[pd.DataFrame, int]:
    """Count the occurrences ``ids`` of ``day`` and give rows to ids that reach ``min_count``.

    Returns (table, number of rows given). Counting a day twice changes nothing (``last_day``), so a
    rerun of a date is idempotent as long as dates are processed in order.
    """
    return grow_counts(vocab, ids.dropna().astype(str).value_counts(), day, min_count)


def grow_counts(vocab: pd.DataFrame, seen: pd.Series, day: date, min_count: int = 1) -> tuple[pd.DataFrame, int]:
    """:func:`grow` from the day's occurrences already counted: ``seen`` holds each distinct id's count
    (positive), indexed by the ids as text (the features step counts codes, not a column of every id)."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    vocab = _complete(vocab) if len(vocab) else empty()
    stamp = day.isoformat()
    if seen.empty:
        return vocab, 0
    table = vocab.set_axis(pd.Index(vocab[ID].astype(str).to_numpy()), axis=0)
    known = seen.index.intersection(table.index)
    fresh = seen.index.difference(table.index)
    counted = known[(table.loc[known, LAST_DAY] < stamp).to_numpy()]
    table.loc[counted, COUNT] = table.loc[counted, COUNT].to_numpy() + seen[counted].to_numpy()
    table.loc[counted, LAST_DAY] = stamp
    if len(fresh):
        added = pd.DataFrame({
            ID: fresh, ROW: OOV_ROW, FIRST_SEEN: stamp, COUNT: seen[fresh].to_numpy(), QUALIFIED: "",
            LAST_DAY: stamp,
        }, index=fresh).astype(DTYPES)
        table = pd.concat([table, added])
    ready = table[(table[ROW] == OOV_ROW) & (table[COUNT] >= min_count)].sort_values(ID).index
    if len(ready):
        start = int(table[ROW].max()) + 1
        table.loc[ready, ROW] = np.arange(start, start + len(ready))
        table.loc[ready, QUALIFIED] = stamp
    # ids with a row in row order, then the pending ones by id
    table = table.assign(_pending=table[ROW] == OOV_ROW).sort_values(["_pending", ROW, ID]).drop(columns="_pending")
    return table.reset_index(drop=True).astype(DTYPES), len(ready)


def save(store: PartitionStore, name: str, vocab: pd.DataFrame) -> None:
    store.write_parquet(layout.vocab_table(name), vocab)


def size(vocab: pd.DataFrame) -> int:
    """Number of embedding rows the vocabulary needs (ids with a row, plus the OOV row)."""
    return (int(vocab[ROW].max()) + 1) if len(vocab) else OOV_ROW + 1


def growth_on(vocab: pd.DataFrame, day: date) -> tuple[int, int]:
    """(rows given on ``day``, embedding rows needed as of the end of ``day``)."""
    vocab = _complete(vocab)
    qualified = vocab[QUALIFIED]
    given = (qualified != "") & (qualified <= day.isoformat())
    return int((qualified == day.isoformat()).sum()), int(given.sum()) + 1


def pending_on(vocab: pd.DataFrame, day: date) -> int:
    """Ids seen by the end of ``day`` without a row yet: they share the OOV row."""
    vocab = _complete(vocab)
    stamp = day.isoformat()
    waiting = (vocab[QUALIFIED] == "") | (vocab[QUALIFIED] > stamp)
    return int(((vocab[FIRST_SEEN] <= stamp) & waiting).sum())


def rows_for(vocab: pd.DataFrame, ids: pd.Series) -> pd.Series:
    """Embedding rows of ``ids``; unknown and pending ids map to the OOV row."""
    found = pd.Index(vocab[ID].astype(str).to_numpy(object)).get_indexer(ids.astype(str).to_numpy(object))
    rows = np.where(found >= 0, vocab[ROW].to_numpy(np.int64)[np.maximum(found, 0)], OOV_ROW) if len(vocab) else (
        np.full(len(ids), OOV_ROW, np.int64))
    return pd.Series(rows, index=ids.index, dtype="int64")


def with_rows(vocab: pd.DataFrame) -> pd.DataFrame:
    """Only the ids that have their own row."""
    return vocab[vocab[ROW] != OOV_ROW]
