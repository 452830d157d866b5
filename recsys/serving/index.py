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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from recsys import schema
from recsys.features import history, vocab
from recsys.storage import PartitionStore

History = tuple[np.ndarray, np.ndarray]  # item rows (most recent first), days bought (float32)
_NO_HISTORY: History = (np.zeros(0, np.int64), np.zeros(0, np.float32))
# users scored at once by :meth:`Scorer.top_k` (evaluation): a block of 256 users against 200k items is a
# 0.2 GB score matrix plus 0.4 GB of argpartition indexes, however many users are evaluated
SCORE_BLOCK_USERS = 256


def candidate_table(tables: dict[str, np.ndarray]) -> np.ndarray:
    """[I, d] candidate vectors of every item row: id + mean of title words + price band."""
    item = tables["item"].astype(np.float32)
    if "word" not in tables:
        return item
    words = tables["item_words"]
    mask = (words > 0)[..., None]
    title = (tables["word"][words] * mask).sum(1) / np.maximum(mask.sum(1), 1)
    return (item + title + tables["price"][tables["item_price"]]).astype(np.float32)


class Scorer:
    """Exact top-k retrieval over a version's item rows (row 0 = OOV, never returned).

    ``user_table`` [U, d] is indexed by vocabulary row; ``user_rows`` maps user id -> row (ids
    missing or beyond the table use row 0); ``item_table`` [I, d] holds candidate vectors and
    ``item_ids[r]`` the id of item row r; ``histories`` maps user id -> (item rows, days), most recent
    first: the first ``query_length`` (None: all) are averaged over ``history_table`` [I, d] (the item
    id embeddings; default ``item_table``) into the query, and all of them get the repeat term.
    """

    def __init__(self, user_table: np.ndarray, item_table: np.ndarray, user_rows: dict[str, int],
                 item_ids: np.ndarray, item_bias: np.ndarray | None = None, repeat_weight: float = 0.0,
                 history_weight: float = 0.0, histories: dict[str, History] | None = None,
                 history_table: np.ndarray | None = None, query_length: int | None = None) -> None:
        self.user_table = user_table
        self.item_table = item_table
        self.user_rows = user_rows
        self.item_ids = item_ids
        self.item_bias = item_bias if item_bias is not None else np.zeros(len(item_table), np.float32)
        self.repeat_weight = float(repeat_weight)
        self.history_weight = float(history_weight)
        self.histories = histories or {}
        self.history_table = history_table if history_table is not None else item_table
        self.query_length = query_length

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
        rows = [self.user_rows.get(u, vocab.OOV_ROW) for u in user_ids]
        rows = [r if r < len(self.user_table) else vocab.OOV_ROW for r in rows]
        queries = self.user_table[rows].astype(np.float32, copy=True)
        if self.history_weight:
            for n, user in enumerate(user_ids):
                recent = self.history(user)[0][: self.query_length]
                if len(recent):
                    queries[n] += self.history_weight * self.history_table[recent].mean(0)
        return queries

    def repeat_bonus(self, user_id: str) -> History:
        """(item rows, bonus) of the repeat term for ``user_id``'s own past items (the whole history)."""
        recent, days = self.history(user_id)
        return recent, (self.repeat_weight * np.log1p(days)).astype(np.float32)

    def scores(self, user_ids: list[str]) -> np.ndarray:
        """[B, I] scores of every item row (the OOV row included; callers exclude it)."""
        scores = self.user_vectors(user_ids) @ self.item_table.T + self.item_bias[None, :]
        if self.repeat_weight:
            for n, user in enumerate(user_ids):
                recent, bonus = self.repeat_bonus(user)
                np.add.at(scores[n], recent, bonus)
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
            yield [[self.item_ids[r] for r, s in zip(row, srow, strict=True) if np.isfinite(s)]
                   for row, srow in zip(best, best_scores, strict=True)]


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


