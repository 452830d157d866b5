"""Score users against items with a stored version's embedding tables (exact dot-product search)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features import vocab
from recsys.storage import PartitionStore


class Scorer:
    """Exact top-k retrieval over a version's known items.

    ``user_table`` [U, d] and ``item_table`` [I, d] are indexed by vocabulary row (row 0 = OOV);
    ``user_rows`` maps user id -> row (ids missing or beyond the table use row 0); ``item_ids[r]`` is
    the id of item row r. Cost of a query: one [d] x [d, I] product and a partial sort, O(I * d).
    """

    def __init__(self, user_table: np.ndarray, item_table: np.ndarray, user_rows: dict[str, int],
                 item_ids: np.ndarray) -> None:
        self.user_table = user_table
        self.item_table = item_table
        self.user_rows = user_rows
        self.item_ids = item_ids

    def user_vectors(self, user_ids: list[str]) -> np.ndarray:
        rows = [self.user_rows.get(u, vocab.OOV_ROW) for u in user_ids]
        rows = [r if r < len(self.user_table) else vocab.OOV_ROW for r in rows]
        return self.user_table[rows]

    def top_k(self, user_ids: list[str], k: int, allowed: np.ndarray | None = None) -> list[list[str]]:
        """Top-``k`` item ids per user, best first; ``allowed`` is a boolean mask over item rows."""
        if not user_ids:
            return []
        scores = self.user_vectors(user_ids) @ self.item_table.T
        scores[:, vocab.OOV_ROW] = -np.inf  # never recommend the OOV row
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        best, best_scores = top_k_rows(scores, k)
        return [[self.item_ids[r] for r, s in zip(row, srow, strict=True) if np.isfinite(s)]
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


def load_scorer(store: PartitionStore, version: int) -> Scorer:
    """A :class:`Scorer` for a stored version, with the vocabularies as they were when it was trained."""
    from recsys.training import load_tables

    tables = load_tables(store, version)
    users = vocab.load(store, vocab.USERS)
    items = vocab.load(store, vocab.ITEMS)
    item_ids = np.full(len(tables["item"]), "", dtype=object)
    known = items[items[vocab.ROW] < len(tables["item"])]
    item_ids[known[vocab.ROW].to_numpy()] = known[vocab.ID].astype(str).to_numpy()
    user_rows = dict(zip(users[vocab.ID].astype(str), users[vocab.ROW].astype(int), strict=True))
    return Scorer(tables["user"], tables["item"], user_rows, item_ids)


def item_titles(index: pd.DataFrame) -> dict[str, str]:
    return dict(zip(index["item_id"].astype(str), index["title"].astype(str), strict=True))
