"""What the ranking stage knows about a day before it starts, and its candidates per customer.

:class:`DayInputs` holds everything that is the same for every request of a day (as known before the day):
the item-side arrays over the retrieval version's item rows (trend, popularity, price band, which rows
may be recommended), the item x item co-purchase similarity, EASE^R's item x item weights (fitted on the
own-items table, i.e. on purchases before the day) and each customer's own past items. It is
built once per day (:func:`day_inputs`) and read by :func:`generate` and :func:`recsys.ranking.features.build`.

Item rows are the vocabulary's rows (append-only, so the same in every version); row 0 is OOV and never a
candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import sparse

from recsys import schema
from recsys.arrays import distinct
from recsys.errors import RecsysError
from recsys.features import history, items, trend
from recsys.ranking import ease as ease_model
from recsys.storage import PartitionStore, layout

OOV_ROW = 0
RECENT_ITEMS = 10  # a customer's most recent items whose co-purchases count (features.COPURCHASE)
OWN_COLUMNS = ("user_id", "row", "days", "age", "recency")


class RankingError(RecsysError):
    """The ranking stage was given inputs it cannot use (shapes or ids that do not fit)."""


class RetrievalScorer(Protocol):
    """What the ranking stage needs of a retrieval model (:class:`recsys.serving.index.Scorer` is one)."""

    item_ids: np.ndarray

    def scores(self, user_ids: list[str]) -> np.ndarray:
        """[B, I] scores of every item row for each user."""
        ...


@dataclass(frozen=True)
class DayInputs:
    """The ranking stage's per-day inputs, over ``I`` item rows.

    ``own``: one row per (customer, own item with a row): ``user_id``, ``row``, ``days`` (distinct days the
    customer bought it), ``age`` (days from the last of them to ``day``, >= 1), ``recency`` (0 = the
    customer's most recently bought item), sorted by user then recency.
    """

    day: date  # the day being ranked
    allowed: np.ndarray  # [I] bool: rows that may be recommended (row 0 never)
    trend: np.ndarray  # [I] float32: ln(1 + purchases in the trend_days before day)
    popularity: np.ndarray  # [I] float32: ln(1 + purchases in the popularity_days before day)
    price_band: np.ndarray  # [I] int32: recsys.features.items.price_band of the catalog price, 0 unknown
    copurchase: sparse.csr_matrix  # [I, I] cosine of the items' customer sets, zero diagonal
    own: pd.DataFrame
    ease: ease_model.Ease  # EASE^R fitted on ``own`` (purchases before the day)
    # derived once (a request must not scan every customer's items): the own table's distinct users, sorted, and
    # where each one's rows start; the allowed rows by trend, highest first (ties by row)
    _own_users: np.ndarray = field(init=False, repr=False)
    _own_starts: np.ndarray = field(init=False, repr=False)
    _own: dict[str, np.ndarray] = field(init=False, repr=False)
    trending: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.allowed)
        for name in ("trend", "popularity", "price_band"):
            if len(getattr(self, name)) != n:
                raise RankingError(f"DayInputs.{name} has {len(getattr(self, name))} rows, allowed has {n}")
        if self.copurchase.shape != (n, n):
            raise RankingError(f"DayInputs.copurchase is {self.copurchase.shape}, expected ({n}, {n})")
        if len(self.ease.columns) and self.ease.columns.max() >= n:
            raise RankingError(f"DayInputs.ease refers to row {self.ease.columns.max()}, the version has {n}")
        if list(self.own.columns) != list(OWN_COLUMNS):
            raise RankingError(f"DayInputs.own has columns {list(self.own.columns)}, expected {list(OWN_COLUMNS)}")
        users = self.own["user_id"].to_numpy(object)
        if len(users) and (users[1:] < users[:-1]).any():
            raise RankingError("DayInputs.own must be sorted by user (own_items does)")
        distinct, starts = np.unique(users, return_index=True) if len(users) else (np.zeros(0, object), np.zeros(0))
        object.__setattr__(self, "_own_users", distinct)
        object.__setattr__(self, "_own_starts", np.append(starts, len(users)).astype(np.int64))
        object.__setattr__(self, "_own", {c: self.own[c].to_numpy() for c in OWN_COLUMNS[1:]})
        allowed_rows = np.flatnonzero(self.allowed)
        object.__setattr__(self, "trending", allowed_rows[np.lexsort((allowed_rows, -self.trend[allowed_rows]))])

    @property
    def rows(self) -> int:
        return len(self.allowed)

    def own_of(self, users: list[str]) -> dict[str, np.ndarray]:
        """The own items of a batch of customers: ``user`` (index into ``users``) and the own table's ``row``,
        ``days``, ``age``, ``recency`` of each, grouped by user in batch order; O(batch's items), not O(table)."""
        found = np.searchsorted(self._own_users, np.asarray(users, dtype=object)) if len(self._own_users) else \
            np.zeros(len(users), np.int64)
        found = np.minimum(found, max(len(self._own_users) - 1, 0))
        hit = (self._own_users[found] == np.asarray(users, dtype=object)) if len(self._own_users) else \
            np.zeros(len(users), bool)
        begin = np.where(hit, self._own_starts[found], 0)
        count = np.where(hit, self._own_starts[np.minimum(found + 1, len(self._own_starts) - 1)] - begin, 0)
        user = np.repeat(np.arange(len(users)), count)
        index = np.repeat(begin - np.r_[0, np.cumsum(count)[:-1]], count) + np.arange(int(count.sum()))
        return {"user": user.astype(np.int64), **{c: a[index] for c, a in self._own.items()}}

    def ease_scores(self, users: list[str]) -> np.ndarray:
        """[B, I] float32 EASE^R scores of every item row for a batch of customers (0: a new customer, or a row
        EASE^R was not fitted on)."""
        own = self.own_of(users)
        return self.ease.scores(own["user"], own["row"].astype(np.int64), len(users), self.rows)


@dataclass(frozen=True)
class Candidates:
    """Candidate (customer, item row) pairs of a batch of customers, sorted by customer, then retrieval
    score descending, then row; ``user`` indexes the batch's user list."""

    user: np.ndarray  # [N] int64
    row: np.ndarray  # [N] int64
    score: np.ndarray  # [N] float32: the retrieval score

    def __len__(self) -> int:
        return len(self.row)


def own_items(snapshot: pd.DataFrame, item_ids: np.ndarray, day: date) -> pd.DataFrame:
    """The own-items table of :class:`DayInputs` from a history snapshot (``history.COLUMNS``) known before
    ``day``; items without a row among ``item_ids`` are left out (a newer item the version does not know)."""
    ids = snapshot[schema.ITEM_ID].astype(str).to_numpy(object)
    rows = pd.Index(np.asarray(item_ids, dtype=object)).get_indexer(ids)
    last = pd.to_datetime(snapshot[history.LAST_DAY].astype(str))
    own = pd.DataFrame({
        "user_id": snapshot[schema.USER_ID].astype(str).to_numpy(object),
        "row": rows.astype(np.int64),
        "days": snapshot[history.DAYS].to_numpy(np.float32),
        "age": (pd.Timestamp(day) - last).dt.days.to_numpy(np.float32),
        "item": snapshot[schema.ITEM_ID].astype(str).to_numpy(object),
    })
    own = own[own["row"] > OOV_ROW]
    own = own.sort_values(["user_id", "age", "item"], kind="stable")
    users = own["user_id"].to_numpy(object)
    starts = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(users)), 0)) if len(users) else np.zeros(0, int)
    own = own.assign(recency=(np.arange(len(users)) - first).astype(np.int64))
    return own[list(OWN_COLUMNS)].reset_index(drop=True)