def histories_by_row(snapshot: pd.DataFrame, item_rows: dict[str, int], rows: int, length: int) -> dict[str, History]:
    """user id -> (item rows, days) of a history snapshot, for items with a row below ``rows``.

    Each user's items most recent first (ties by item id), those without such a row skipped, then cut
    at ``length``; users left with none are absent. One sort over integer codes of the whole snapshot
    (no Python object per entry): memory is a few arrays of the snapshot's length.
    """
    known = {i: r for i, r in item_rows.items() if 0 < r < rows}
    if not len(snapshot) or not known:
        return {}
    rows_of = pd.Series(known, dtype=np.int64)
    found = rows_of.index.get_indexer(snapshot[schema.ITEM_ID].astype(str).to_numpy(object))
    kept = found >= 0
    # codes sorted as the ids are: user ascending, last day descending, item id ascending
    user_code, user_ids = pd.factorize(snapshot[schema.USER_ID].astype(str).to_numpy(object)[kept], sort=True)
    day_code, _ = pd.factorize(snapshot[history.LAST_DAY].astype(str).to_numpy(object)[kept], sort=True)
    item_code, _ = pd.factorize(snapshot[schema.ITEM_ID].astype(str).to_numpy(object)[kept], sort=True)
    order = np.lexsort((item_code, -day_code, user_code))
    owner = user_code[order]
    rank = np.arange(len(order)) - np.searchsorted(owner, owner)  # position within the user's items
    order, owner = order[rank < length], owner[rank < length]
    item_row = rows_of.to_numpy()[found[kept]][order]
    days = snapshot[history.DAYS].to_numpy(np.int64)[kept][order].astype(np.float32)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.zeros(0, np.int64)
    users = np.asarray(user_ids, dtype=object)[owner[starts]]
    return dict(zip(users.tolist(), zip(np.split(item_row, starts[1:]), np.split(days, starts[1:]), strict=True),
                    strict=True)) if len(starts) else {}


def load_scorer(store: PartitionStore, version: int, before: date | None = None,
                snapshot: pd.DataFrame | None = None) -> Scorer:
    """A :class:`Scorer` for a stored version, with the vocabularies as they were when it was trained.

    Histories and the trend counts are what was known before ``before`` (evaluation of that day),
    else the newest (serving); ``snapshot`` is that history snapshot when the caller has read it already.
    The repeat weight is the learned one times the version's ``repeat_scale`` (``RECSYS_REPEAT_SCALE``
    when it was trained; 1 for older versions). The trend term is the same for every customer, so it is
    folded into the item bias: ``item_bias`` = learned bias + trend_weight * ln(1 + recent purchases).
    """
    from recsys import registry
    from recsys.features import trend
    from recsys.model.tables import load_tables

    tables = load_tables(store, version)
    users = vocab.with_rows(vocab.load(store, vocab.USERS))
    items = vocab.with_rows(vocab.load(store, vocab.ITEMS))
    item_table = candidate_table(tables)
    item_ids = np.full(len(item_table), "", dtype=object)
    known = items[items[vocab.ROW] < len(item_table)]
    item_ids[known[vocab.ROW].to_numpy()] = known[vocab.ID].astype(str).to_numpy()
    user_rows = dict(zip(users[vocab.ID].astype(str), users[vocab.ROW].astype(int), strict=True))
    histories: dict[str, History] = {}
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
            snapshot = history.load_before(store, before) if before is not None else history.load_latest(store)
        query_length = int(meta.get("history_length", 50))
        # versions stored before repeat_length existed had the repeat term over the query's items only
        length = max(query_length, int(meta.get("repeat_length", query_length)))
        item_rows = dict(zip(known[vocab.ID].astype(str), known[vocab.ROW].astype(int), strict=True))
        histories = histories_by_row(snapshot, item_rows, len(item_table), length)
    return Scorer(
        tables["user"].astype(np.float32), item_table, user_rows, item_ids,
        item_bias=bias, repeat_weight=repeat_weight,
        history_weight=1.0 if aware else 0.0, histories=histories, history_table=tables["item"].astype(np.float32),
        query_length=query_length if aware else None,
    )


def item_titles(index: pd.DataFrame) -> dict[str, str]:
    return dict(zip(index["item_id"].astype(str), index["title"].astype(str), strict=True))
