"""Append-only vocabularies: id -> embedding row tables that only ever grow.

Row 0 is reserved for out-of-vocabulary ids; known ids get rows 1, 2, ... in order of first
appearance (ties broken by id), so a row, once given, never changes meaning.
"""

from __future__ import annotations

from datetime import date

import pandas as pd

from recsys.storage import PartitionStore, layout

ID = "id"
ROW = "row"
FIRST_SEEN = "first_seen"
OOV_ROW = 0
USERS = "users"
ITEMS = "items"


def empty() -> pd.DataFrame:
    return pd.DataFrame({ID: pd.Series(dtype="string"), ROW: pd.Series(dtype="int64"),
                         FIRST_SEEN: pd.Series(dtype="string")})


def load(store: PartitionStore, name: str) -> pd.DataFrame:
    """The vocabulary ``name`` (``users`` or ``items``); empty if none was written yet."""
    path = layout.vocab_table(name)
    return store.read_parquet(path) if store.exists(path) else empty()


def grow(vocab: pd.DataFrame, ids: pd.Series, day: date) -> tuple[pd.DataFrame, int]:
    """Append the ``ids`` not yet in ``vocab`` (first seen on ``day``); returns (table, number added)."""
    known = set(vocab[ID])
    new_ids = sorted(set(ids.dropna().astype(str)) - known)
    if not new_ids:
        return vocab, 0
    start = int(vocab[ROW].max()) + 1 if len(vocab) else OOV_ROW + 1
    added = pd.DataFrame(
        {ID: new_ids, ROW: range(start, start + len(new_ids)), FIRST_SEEN: day.isoformat()}
    ).astype({ID: "string", ROW: "int64", FIRST_SEEN: "string"})
    return pd.concat([vocab, added], ignore_index=True), len(new_ids)


def save(store: PartitionStore, name: str, vocab: pd.DataFrame) -> None:
    store.write_parquet(layout.vocab_table(name), vocab)


def size(vocab: pd.DataFrame) -> int:
    """Number of embedding rows the vocabulary needs (known ids plus the OOV row)."""
    return (int(vocab[ROW].max()) + 1) if len(vocab) else OOV_ROW + 1


def growth_on(vocab: pd.DataFrame, day: date) -> tuple[int, int]:
    """(ids first seen on ``day``, embedding rows needed as of the end of ``day``)."""
    seen = vocab[FIRST_SEEN]
    return int((seen == day.isoformat()).sum()), int((seen <= day.isoformat()).sum()) + 1


def rows_for(vocab: pd.DataFrame, ids: pd.Series) -> pd.Series:
    """Embedding rows of ``ids``; unknown ids map to the OOV row."""
    mapping = dict(zip(vocab[ID], vocab[ROW], strict=True))
    return ids.astype(str).map(mapping).fillna(OOV_ROW).astype("int64")