def copurchase_matrix(own: pd.DataFrame, rows: int) -> sparse.csr_matrix:
    """[rows, rows] float32 cosine similarity of the items' sets of customers (from the own-items table), zero
    diagonal: how often two items were bought by the same customers, relative to how often each was."""
    users = pd.factorize(own["user_id"])[0]
    bought = sparse.csr_matrix((np.ones(len(own), np.float32), (users, own["row"].to_numpy())),
                               shape=(int(users.max()) + 1 if len(users) else 0, rows))
    gram = (bought.T @ bought).tocsr()
    norms = np.sqrt(gram.diagonal()).astype(np.float32)
    norms[norms == 0] = 1.0
    scale = sparse.diags(1.0 / norms)
    cosine = (scale @ gram @ scale).tocsr().astype(np.float32)
    cosine.setdiag(0.0)
    cosine.eliminate_zeros()
    return cosine


def day_inputs(store: PartitionStore, item_ids: np.ndarray, allowed: np.ndarray | None, day: date, *,
               trend_days: int = 7, popularity_days: int = 30, snapshot: pd.DataFrame | None = None,
               ease_lambda: float = ease_model.DEFAULT_LAMBDA, ease_items: int = ease_model.MAX_ITEMS) -> DayInputs:
    """:class:`DayInputs` for ranking ``day`` over a version's item rows ``item_ids`` [I] (``allowed``: the rows
    its serving index allows, None: every row): the history snapshot, purchase counts and catalog known
    before ``day``; EASE^R (``ease_lambda``, over at most ``ease_items`` rows) fitted on that snapshot."""
    n = len(item_ids)
    mask = np.ones(n, bool) if allowed is None else np.asarray(allowed, bool).copy()
    if len(mask) != n:
        raise RankingError(f"allowed has {len(mask)} rows, the version has {n} item rows")
    mask[OOV_ROW] = False
    if snapshot is None:
        snapshot = history.load_before(store, day)
    own = own_items(snapshot, item_ids, day)
    recent, popular = trend.table(store, [day], n, trend_days)[0], trend.table(store, [day], n, popularity_days)[0]
    catalog = items.latest_catalog(store, layout.shift_day(day, -1)).drop_duplicates(schema.ITEM_ID, keep="last")
    prices = pd.Series(pd.to_numeric(catalog[schema.PRICE], errors="coerce").to_numpy(np.float64),
                       index=catalog[schema.ITEM_ID].astype(str).to_numpy(object))
    price = prices.reindex(np.asarray(item_ids, dtype=object)).to_numpy(np.float64)
    fitted = ease_model.fit(own["user_id"].to_numpy(object), own["row"].to_numpy(np.int64), n, ease_lambda,
                            ease_items)
    return DayInputs(day, mask, recent.astype(np.float32), popular.astype(np.float32),
                     items.price_bands(price), copurchase_matrix(own, n), own, fitted)


