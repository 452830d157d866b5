"""Score users against items with a stored version (exact search), as the model does (two_tower.py).

score(u, i) = query(u) . candidate(i) + bias(i) + repeat_weight * ln(1 + days u bought i), where
query(u) = user(u) + mean of item(j) (id embeddings) over u's ``history_length`` most recent items j,
and candidate(i) = item(i) + mean of i's title words + price band. The repeat term covers the
customer's ``repeat_length`` most recent distinct items (default 200, against 50 for the query: on
Online Retail a returning customer has a median of about 70 past items, and the items beyond the
50th hold a quarter of what they buy again; see bench/replay_quality). Candidate vectors are computed
once per version; a query costs a mean over at most ``history_length`` precomputed rows, one [d] x
[d, I] product, a sparse add over at most ``repeat_length`` own items and a partial sort:
O(I * d + H * d + R).

A version stored with id tables only (``user`` and ``item``) scores by the plain dot product.

With live inputs (``sessions``: a customer's session items, viewed or carted today and not bought since) the
version's session term is added (:mod:`recsys.model.session`): ``session_weight`` on each session item and
``session_query_weight`` x the mean of their id embeddings in the query. A history snapshot has no sessions,
so daily scores are unchanged.

Per-customer state is flat arrays (:mod:`recsys.serving.ids`): the user vocabulary is a sorted id array
with the rows, the histories one CSR table (offsets, item rows, days) keyed by sorted ids, read from the
vocabulary and snapshot files with pyarrow; no Python object per customer is built (a 30M-event day has
3.75M customers).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.dtypes import StringDType

from recsys import schema
from recsys.features import history, vocab
from recsys.model import session
from recsys.serving.ids import IdIndex, IdLists, sorted_codes, strings, utf8
from recsys.storage import PartitionStore, layout

History = tuple[np.ndarray, np.ndarray]  # item rows (most recent first), days bought (float32)
_NO_HISTORY: History = (np.zeros(0, np.int32), np.zeros(0, np.float32))
_NO_ROWS = np.zeros(0, np.int64)
HISTORY_DTYPES = (np.int32, np.float32)  # the columns of a histories table: item rows, days bought
_CANDIDATE_BLOCK = 1 << 14  # items whose candidate vectors are computed at once
_TABLE_CHUNK_ROWS = 1 << 16  # rows of the user table read at once (16 MB at 64-d float32)
# users scored at once by :meth:`Scorer.top_k` (evaluation): a block of 256 users against 200k items is a
# 0.2 GB score matrix plus 0.4 GB of argpartition indexes, however many users are evaluated
SCORE_BLOCK_USERS = 256


def candidate_table(tables: dict[str, np.ndarray]) -> np.ndarray:
    """[I, d] candidate vectors of every item row: id + mean of title words + price band."""
    if "word" not in tables:
        return tables["item"].astype(np.float32)
    out = np.empty(tables["item"].shape, np.float32)
    # a block of items at a time: the word vectors of every title word ([items, words, d]) would be 1.2 GB
    # transient for 600k items; each row's sum is the same whatever the block
    for start in range(0, len(out), _CANDIDATE_BLOCK):
        out[start: start + _CANDIDATE_BLOCK] = session.candidate_vectors(
            tables, np.arange(start, min(start + _CANDIDATE_BLOCK, len(out))))
    return out


class Scorer:
    """Exact top-k retrieval over a version's item rows (row 0 = OOV, never returned).

    ``user_table`` [U, d] is indexed by vocabulary row; ``user_rows`` maps user id -> row (ids
    missing or beyond the table use row 0); ``item_table`` [I, d] holds candidate vectors and
    ``item_ids[r]`` the id of item row r; ``histories`` maps user id -> (item rows, days), most recent
    first: the first ``query_length`` (None: all) are averaged over ``history_table`` [I, d] (the item
    id embeddings; default ``item_table``) into the query, and all of them get the repeat term.

    ``user_rows`` and ``histories`` may be given as dicts; they are held as an
    :class:`~recsys.serving.ids.IdIndex` and an :class:`~recsys.serving.ids.IdLists` (flat arrays).
    """

    def __init__(self, user_table: np.ndarray, item_table: np.ndarray, user_rows: Mapping[str, int],
                 item_ids: np.ndarray, item_bias: np.ndarray | None = None, repeat_weight: float = 0.0,
                 history_weight: float = 0.0, histories: Mapping[str, History] | None = None,
                 history_table: np.ndarray | None = None, query_length: int | None = None,
                 session_weight: float = 0.0, session_query_weight: float = 0.0,
                 sessions: Mapping[str, np.ndarray] | None = None) -> None:
        self.user_table = user_table
        self.item_table = item_table
        self.user_rows = user_rows  # type: ignore[assignment]
        self.item_ids = item_ids
        self.item_bias = item_bias if item_bias is not None else np.zeros(len(item_table), np.float32)
        self.repeat_weight = float(repeat_weight)
        self.history_weight = float(history_weight)
        self.histories = histories or {}  # type: ignore[assignment]
        self.history_table = history_table if history_table is not None else item_table
        self.query_length = query_length
        self.session_weight = float(session_weight)
        self.session_query_weight = float(session_query_weight)
        # user id -> item rows of the customer's session items, most recent first (live inputs; none in a snapshot)
        self.sessions: Mapping[str, np.ndarray] = sessions or {}

    @property
    def user_rows(self) -> IdIndex:
        return self._user_rows

    @user_rows.setter
    def user_rows(self, rows: Mapping[str, int]) -> None:
        self._user_rows = IdIndex.of(rows)

    @property
    def histories(self) -> IdLists:
        return self._histories

    @histories.setter
    def histories(self, histories: Mapping[str, History]) -> None:
        self._histories = IdLists.of(histories, *HISTORY_DTYPES)

    def history(self, user_id: str) -> History:
        return self.histories.get(user_id, _NO_HISTORY)

    def knows(self, user_id: str) -> bool:
        """True if the version can embed ``user_id``: it has a row, or (history-aware models) a history."""
        row = self.user_rows.get(user_id)
        if row is not None and row < len(self.user_table):
            return True
        return self.history_weight > 0 and len(self.history(user_id)[0]) > 0

    def user_vectors(self, user_ids: list[str]) -> np.ndarray:
        """[B, d] query vectors: the user row (OOV for unknown ids) plus the mean of recent items."""
        rows = self.user_rows.lookup(user_ids, vocab.OOV_ROW)
        rows[rows >= len(self.user_table)] = vocab.OOV_ROW
        queries = self.user_table[rows].astype(np.float32, copy=True)
        if self.history_weight:
            found = self.histories.find(user_ids)
            for n in np.flatnonzero(found >= 0):
                recent = self.histories.run(found[n])[0][: self.query_length]
                if len(recent):
                    queries[n] += self.history_weight * self.history_table[recent].mean(0)
        if self.session_query_weight and self.sessions:
            for row, user_id in enumerate(user_ids):
                queries[row] += self.session_query(self.sessions.get(user_id, _NO_ROWS))
        return queries

    def session_query(self, rows: np.ndarray) -> np.ndarray:
        """[d] what session item ``rows`` (most recent first) add to a query: the session query weight times the
        mean of the first ``query_length`` rows' id embeddings (0 for none)."""
        rows = np.asarray(rows, np.int64)[: self.query_length]
        if not len(rows) or not self.session_query_weight:
            return np.zeros(self.history_table.shape[1], np.float32)
        return (self.session_query_weight * self.history_table[rows].mean(0)).astype(np.float32)

    def repeat_bonus(self, user_id: str) -> History:
        """(item rows, bonus) of the repeat term for ``user_id``'s own past items (the whole history)."""
        recent, days = self.history(user_id)
        return recent, (self.repeat_weight * np.log1p(days)).astype(np.float32)

    def scores(self, user_ids: list[str]) -> np.ndarray:
        """[B, I] scores of every item row (the OOV row included; callers exclude it)."""
        scores = self.user_vectors(user_ids) @ self.item_table.T + self.item_bias[None, :]
        if self.repeat_weight:
            found = self.histories.find(user_ids)
            for n in np.flatnonzero(found >= 0):
                recent, days = self.histories.run(found[n])
                np.add.at(scores[n], recent, (self.repeat_weight * np.log1p(days)).astype(np.float32))
        if self.session_weight and self.sessions:
            for row, user_id in enumerate(user_ids):
                rows = np.unique(np.asarray(self.sessions.get(user_id, _NO_ROWS), np.int64))
                scores[row, rows] += np.float32(self.session_weight)
        return scores

    def top_k(self, user_ids: list[str], k: int, allowed: np.ndarray | None = None,
              block: int = SCORE_BLOCK_USERS) -> list[list[str]]:
        """Top-``k`` item ids per user, best first; ``allowed`` is a boolean mask over item rows.

        Users are scored ``block`` at a time (:meth:`top_k_blocks`): memory is ``block`` x items.
        """
        return [ranked for part in self.top_k_blocks(user_ids, k, allowed, block) for ranked in part]

    def top_k_blocks(self, user_ids: list[str], k: int, allowed: np.ndarray | None = None,
                     block: int = SCORE_BLOCK_USERS) -> Iterator[list[list[str]]]:
        """:meth:`top_k` of ``user_ids`` in order, one list per block of at most ``block`` users.

        Each block is one [block, I] score matrix, so peak memory does not depend on ``len(user_ids)``;
        a user's ranking is computed from that user's row alone, whatever the block.
        """
        if block < 1:
            raise ValueError(f"block must be >= 1 user, got {block}")
        for start in range(0, len(user_ids), block):
            scores = self.scores(user_ids[start: start + block])
            scores[:, vocab.OOV_ROW] = -np.inf  # never recommend the OOV row
            if allowed is not None:
                scores[:, ~allowed] = -np.inf
            best, best_scores = top_k_rows(scores, k)
            del scores
            names, finite = self.item_ids[best].tolist(), np.isfinite(best_scores).tolist()
            yield [[name for name, ok in zip(row, oks, strict=True) if ok]
                   for row, oks in zip(names, finite, strict=True)]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` largest scores per row of ``scores`` [B, N], best first.

    Cost O(N) per row (a partial partition) plus O(k log k) to order the winners; ``k`` is capped at N.
    Entries set to ``-inf`` (excluded items) sort last; callers drop them.
    """
    k = min(k, scores.shape[1])
    if k <= 0:
        empty = np.empty((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(scores.dtype)
    n = scores.shape[1]
    if k < n:
        top = np.argpartition(scores, n - k, axis=1)[:, n - k:]  # no negated copy: the k largest are last
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def histories_by_row(snapshot: pd.DataFrame | pa.Table, item_rows: Mapping[str, int], rows: int,
                     length: int) -> IdLists:
    """user id -> (item rows int32, days float32) of a history snapshot, for items with a row below ``rows``.

    Each user's items most recent first (ties by item id), those without such a row skipped, then cut
    at ``length``; users left with none are absent. One sort over integer codes of the whole snapshot:
    the ids are dictionary-encoded by pyarrow, never turned into Python objects, and the result is one
    CSR table (:class:`~recsys.serving.ids.IdLists`): memory is a few arrays of the snapshot's length.
    """
    table = snapshot_arrow(snapshot)
    items = IdIndex.of(item_rows)
    if not len(table) or not len(items):
        return IdLists.empty(*HISTORY_DTYPES)
    item_code, item_ids = sorted_codes(table[schema.ITEM_ID])
    row_of = items.lookup(item_ids, vocab.OOV_ROW)
    row_of[(row_of <= vocab.OOV_ROW) | (row_of >= rows)] = vocab.OOV_ROW
    item_row = row_of.astype(np.int32)[item_code]
    kept = np.flatnonzero(item_row > 0)
    if not len(kept):
        return IdLists.empty(*HISTORY_DTYPES)
    item_code, item_row = item_code[kept], item_row[kept]
    user_code, user_ids = sorted_codes(table[schema.USER_ID])
    user_code = user_code[kept]
    day_code = sorted_codes(table[history.LAST_DAY])[0][kept]
    # user ascending, last day descending, item id ascending (codes sort as the ids do)
    order = np.lexsort((item_code, -day_code, user_code))
    del item_code, day_code
    owner = user_code[order]
    del user_code
    rank = np.arange(len(order)) - np.searchsorted(owner, owner)  # position within the user's items
    fits = rank < length
    del rank
    order, owner = order[fits], owner[fits]
    days = table[history.DAYS].to_numpy()[kept][order].astype(np.float32)
    item_row = item_row[order]
    del order, kept
    present, starts = np.unique(owner, return_index=True)
    offsets = np.append(starts, len(owner)).astype(np.int64)
    return IdLists(utf8(user_ids.take(pa.array(present))), offsets, item_row, days)


SNAPSHOT_COLUMNS = (schema.USER_ID, schema.ITEM_ID, history.DAYS, history.LAST_DAY)


def snapshot_arrow(snapshot: pd.DataFrame | pa.Table) -> pa.Table:
    """A history snapshot (as :mod:`recsys.features.history` writes it) as a pyarrow table of its columns."""
    if isinstance(snapshot, pa.Table):
        return snapshot
    return pa.Table.from_pandas(snapshot[list(SNAPSHOT_COLUMNS)], preserve_index=False)


def read_snapshot(store: PartitionStore, day: date | None) -> pa.Table:
    """The history snapshot written with the features of ``day`` (empty for None or a day without one), read
    with pyarrow with its id columns dictionary-encoded: no Python object per row or customer."""
    path = f"{layout.features(day)}/{layout.HISTORY_FILE}" if day is not None else None
    if path is None or not store.exists(path):
        return pa.Table.from_pandas(history.empty()[list(SNAPSHOT_COLUMNS)], preserve_index=False)
    table = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=list(SNAPSHOT_COLUMNS),
                          read_dictionary=[schema.USER_ID, schema.ITEM_ID, history.LAST_DAY])
    return table.unify_dictionaries().combine_chunks()


def snapshot_day(store: PartitionStore, before: date | None = None) -> date | None:
    """The day of the snapshot known before ``before`` (the newest feature partition before it), else the
    newest snapshot's day; None if there is none (as ``history.load_before`` / ``history.load_latest``)."""
    days = store.partitions(layout.FEATURES)
    if before is not None:
        days = [d for d in days if d < before]
    return days[-1] if days else None


def _vocab_rows(store: PartitionStore, name: str) -> tuple[pa.Array, np.ndarray]:
    """(ids, rows) of vocabulary ``name`` for the ids with their own row, read with pyarrow (id, row only)."""
    path = layout.vocab_table(name)
    if not store.exists(path):
        return pa.array([], pa.string()), np.zeros(0, np.int64)
    table = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=[vocab.ID, vocab.ROW]).combine_chunks()
    rows = table[vocab.ROW].to_numpy().astype(np.int64, copy=False)
    keep = rows != vocab.OOV_ROW
    ids = table[vocab.ID].filter(pa.array(keep))
    return (ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids), rows[keep]


def _load_tables(store: PartitionStore, version: int) -> dict[str, np.ndarray]:
    """The version's tables; the user table (the largest: customers x d) read by rows into one array, so the
    file's bytes and the array are never in memory together."""
    from recsys.model.tables import StoredArray, TablesError, load_tables, open_tables

    try:
        opened = open_tables(store, version, by_rows=["user"])
    except (TablesError, zipfile.BadZipFile):  # compressed, or not a tables file: load_tables reads or says why
        return load_tables(store, version)
    tables: dict[str, np.ndarray] = {}
    for name, table in opened.items():
        if isinstance(table, StoredArray):
            whole = np.empty(table.shape, table.dtype)
            for start in range(0, len(table), _TABLE_CHUNK_ROWS):
                whole[start: start + _TABLE_CHUNK_ROWS] = table[start: start + _TABLE_CHUNK_ROWS]
            tables[name] = whole
        else:
            tables[name] = table
    return tables


def load_scorer(store: PartitionStore, version: int, before: date | None = None,
                snapshot: pd.DataFrame | pa.Table | None = None) -> Scorer:
    """A :class:`Scorer` for a stored version, with the vocabularies as they were when it was trained.

    Histories and the trend counts are what was known before ``before`` (evaluation of that day),
    else the newest (serving); ``snapshot`` is that history snapshot when the caller has read it already.
    The repeat weight is the learned one times the version's ``repeat_scale`` (``RECSYS_REPEAT_SCALE``
    when it was trained; 1 for older versions). The trend term is the same for every customer, so it is
    folded into the item bias: ``item_bias`` = learned bias + trend_weight * ln(1 + recent purchases).
    """
    from recsys import registry
    from recsys.features import trend

    tables = _load_tables(store, version)
    user_ids, user_vocab_rows = _vocab_rows(store, vocab.USERS)
    user_rows = IdIndex.build(user_ids, user_vocab_rows)
    del user_ids, user_vocab_rows
    item_vocab_ids, item_vocab_rows = _vocab_rows(store, vocab.ITEMS)
    item_table = candidate_table(tables)
    item_ids = np.full(len(item_table), "", dtype=StringDType())
    known = item_vocab_rows < len(item_table)
    known_ids = item_vocab_ids.filter(pa.array(known))
    known_rows = item_vocab_rows[known]
    item_ids[known_rows] = strings(known_ids)
    histories: IdLists | None = None
    aware = "word" in tables
    bias = tables.get("item_bias")
    meta: Mapping[str, Any] = registry.load(store)["versions"].get(str(version)) or {}
    repeat_weight = float(tables.get("repeat_weight", 0.0)) * float(meta.get("repeat_scale", 1.0))
    trend_weight = float(tables.get("trend_weight", 0.0))
    asof = before if before is not None else trend.serving_day(store)
    if bias is not None and trend_weight and asof is not None:
        bias = bias + trend_weight * trend.vector(store, asof, len(bias), int(meta.get("trend_days", 7)))
    if aware:
        if snapshot is None:
            snapshot = read_snapshot(store, snapshot_day(store, before))
        query_length = int(meta.get("history_length", 50))
        # versions stored before repeat_length existed had the repeat term over the query's items only
        length = max(query_length, int(meta.get("repeat_length", query_length)))
        histories = histories_by_row(snapshot, IdIndex.build(known_ids, known_rows), len(item_table), length)
    return Scorer(
        tables["user"].astype(np.float32, copy=False), item_table, user_rows, item_ids,
        item_bias=bias, repeat_weight=repeat_weight,
        history_weight=1.0 if aware else 0.0, histories=histories,
        history_table=tables["item"].astype(np.float32, copy=False),
        query_length=query_length if aware else None,
        session_weight=float(tables.get(session.SESSION_WEIGHT, 0.0)),
        session_query_weight=float(tables.get(session.SESSION_QUERY_WEIGHT, 0.0)),
    )


def item_titles(index: pd.DataFrame) -> dict[str, str]:
    return dict(zip(index["item_id"].astype(str), index["title"].astype(str), strict=True))
