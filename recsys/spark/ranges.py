""":func:`recsys.features.build.write_features` for the Spark engine, one contiguous range of the day's sorted
user ids at a time: the driver never holds the day's pairs.

What ``write_features`` computes per distinct id (vocabulary growth from the day's per-id pair counts, embedding
rows, the holdout split) is computed here the same way, from the ids and counts Spark aggregated. What it
computes per pair (the query table, the merge into the history snapshot, the files' rows) is done here for
:data:`RANGE_USERS` users at a time: their pairs are fetched from Spark (two int32 codes a pair, the cached coded
pairs filtered by user code), their rows of the previous snapshot are sliced out of it, and
:func:`recsys.features.history.query_coded` and :func:`~recsys.features.history.update_coded` run on the range.
Every output is sorted by user id first (examples by user then item code, the query table and the snapshot by
user id, then newest day, then item), so the ranges' rows, one after the other, are the whole day's rows; the
query table's ``hist_index`` continues from range to range. Each file is written by one parquet writer fed
range by range and cut into row groups where :func:`recsys.features.chunks.write_parquet` cuts the whole frame,
so the files are byte for byte ``write_features``' (tests/integration/test_spark_parity.py, and
tests/unit/test_spark_ranges.py against ``write_features`` with ranges of a few users and small row groups).

Driver memory: each distinct id once as Arrow text (a few bytes, no Python object) with its count and row; the
vocabularies (grown on Arrow arrays, :func:`recsys.features.vocab.grow_counts`); the previous snapshot as codes
(as ``write_features``); one range's ids as str, its pairs, holdout split, query table and snapshot; one row group
of a file being built (the groups written wait in a temporary file, which the store copies in pieces).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys import schema
from recsys.arrays import distinct
from recsys.config import Settings
from recsys.features import chunks, history, vocab
from recsys.features.build import _SPLIT_NAMES, _TEXT, FeatureStats, is_holdout, save_vocabularies
from recsys.features.chunks import Gathered, GatheredFrame
from recsys.features.cleaning import CleaningStats
from recsys.storage import PartitionStore, layout
from recsys.storage.layout import EXAMPLES_FILE, STATS_FILE

log = logging.getLogger(__name__)

RANGE_USERS = 100_000  # the day's users per range: at 30M events (13.6 pairs a user) about 1.4M pairs


@dataclass(frozen=True)
class DayIds:
    """A day's distinct ids of each side, sorted as Python sorts str (Arrow text arrays, or NumPy arrays of str),
    with each id's number of the day's distinct pairs (int64): what :func:`write_by_range` needs of the whole day."""

    user_ids: Any
    user_counts: np.ndarray
    item_ids: Any
    item_counts: np.ndarray
    pairs: int  # the day's distinct (user, item) pairs


# (first user code, end user code) -> that range's pairs as (user code, item code) int32 arrays, sorted by user
# code, then item code (codes: positions in DayIds' sorted ids)
FetchPairs = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def write_by_range(store: PartitionStore, settings: Settings, day: date, ids: DayIds, fetch: FetchPairs,
                   cleaning: CleaningStats, fingerprint: str, *, before_save: Callable[[], None] | None = None,
                   engine: str = " (spark)") -> FeatureStats:
    """``write_features(store, settings, day, pairs, cleaning, fingerprint)`` with the day's pairs given by
    ``fetch`` a range of users at a time (the same files, vocabularies and stats); ``before_save`` is called
    once every range was fetched, before the first write to the store (the Spark engine checks there that the
    delivery did not change while Spark read it); RuntimeError, before any write, if the ranges' pairs are not
    ``ids.pairs``."""
    # the day's ids as Arrow text (a few bytes an id); a range's ids become Python str while it is worked on
    user_ids, item_ids = vocab.text_array(ids.user_ids), vocab.text_array(ids.item_ids)
    users_before = vocab.load(store, vocab.USERS)
    items_before = vocab.load(store, vocab.ITEMS)
    user_text, item_text = pd.array(user_ids, dtype=_TEXT), pd.array(item_ids, dtype=_TEXT)  # no copies
    users, _ = vocab.grow_counts(users_before, pd.Series(ids.user_counts, index=pd.Index(user_text)), day,
                                 settings.min_user_count)
    items, _ = vocab.grow_counts(items_before, pd.Series(ids.item_counts, index=pd.Index(item_text)), day,
                                 settings.min_item_count)
    user_rows = vocab.rows_for(users, pd.Series(user_text)).to_numpy(np.int64)
    item_rows = vocab.rows_for(items, pd.Series(item_text)).to_numpy(np.int64)
    del user_text, item_text
    before = history.load_coded_before(store, day)
    out = layout.features(day)
    files = {name: _GroupWriter(f"{out}/{name}") for name in (EXAMPLES_FILE, layout.QUERY_FILE, layout.HISTORY_FILE)}
    holdout_examples = holdout_users = history_users = history_rows = examples = histories = 0
    for start, stop, rows in _ranges(user_ids, before):
        user_code, item_code = fetch(start, stop)
        examples += len(user_code)
        user_code = user_code - start  # the range's own codes
        items_used = distinct(item_code)
        item_code = np.searchsorted(items_used, item_code).astype(np.int32)
        previous = _slice(before, rows)
        range_users = _objects(user_ids.slice(start, stop - start))
        range_items = _objects(item_ids.take(pa.array(items_used)))
        user_index, queries = history.query_coded(previous, range_users, settings.history_length)
        with_history = user_index > 0
        user_index[with_history] += histories  # hist_index continues from the ranges before
        cast(np.ndarray, queries.columns[history.HIST_INDEX])[:] += histories  # an array: 1, 2, ... a user
        histories += int(with_history.sum())
        after = history.update_coded(previous, range_users, range_items, user_code, item_code, day,
                                     max(settings.history_length, settings.repeat_length))
        del previous
        held = is_holdout(pd.Series(range_users), day, settings.holdout_fraction).to_numpy(bool)
        holdout_users += int(held.sum())
        holdout_examples += int(np.bincount(user_code, minlength=stop - start)[held].sum())
        history_users += after.users()
        history_rows += len(after)
        files[EXAMPLES_FILE].add(GatheredFrame({
            schema.USER_ID: Gathered(pd.array(range_users, dtype=_TEXT), user_code),
            schema.ITEM_ID: Gathered(pd.array(range_items, dtype=_TEXT), item_code),
            schema.USER_ROW: Gathered(user_rows[start:stop], user_code),
            schema.ITEM_ROW: Gathered(item_rows[items_used], item_code),
            schema.SPLIT: Gathered(_SPLIT_NAMES.take(held.astype(np.intp)), user_code),
            history.HIST_INDEX: Gathered(user_index, user_code),
        }))
        files[layout.QUERY_FILE].add(queries)
        files[layout.HISTORY_FILE].add(after.gathered())
        del user_code, item_code, queries, after, range_users, range_items
    del before
    if before_save is not None:
        before_save()
    if examples != ids.pairs:
        raise RuntimeError(f"features {day}: the user ranges gave {examples} pairs, the day has {ids.pairs}")

    growth = save_vocabularies(store, day, users, users_before, items, items_before)
    stats = FeatureStats(
        date=day.isoformat(),
        cleaning=cleaning.as_dict(),
        examples=examples,
        train_examples=examples - holdout_examples,
        holdout_examples=holdout_examples,
        users=len(user_ids),
        holdout_users=holdout_users,
        items=len(item_ids),
        **growth,
        min_user_count=settings.min_user_count,
        min_item_count=settings.min_item_count,
        history_users=history_users,
        history_rows=history_rows,
        fingerprint=fingerprint,
    )
    for writer in files.values():
        writer.close(store)
    store.write_json(f"{out}/{STATS_FILE}", stats.as_dict())
    store.mark_success(out)
    log.info("features %s%s: %s", day, engine, stats.as_dict())
    return stats


def _ranges(user_ids: Any, before: history.Coded) -> list[tuple[int, int, np.ndarray | slice]]:
    """(first, end) positions in the sorted ``user_ids`` (Arrow text) of each range, and the rows of the snapshot
    ``before`` whose user id falls in it: the ids from the range's first up to the next range's first (the first
    range from the lowest, the last to the highest), so every snapshot row is in one range."""
    n = max(1, -(-len(user_ids) // RANGE_USERS))
    # the first id of each range after the first
    bounds = _objects(user_ids.take(pa.array(np.arange(RANGE_USERS, len(user_ids), RANGE_USERS, dtype=np.int64))))
    of_id = np.searchsorted(bounds, before.user_ids, side="right") if len(bounds) else (
        np.zeros(len(before.user_ids), np.intp))
    row_range = of_id[before.user]
    del of_id
    if np.all(row_range[1:] >= row_range[:-1]):  # a snapshot as update_coded writes it: sorted by user id
        ends = np.searchsorted(row_range, np.arange(n), side="right")
        cuts = np.r_[0, ends]
        rows: list[np.ndarray | slice] = [slice(int(cuts[r]), int(cuts[r + 1])) for r in range(n)]
    else:
        order = np.argsort(row_range, kind="stable")
        cuts = np.r_[0, np.searchsorted(row_range[order], np.arange(n), side="right")]
        rows = [order[cuts[r]:cuts[r + 1]] for r in range(n)]
    return [(r * RANGE_USERS, min((r + 1) * RANGE_USERS, len(user_ids)), rows[r]) for r in range(n)]


def _objects(texts: Any) -> np.ndarray:
    """Arrow text as a NumPy array of str (what the history functions take)."""
    return np.asarray(texts.to_numpy(zero_copy_only=False), dtype=object)


def _slice(before: history.Coded, rows: np.ndarray | slice) -> history.Coded:
    """The snapshot's ``rows``, with only the ids they use (each range's work grows with the range)."""
    user_ids, user = _used(before.user_ids, before.user[rows])
    item_ids, item = _used(before.item_ids, before.item[rows])
    day_ids, last = _used(before.day_ids, before.last[rows])
    return history.Coded(user_ids, item_ids, day_ids, user, item, before.days[rows], last)


def _used(ids: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, inverse = np.unique(codes, return_inverse=True)
    return ids[used], inverse.astype(np.int32).reshape(-1)


class _GroupWriter:
    """One parquet file fed in pieces (:class:`GatheredFrame`), with the bytes
    :func:`recsys.features.chunks.write_parquet` writes of all the pieces' rows as one frame: row groups of
    ``chunks.ROW_GROUP_ROWS`` rows counted over the whole file, and a file of one row group written by pandas.
    The row groups written wait in a temporary file (the three files of a day are written side by side), the
    store gets the file's bytes at :meth:`close`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.group_rows = chunks.ROW_GROUP_ROWS
        self.pending: list[pd.DataFrame] = []  # rows not yet written, fewer than a group or exactly one
        self.pending_rows = 0
        self.empty: pd.DataFrame | None = None  # the columns and dtypes of a file without rows
        self.buf: Any = None
        self.writer: Any = None

    def add(self, frame: GatheredFrame) -> None:
        if self.empty is None:
            self.empty = frame.frame(0, 0)
        start = 0
        while start < len(frame):
            if self.pending_rows == self.group_rows:
                self._flush()
            stop = min(start + self.group_rows - self.pending_rows, len(frame))
            self.pending.append(frame.frame(start, stop))
            self.pending_rows += stop - start
            start = stop

    def _rows(self) -> pd.DataFrame:
        if len(self.pending) <= 1:
            return self.pending[0] if self.pending else self.empty  # type: ignore[return-value]
        frame = pd.concat(self.pending, ignore_index=True)
        for name in frame.columns:  # one Arrow chunk a column, as a piece's gathered column (concat keeps each)
            if isinstance(frame[name].dtype, pd.api.extensions.ExtensionDtype):
                frame[name] = frame[name].array.take(np.arange(len(frame)))
        return frame

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self._rows(), preserve_index=False,
                                     schema=self.writer.schema if self.writer is not None else None)
        if self.writer is None:
            self.buf = tempfile.TemporaryFile()
            self.writer = pq.ParquetWriter(self.buf, table.schema, compression="snappy")
        self.writer.write_table(table, row_group_size=self.group_rows)
        self.pending, self.pending_rows = [], 0

    def close(self, store: PartitionStore) -> None:
        if self.writer is None:  # at most one row group: what store.write_parquet writes of the frame
            store.write_parquet(self.path, self._rows())
            return
        if self.pending_rows:
            self._flush()
        self.writer.close()
        self.buf.seek(0)
        try:
            store.write_bytes(self.path, self.buf)  # streamed from the temporary file, never whole in memory
        finally:
            self.buf.close()
