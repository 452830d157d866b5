"""Each customer's recent purchases: the query tower's input besides the user id.

``features/dt=<day>/history.parquet`` is a snapshot as of the end of ``day``: for every user, up to
``length`` distinct items, most recently bought first, with the number of days each was bought
(``days``) and the last day it was (``last_day``). It is derived from the previous snapshot plus
the day's examples, so it costs O(users x length) per day and stays bounded however long the
history gets. A model for day D reads the snapshot of the latest day *before* D (what was known
when D's queries were asked); a serving process reads the newest.

The day's examples do not carry their users' histories: ``features/dt=<day>/query_history.parquet``
holds the histories of that day's users once (long form: ``hist_index``, ``item_id``, ``days``, as
of before the day) and each example has the ``hist_index`` of its user (0: none). Training turns
the table into one ``[users, length]`` matrix (:func:`matrix`) and gathers rows per batch.

Items are kept by id, not row: a history outlives vocabulary changes (an item still below the
minimum count has no row yet and is simply skipped when the history is turned into rows).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from recsys import schema
from recsys.features.chunks import Gathered, GatheredFrame
from recsys.storage import PartitionStore, layout

DAYS = "days"
LAST_DAY = "last_day"
HIST_ITEMS = "hist_items"  # example columns: the user's history before the example's day
HIST_DAYS = "hist_days"
HIST_INDEX = "hist_index"  # example column: the example user's history in the day's query table (0: none)
COLUMNS = (schema.USER_ID, schema.ITEM_ID, DAYS, LAST_DAY)


def empty() -> pd.DataFrame:
    return pd.DataFrame({schema.USER_ID: pd.Series(dtype="string"), schema.ITEM_ID: pd.Series(dtype="string"),
                         DAYS: pd.Series(dtype="int64"), LAST_DAY: pd.Series(dtype="string")})


@dataclass(frozen=True)
class Coded:
    """A snapshot as integer codes: row n is (``user_ids[user[n]]``, ``item_ids[item[n]]``, ``days[n]``,
    ``day_ids[last[n]]``). The id arrays are object arrays of text, each text once or more, in any order (a
    code need not occur in any row). About 16 bytes a row plus each distinct id once: what the features step
    holds instead of a frame of text columns (bench/scale: features of the day after a 10M-event day)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    day_ids: np.ndarray
    user: np.ndarray  # int32, one per row
    item: np.ndarray  # int32
    days: np.ndarray  # int64
    last: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Coded:
        """The codes of a snapshot frame (:func:`empty`'s columns), in its row order."""
        user, user_ids = pd.factorize(frame[schema.USER_ID].astype(str))
        item, item_ids = pd.factorize(frame[schema.ITEM_ID].astype(str))
        last, day_ids = pd.factorize(frame[LAST_DAY].astype(str))
        return cls(np.asarray(user_ids, object), np.asarray(item_ids, object), np.asarray(day_ids, object),
                   user.astype(np.int32), item.astype(np.int32), frame[DAYS].to_numpy(np.int64),
                   last.astype(np.int32))

    def gathered(self) -> GatheredFrame:
        """The snapshot's columns as :func:`update` writes them (text columns of ``string`` dtype)."""
        return GatheredFrame({
            schema.USER_ID: Gathered(pd.array(self.user_ids, dtype="string"), self.user),
            schema.ITEM_ID: Gathered(pd.array(self.item_ids, dtype="string"), self.item),
            DAYS: self.days,
            LAST_DAY: Gathered(pd.array(self.day_ids, dtype="string"), self.last),
        })

    def frame(self) -> pd.DataFrame:
        return self.gathered().frame()

    def users(self) -> int:
        """How many distinct users have a row."""
        used = np.flatnonzero(np.bincount(self.user, minlength=len(self.user_ids)))
        return len(pd.unique(self.user_ids[used]))