def top_rows(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """[B, min(k, allowed rows)] the best-scored allowed rows of each row of ``scores`` [B, I], in no order."""
    masked = np.where(allowed[None, :], scores, -np.inf)
    k = min(k, int(allowed.sum()))
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64)
    return np.argpartition(-masked, k - 1, axis=1)[:, :k]


def generate(scores: np.ndarray, users: list[str], inputs: DayInputs, *, n_retrieval: int = 200,
             n_trending: int = 50, n_ease: int = 100, ease_scores: np.ndarray | None = None) -> Candidates:
    """The candidates of ``users``: the union of each one's ``n_retrieval`` best-scored allowed rows (``scores``
    [B, I], the retrieval model's), their own allowed items, the ``n_trending`` allowed rows with the highest
    trend (ties by row) and their ``n_ease`` best allowed rows by EASE^R with a positive score (``ease_scores``
    [B, I]: :meth:`DayInputs.ease_scores`, computed here when None)."""
    if scores.shape != (len(users), inputs.rows):
        raise RankingError(f"scores are {scores.shape}, expected ({len(users)}, {inputs.rows})")
    b, rows = len(users), inputs.rows
    top = top_rows(scores, inputs.allowed, n_retrieval)
    keys = [(np.arange(b)[:, None] * rows + top).ravel()]
    if n_ease > 0:
        ease = inputs.ease_scores(users) if ease_scores is None else ease_scores
        best = top_rows(ease, inputs.allowed, n_ease)
        positive = np.take_along_axis(ease, best, axis=1) > 0
        keys.append((np.arange(b)[:, None] * rows + best)[positive])
    own = inputs.own_of(users)
    mine = inputs.allowed[own["row"]]
    keys.append(own["user"][mine] * rows + own["row"][mine])
    trending = inputs.trending[:n_trending]
    keys.append((np.arange(b)[:, None] * rows + trending[None, :]).ravel())
    key = distinct(np.concatenate(keys).astype(np.int64))
    user, row = key // rows, key % rows
    score = scores[user, row].astype(np.float32)
    order = np.lexsort((row, -score, user))
    return Candidates(user[order], row[order], score[order])
