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
from typing import Any

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
    (positive), indexed by the ids as text (the features step counts codes, not a column of every id).

    Positional work on Arrow arrays and NumPy (an id is looked up once, in Arrow's hash table): no Python
    object per id and no label index, so a day of millions of ids costs little more than the table itself.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    vocab = _complete(vocab) if len(vocab) else empty()
    stamp = day.isoformat()
    if seen.empty:
        return vocab, 0
    old_ids = text_array(vocab[ID])
    seen_ids = text_array(seen.index.astype(str))
    found = pc.index_in(seen_ids, value_set=old_ids).to_numpy(zero_copy_only=False)  # float, NaN: a new id
    fresh = np.isnan(found)
    at = found[~fresh].astype(np.int64)
    seen_counts = seen.to_numpy(np.int64)
    last_day = text_array(vocab[LAST_DAY])
    counted = np.zeros(len(vocab), bool)
    counted[at] = np.asarray(pc.less(last_day.take(pa.array(at)), stamp).to_numpy(zero_copy_only=False), bool)
    count = vocab[COUNT].to_numpy(np.int64).copy()
    count[at] += np.where(counted[at], seen_counts[~fresh], 0)
    new_ids = seen_ids.filter(pa.array(fresh))
    order = pc.sort_indices(new_ids)
    ids = pa.concat_arrays([old_ids, new_ids.take(order)])
    count = np.concatenate([count, seen_counts[fresh][order.to_numpy()]])
    n_new = len(new_ids)
    row = np.concatenate([vocab[ROW].to_numpy(np.int64), np.full(n_new, OOV_ROW, np.int64)])
    ready = np.flatnonzero((row == OOV_ROW) & (count >= min_count))
    ready = ready[pc.sort_indices(ids.take(pa.array(ready))).to_numpy()]  # rows given in id order
    if len(ready):
        start = int(row.max()) + 1
        row[ready] = np.arange(start, start + len(ready))
    qualified_now = np.zeros(len(row), bool)
    qualified_now[ready] = True
    stamped = np.concatenate([counted, np.ones(n_new, bool)])

    def column(name: str, new: str, now: np.ndarray) -> pa.Array:  # a text column: ``stamp`` where ``now``
        values = pa.concat_arrays([text_array(vocab[name]), pa.array([new] * n_new, pa.large_string())])
        return pc.if_else(pa.array(now), stamp, values)

    first_seen = column(FIRST_SEEN, stamp, np.zeros(len(row), bool))
    qualified = column(QUALIFIED, "", qualified_now)
    last = column(LAST_DAY, stamp, stamped)
    # ids with a row in row order, then the pending ones by id
    pending = np.flatnonzero(row == OOV_ROW)
    pending = pending[pc.sort_indices(ids.take(pa.array(pending))).to_numpy()]
    given = np.flatnonzero(row != OOV_ROW)
    take = np.concatenate([given[np.argsort(row[given], kind="stable")], pending])
    picked = pa.array(take)
    table = pd.DataFrame({
        ID: pd.array(ids.take(picked), dtype=DTYPES[ID]), ROW: row[take],
        FIRST_SEEN: pd.array(first_seen.take(picked), dtype=DTYPES[FIRST_SEEN]), COUNT: count[take],
        QUALIFIED: pd.array(qualified.take(picked), dtype=DTYPES[QUALIFIED]),
        LAST_DAY: pd.array(last.take(picked), dtype=DTYPES[LAST_DAY]),
    })
    return table.astype(DTYPES), len(ready)


def text_array(values: Any) -> Any:
    """``values`` (text: pandas, NumPy or Arrow) as one Arrow large_string array."""
    import pyarrow as pa

    if isinstance(values, pa.Array | pa.ChunkedArray):
        array = values.cast(pa.large_string())
    else:
        array = pa.array(values.array if hasattr(values, "array") else values, type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


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
    import pyarrow.compute as pc

    if not len(vocab):
        return pd.Series(np.full(len(ids), OOV_ROW, np.int64), index=ids.index, dtype="int64")
    found = pc.index_in(text_array(ids.astype(str)), value_set=text_array(vocab[ID])).to_numpy(zero_copy_only=False)
    known = ~np.isnan(found)
    rows = np.full(len(ids), OOV_ROW, np.int64)
    rows[known] = vocab[ROW].to_numpy(np.int64)[found[known].astype(np.int64)]
    return pd.Series(rows, index=ids.index, dtype="int64")


def with_rows(vocab: pd.DataFrame) -> pd.DataFrame:
    """Only the ids that have their own row."""
    return vocab[vocab[ROW] != OOV_ROW]