def update(previous: pd.DataFrame, pairs: pd.DataFrame, day: date, length: int) -> pd.DataFrame:
    """The snapshot after ``day``: ``previous`` plus the day's distinct (user_id, item_id) ``pairs``
    (:func:`update_codes` on the codes of the pairs' ids)."""
    user_code, user_ids = pd.factorize(pairs[schema.USER_ID].astype(str))
    item_code, item_ids = pd.factorize(pairs[schema.ITEM_ID].astype(str))
    return update_codes(previous, np.asarray(user_ids, object), np.asarray(item_ids, object), user_code, item_code,
                        day, length)


def update_codes(
    previous: pd.DataFrame | Coded, user_ids: np.ndarray, item_ids: np.ndarray, user_code: np.ndarray,
    item_code: np.ndarray, day: date, length: int,
) -> pd.DataFrame:
    """:func:`update` with the day's pairs given as codes: pair n is (``user_ids[user_code[n]]``,
    ``item_ids[item_code[n]]``), the ids distinct text (pairs may repeat). :func:`update_coded` as a frame."""
    if isinstance(previous, pd.DataFrame):
        previous = Coded.from_frame(previous)
    return update_coded(previous, user_ids, item_ids, user_code, item_code, day, length).frame()


def update_coded(
    previous: Coded, user_ids: np.ndarray, item_ids: np.ndarray, user_code: np.ndarray,
    item_code: np.ndarray, day: date, length: int,
) -> Coded:
    """The snapshot after ``day`` as codes (:func:`update_codes`), its rows sorted by user id, then newest day
    first, then item id; its id arrays sorted and distinct.

    Works on integer codes of the ids (one sort of int64 keys, then reductions over its runs), not on the
    strings: at 10M events a day the string group-by and sort were the features step's peak (bench/scale),
    and only the distinct ids are ever text here.
    """
    if length < 1:
        raise ValueError(f"history length must be >= 1, got {length}")
    stamp = day.isoformat()
    n_prev = len(previous)
    # sorted codes over the snapshot's and the day's distinct ids: code order is the ids' string order
    user_map, user_ids, user_day = _joint_codes(previous.user_ids, user_ids)
    item_map, item_ids, item_day = _joint_codes(previous.item_ids, item_ids)
    width = max(len(item_ids), 1)
    # snapshot rows, then the day's pairs, each array filled in place (no temporaries of all the rows: bench/scale)
    key = np.empty(n_prev + len(user_code), np.int64)  # user code * items + item code
    key[:n_prev] = user_map[previous.user]
    key[n_prev:] = user_day[user_code]
    del user_map, user_day
    key *= width
    key[:n_prev] += item_map[previous.item]
    key[n_prev:] += item_day[item_code]
    del item_map, item_day
    last_map, day_ids, today_code = _joint_codes(previous.day_ids, np.array([stamp], object))
    last = np.full(len(key), today_code[0], np.int32)
    last[:n_prev] = last_map[previous.last]
    days = np.zeros(len(key), np.int32)  # days bought: at most one a calendar day
    days[:n_prev] = previous.days
    del previous, last_map
    # one row per (user, item): pairs of the day count once each (they may repeat), older rows add their days
    order = np.argsort(key)  # sum, any and max do not depend on the order within a run
    key.sort()  # key[order], without a second array of all the rows
    starts = _run_starts(key)
    keys = key[starts]
    del key
    counted = np.add.reduceat(days[order], starts) if len(starts) else np.zeros(0, np.int32)
    del days
    if len(starts):
        counted += np.logical_or.reduceat(order >= n_prev, starts)
    newest = np.maximum.reduceat(last[order], starts) if len(starts) else np.zeros(0, np.int32)
    del order, last, starts
    # straight into int32 (codes < 2**31): no int64 quotient and remainder of every row
    user, item = np.empty(len(keys), np.int32), np.empty(len(keys), np.int32)
    np.floor_divide(keys, width, out=user, casting="unsafe")
    np.remainder(keys, width, out=item, casting="unsafe")
    del keys
    order = np.lexsort((item, len(day_ids) - 1 - newest, user))  # user, newest day first, item id
    starts = _run_starts(user[order])  # each user's first row in that order
    rank = np.arange(len(order))  # position within the user's rows, in place
    rank -= np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    del starts
    keep = order[rank < length]  # the first ``length`` of each user
    del order, rank
    return Coded(user_ids, item_ids, day_ids, user[keep], item[keep], counted[keep].astype(np.int64),
                 newest[keep].astype(np.int32))


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values of the sorted ``values`` starts."""
    if not len(values):
        return np.zeros(0, np.intp)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def _joint_codes(texts: np.ndarray, more: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted codes over the texts ``texts`` and ``more`` (each distinct or not): (the codes of ``texts``,
    every distinct text in order, the codes of ``more``)."""
    joint, ids = pd.factorize(np.concatenate([np.asarray(texts, object), np.asarray(more, object)]), sort=True)
    return joint[:len(texts)].astype(np.int64), np.asarray(ids, object), joint[len(texts):].astype(np.int64)


