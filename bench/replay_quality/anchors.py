"""Non-neural anchors of the replay benchmark: popularity, own items, EASE^R and item-kNN.

Every function here sees only the purchase history before the ranked day (a frame with ``user_id``,
``item_id`` and ``day``, one row per purchase example) and returns, for each customer, the top-``k`` item
ids, best first. Ties are broken by item id, so a ranking never depends on the order of the input rows.

- **popular**: the items bought most often in the trailing ``days`` days.
- **own items**: the customer's own past items, by the number of distinct days they bought each (then by
  how often, then by id), the order that won among the "own items first" variants on Online Retail.
- **EASE^R** (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): the closed form
  ``P = (X^T X + lambda I)^-1``, ``B = I - P diag(1 / diag P)`` over the binary customer x item matrix
  ``X`` of all history, refit every day (:func:`recsys.ranking.ease.ease_weights`, shared with the ranking
  stage); a customer's scores are ``x_u B`` (``diag B = 0``). Items the
  customer bought are ranked like the rest (plain) or first, by :func:`own_items` (own-first).
- **item-kNN** on co-purchases: cosine similarity of the items' customer vectors, each item keeping its
  ``neighbours`` most similar items; a customer's scores are the sum of the similarities of the items
  they bought. Own items first, like the own-first EASE.

Customers with no history, and the tail of every list, are filled with the popular items.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.ranking.ease import ease_weights  # the closed form, shared with the ranking stage's EASE^R feature

USER, ITEM = "user_id", "item_id"


def popular(history: pd.DataFrame, day: date, k: int, days: int = 7) -> list[str]:
    """The ``k`` items bought most often in the ``days`` days before ``day`` (ties by id)."""
    recent = history[history["day"] >= day - timedelta(days=days)]
    counts = recent[ITEM].astype(str).value_counts()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [item for item, _ in ordered[:k]]


def own_items(history: pd.DataFrame, users: list[str]) -> dict[str, list[str]]:
    """Each customer's past items, by distinct purchase days, then purchases, then id."""
    mine = history[history[USER].astype(str).isin(set(users))]
    if mine.empty:
        return {}
    grouped = mine.assign(**{USER: mine[USER].astype(str), ITEM: mine[ITEM].astype(str)}).groupby([USER, ITEM])
    stats = pd.DataFrame({"days": grouped["day"].nunique(), "n": grouped.size()}).reset_index()
    stats = stats.sort_values([USER, "days", "n", ITEM], ascending=[True, False, False, True])
    return {str(u): list(g[ITEM]) for u, g in stats.groupby(USER, sort=False)}


def interactions(history: pd.DataFrame) -> tuple[sparse.csr_matrix, list[str], list[str]]:
    """The binary customer x item matrix of ``history`` with its customer and item ids (sorted)."""
    users = history[USER].astype(str)
    items = history[ITEM].astype(str)
    user_ids = sorted(users.unique())
    item_ids = sorted(items.unique())
    rows = pd.Index(user_ids).get_indexer(users)
    cols = pd.Index(item_ids).get_indexer(items)
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)),
                               shape=(len(user_ids), len(item_ids)))
    matrix.data[:] = 1.0  # duplicates were summed: binary
    return matrix, user_ids, item_ids


def knn_weights(matrix: sparse.csr_matrix, neighbours: int) -> np.ndarray:
    """Cosine similarity of the items' customer vectors, each row keeping its ``neighbours`` largest."""
    gram = (matrix.T @ matrix).toarray()
    norms = np.sqrt(np.diag(gram))
    norms[norms == 0] = 1.0
    similarity = gram / norms[:, None] / norms[None, :]
    similarity[np.diag_indices_from(similarity)] = 0.0
    if neighbours < similarity.shape[1]:
        cut = np.argpartition(-similarity, neighbours - 1, axis=1)[:, neighbours:]
        np.put_along_axis(similarity, cut, 0.0, axis=1)
    return similarity


def _rank(scores: np.ndarray, item_ids: list[str], exclude: set[str], k: int) -> list[str]:
    """The ``k`` best-scored items not in ``exclude`` with a positive score (ties by id)."""
    order = np.lexsort((np.asarray(item_ids), -scores))  # by score descending, then id
    out = []
    for j in order:
        if scores[j] <= 0 or len(out) == k:
            break
        if item_ids[j] not in exclude:
            out.append(item_ids[j])
    return out


def _fill(head: list[str], tail: list[str], k: int) -> list[str]:
    seen = set(head)
    return (head + [i for i in tail if i not in seen])[:k]


def rank_with_weights(history: pd.DataFrame, users: list[str], weights: np.ndarray,
                      matrix: sparse.csr_matrix, user_ids: list[str], item_ids: list[str],
                      fill: list[str], k: int, own_first: bool) -> list[list[str]]:
    """Top-``k`` of ``x_u @ weights`` per customer, own items first if ``own_first``, then ``fill``."""
    row_of = {u: n for n, u in enumerate(user_ids)}
    own = own_items(history, users) if own_first else {}
    ranked = []
    for user in users:
        head = own.get(user, [])[:k]
        if user in row_of:
            scores = np.asarray(matrix[row_of[user]] @ weights).ravel()
            head = head + _rank(scores, item_ids, set(head), k - len(head))
        ranked.append(_fill(head, fill, k))
    return ranked


def ease(history: pd.DataFrame, day: date, users: list[str], k: int, regularisation: float,
         own_first: bool) -> list[list[str]]:
    """EASE^R refit on ``history``; plain or own items first; popular fill."""
    matrix, user_ids, item_ids = interactions(history)
    weights = ease_weights(matrix, regularisation)
    return rank_with_weights(history, users, weights, matrix, user_ids, item_ids,
                             popular(history, day, 3 * k), k, own_first)


def item_knn(history: pd.DataFrame, day: date, users: list[str], k: int, neighbours: int = 100) -> list[list[str]]:
    """Own items first, then item-kNN on co-purchases, then popular."""
    matrix, user_ids, item_ids = interactions(history)
    weights = knn_weights(matrix, neighbours)
    return rank_with_weights(history, users, weights, matrix, user_ids, item_ids,
                             popular(history, day, 3 * k), k, own_first=True)
