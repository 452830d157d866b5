"""EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): the closed form, shared by
the ranking stage (a feature and a candidate source) and the replay benchmark's anchors (bench/replay_quality).

Over a binary customer x item matrix ``X``: ``P = (X^T X + lambda I)^-1`` and ``B = I - P diag(1 / diag P)``
(zero diagonal); a customer's scores are ``x_u B``. The ranking stage fits it once a day on the own-items table
known before the day (the history snapshot of the day before: never on the ranked day), over at most
``max_items`` item rows (those bought by the most customers: the inverse is O(items^3) in time and O(items^2)
in memory), and scores a batch of customers from their own items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.arrays import distinct

DEFAULT_LAMBDA = 2500.0  # what bench/replay_quality's grid chose for own-first EASE^R on Online Retail's last 60 days
MAX_ITEMS = 6000  # a 6,000 x 6,000 float64 inverse: 290 MB while fitting, about 10 s of CPU


def ease_weights(matrix: sparse.spmatrix | np.ndarray, regularisation: float) -> np.ndarray:
    """EASE^R's item x item weights ``B`` [J, J] float64 (zero diagonal) for the binary matrix ``matrix`` [U, J]."""
    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    gram = (matrix.T @ matrix).toarray()
    gram[np.diag_indices_from(gram)] += regularisation
    inverse = np.linalg.inv(gram)
    weights = inverse / (-np.diag(inverse))
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


@dataclass(frozen=True)
class Ease:
    """EASE^R over a subset of a version's item rows: ``columns`` [J] (sorted item rows) and ``weights`` [J, J]
    float32, ``weights[a, b]`` what buying ``columns[a]`` adds to the score of ``columns[b]``."""

    columns: np.ndarray
    weights: np.ndarray
    regularisation: float

    @staticmethod
    def empty() -> Ease:
        return Ease(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), 0.0)

    def scores(self, user: np.ndarray, row: np.ndarray, n_users: int, rows: int) -> np.ndarray:
        """[n_users, rows] float32 scores ``x_u B`` of the customers whose own items are the pairs (``user``,
        ``row``) (``user`` indexes the batch); 0 for rows outside ``columns`` and for customers without items."""
        out = np.zeros((n_users, rows), np.float32)
        if not len(self.columns) or not len(user):
            return out
        at = np.searchsorted(self.columns, row)
        at = np.minimum(at, len(self.columns) - 1)
        known = self.columns[at] == row
        x = sparse.csr_matrix((np.ones(int(known.sum()), np.float32), (user[known], at[known])),
                              shape=(n_users, len(self.columns)))
        x.data[:] = 1.0  # binary, as fitted
        out[:, self.columns] = np.asarray(x @ self.weights, np.float32)
        return out


def fit(user_ids: np.ndarray, rows: np.ndarray, n_rows: int, regularisation: float = DEFAULT_LAMBDA,
        max_items: int = MAX_ITEMS) -> Ease:
    """EASE^R on the binary matrix of the (customer id, item row) pairs ``user_ids``, ``rows`` (item rows < ``n_rows``;
    row 0, OOV, is left out), over the ``max_items`` rows bought by the most customers (ties: lower row)."""
    ok = (rows > 0) & (rows < n_rows)
    users, rows = pd.factorize(pd.Series(np.asarray(user_ids, dtype=object)[ok]))[0], np.asarray(rows)[ok]
    if not len(rows):
        return Ease.empty()
    pairs = distinct(users.astype(np.int64) * n_rows + rows)
    users, rows = pairs // n_rows, pairs % n_rows
    buyers = np.bincount(rows, minlength=n_rows)
    bought = np.flatnonzero(buyers)
    if len(bought) > max_items:
        bought = np.sort(bought[np.lexsort((bought, -buyers[bought]))][:max_items])
    at = np.searchsorted(bought, rows)
    keep = (at < len(bought)) & (bought[np.minimum(at, len(bought) - 1)] == rows)
    matrix = sparse.csr_matrix((np.ones(int(keep.sum())), (users[keep], at[keep])),
                               shape=(int(users.max()) + 1, len(bought)))
    return Ease(bought.astype(np.int64), ease_weights(matrix, regularisation).astype(np.float32), regularisation)