def load(store: PartitionStore, day: date) -> pd.DataFrame:
    """The snapshot written with the features of ``day`` (empty if that day has none)."""
    path = f"{layout.features(day)}/{layout.HISTORY_FILE}"
    return store.read_parquet(path) if store.exists(path) else empty()


def load_before(store: PartitionStore, day: date) -> pd.DataFrame:
    """What was known before ``day``: the snapshot of the latest feature partition before it."""
    earlier = [d for d in store.partitions(layout.FEATURES) if d < day]
    return load(store, earlier[-1]) if earlier else empty()


def load_coded(store: PartitionStore, day: date) -> Coded:
    """:func:`load` as codes: the file's columns read by Arrow, text dictionary-encoded (each distinct id
    becomes a Python string once, never a row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = f"{layout.features(day)}/{layout.HISTORY_FILE}"
    if not store.exists(path):
        return Coded.from_frame(empty())
    text = [schema.USER_ID, schema.ITEM_ID, LAST_DAY]
    table = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=[*text, DAYS], read_dictionary=text)
    table = table.unify_dictionaries().combine_chunks()

    def codes(name: str) -> tuple[np.ndarray, np.ndarray]:
        column = table.column(name)
        coded = column.chunk(0) if column.num_chunks else pa.array([], pa.dictionary(pa.int32(), pa.string()))
        if coded.null_count:
            raise ValueError(f"{store.uri(path)}: column {name} has missing values")
        ids = coded.dictionary if pa.types.is_string(coded.dictionary.type) else coded.dictionary.cast(pa.string())
        return np.asarray(ids.to_numpy(zero_copy_only=False), object), coded.indices.to_numpy().astype(np.int32)

    user_ids, user = codes(schema.USER_ID)
    item_ids, item = codes(schema.ITEM_ID)
    day_ids, last = codes(LAST_DAY)
    days = table.column(DAYS).to_numpy().astype(np.int64, copy=False)
    return Coded(user_ids, item_ids, day_ids, user, item, days, last)


def load_coded_before(store: PartitionStore, day: date) -> Coded:
    """:func:`load_before` as codes (:func:`load_coded`)."""
    earlier = [d for d in store.partitions(layout.FEATURES) if d < day]
    return load_coded(store, earlier[-1]) if earlier else Coded.from_frame(empty())


def load_latest(store: PartitionStore) -> pd.DataFrame:
    days = store.partitions(layout.FEATURES)
    return load(store, days[-1]) if days else empty()


def by_user(snapshot: pd.DataFrame) -> dict[str, tuple[list[str], list[int]]]:
    """user id -> (item ids most recent first, days bought) of a snapshot."""
    ordered = snapshot.sort_values([schema.USER_ID, LAST_DAY, schema.ITEM_ID], ascending=[True, False, True])
    users = ordered[schema.USER_ID].astype(str).to_numpy(object)
    if not len(users):
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    items = np.split(ordered[schema.ITEM_ID].astype(str).to_numpy(object), starts[1:])
    days = np.split(ordered[DAYS].to_numpy(np.int64), starts[1:])
    return {str(users[s]): (i.tolist(), d.tolist()) for s, i, d in zip(starts, items, days, strict=True)}


def query_table(
    snapshot: pd.DataFrame | Coded, user_ids: pd.Series, length: int | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """The histories of ``user_ids`` in ``snapshot``, compactly: (index per user, long table).

    Index 0: no history; k >= 1: the k-th user with one (in user id order). The table has one row per
    history entry (``hist_index``, ``item_id``, ``days``), most recent first within an index, at most
    ``length`` per user (None: all the snapshot has): the day's ``query_history.parquet``, which
    examples point into instead of carrying lists. (:func:`query_coded` for distinct ids, as a frame.)
    """
    code, distinct = pd.factorize(user_ids.astype(str))
    index, table = query_coded(snapshot if isinstance(snapshot, Coded) else Coded.from_frame(snapshot),
                               np.asarray(distinct, object), length)
    return index[code], table.frame()


def query_coded(snapshot: Coded, user_ids: np.ndarray, length: int | None = None) -> tuple[np.ndarray, GatheredFrame]:
    """:func:`query_table` of the distinct ids ``user_ids``: (int32 index per id, the table's columns).

    On integer codes: the snapshot's rows of these users sorted by the ids' ranks (user, newest day first,
    item), never a frame of the snapshot's text.
    """
    users = pd.Index(np.asarray(user_ids, object))
    if not users.is_unique:
        raise ValueError("query_coded takes distinct user ids")
    position = users.get_indexer(snapshot.user_ids)  # per snapshot user id: its position in user_ids, or -1
    rows = np.flatnonzero((position >= 0)[snapshot.user]) if len(snapshot.user_ids) else np.zeros(0, np.intp)
    user = _ranks(snapshot.user_ids)[snapshot.user[rows]]  # the ids' text order (equal texts: equal ranks)
    newest_first = -_ranks(snapshot.day_ids)[snapshot.last[rows]]
    order = np.lexsort((_ranks(snapshot.item_ids)[snapshot.item[rows]], newest_first, user))
    del newest_first
    rows, user = rows[order], user[order]
    del order
    if length is not None:
        starts = _run_starts(user)
        rank = np.arange(len(user)) - np.repeat(starts, np.diff(np.r_[starts, len(user)]))
        fits = rank < length
        rows, user = rows[fits], user[fits]
        del rank, fits
    starts = _run_starts(user)
    first = np.zeros(len(user), np.int32)
    first[starts] = 1
    hist = np.cumsum(first, dtype=np.int32)  # 1, 2, ...: the users with a history, in id order
    index = np.zeros(len(users), np.int32)
    index[position[snapshot.user[rows[starts]]]] = np.arange(1, len(starts) + 1, dtype=np.int32)
    table = GatheredFrame({
        HIST_INDEX: hist,
        schema.ITEM_ID: Gathered(pd.array(snapshot.item_ids, dtype="string"), snapshot.item[rows]),
        DAYS: snapshot.days[rows].astype(np.int32),
    })
    return index, table


def _ranks(texts: np.ndarray) -> np.ndarray:
    """Each text's position in the sorted distinct texts (int64)."""
    rank, _ = pd.factorize(np.asarray(texts, object), sort=True)
    return rank.astype(np.int64)


def empty_query_table() -> pd.DataFrame:
    return pd.DataFrame({HIST_INDEX: pd.Series(dtype="int32"), schema.ITEM_ID: pd.Series(dtype="string"),
                         DAYS: pd.Series(dtype="int32")})


def table_from_lists(items: list[list[str]] | pd.Series, days: list[list[int]] | pd.Series) -> pd.DataFrame:
    """Histories given as lists (one per row) in the long form of :func:`query_table`: row n -> index n."""
    frame = pd.DataFrame({schema.ITEM_ID: list(items), DAYS: list(days)})
    frame[HIST_INDEX] = np.arange(len(frame), dtype=np.int32)
    if not len(frame):
        return empty_query_table()
    long = frame.explode([schema.ITEM_ID, DAYS], ignore_index=True).dropna(subset=[schema.ITEM_ID])
    return pd.DataFrame({
        HIST_INDEX: long[HIST_INDEX].to_numpy(np.int32),
        schema.ITEM_ID: pd.array(long[schema.ITEM_ID].astype(str).to_numpy(object), dtype="string"),
        DAYS: long[DAYS].to_numpy(np.int32),
    })


def lists_from_table(index: np.ndarray, table: pd.DataFrame) -> tuple[list[list[str]], list[list[int]]]:
    """The inverse of :func:`query_table` for a few examples: (item ids, days) lists per ``index``."""
    found = by_index(table)
    none: tuple[list[str], list[int]] = ([], [])
    picked = [found.get(int(i), none) for i in index]
    return [p[0] for p in picked], [p[1] for p in picked]


def by_index(table: pd.DataFrame) -> dict[int, tuple[list[str], list[int]]]:
    if not len(table):
        return {}
    index = table[HIST_INDEX].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    items = np.split(table[schema.ITEM_ID].astype(str).to_numpy(object), starts[1:])
    days = np.split(table[DAYS].to_numpy(np.int64), starts[1:])
    return {int(index[s]): (i.tolist(), d.tolist()) for s, i, d in zip(starts, items, days, strict=True)}


def matrix(
    table: pd.DataFrame, count: int, item_index: pd.Index, item_rows: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """A long history table (:func:`query_table`) as padded arrays for indexes 0..count-1.

    Rows [count, length] int32 (0 = padding) and days [count, length] float32. An entry's item row
    is ``item_rows[item_index.get_loc(item_id)]``; items not in ``item_index`` or with row 0 (pending)
    are skipped, then each history is cut at ``length``, as :func:`to_rows` does.
    """
    rows = np.zeros((count, length), dtype=np.int32)
    counts = np.zeros((count, length), dtype=np.float32)
    if not len(table):
        return rows, counts
    found = item_index.get_indexer(table[schema.ITEM_ID].astype(str).to_numpy(object))
    row = np.where(found >= 0, np.asarray(item_rows)[np.maximum(found, 0)], 0)
    kept = row > 0
    index = table[HIST_INDEX].to_numpy(np.int64)[kept]
    row, day = row[kept], table[DAYS].to_numpy(np.float32)[kept]
    rank = pd.Series(index).groupby(index, sort=False).cumcount().to_numpy()
    fits = rank < length
    rows[index[fits], rank[fits]] = row[fits]
    counts[index[fits], rank[fits]] = day[fits]
    return rows, counts


def to_rows(
    items: list[list[str]] | pd.Series, days: list[list[int]] | pd.Series, item_rows: Mapping[str, int], length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Histories as padded arrays: rows [N, length] int64 (0 = padding) and days [N, length] float32.

    Items without a row in ``item_rows`` (unknown, or pending below the minimum count) are skipped.
    A loop over the lists: right for a few histories (serving looks up one user at a time); many go
    through :func:`matrix` (training: one vectorised pass over a long table).
    """
    rows = np.zeros((len(items), length), dtype=np.int64)
    counts = np.zeros((len(items), length), dtype=np.float32)
    for n, (ids, ds) in enumerate(zip(items, days, strict=True)):
        kept = [(item_rows[i], d) for i, d in zip(ids, ds, strict=True) if item_rows.get(i, 0) > 0][:length]
        if kept:
            rows[n, : len(kept)] = [r for r, _ in kept]
            counts[n, : len(kept)] = [d for _, d in kept]
    return rows, counts
