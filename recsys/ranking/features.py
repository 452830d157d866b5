"""One feature row per (customer, candidate): the ranking model's input, the same at training and ranking time.

Every feature is a fixed transform (logs of counts and days, flags, a one-hot weekday), never a statistic
fitted to the data: a fine-tune from yesterday's weights sees today's rows on the same scale.

=================  ==========================================================================================
retrieval_z        the retrieval score, standardised within the customer's candidates (mean 0, std 1)
retrieval_rank     ln(1 + position by retrieval score among the customer's candidates), 0 = best
own                1 if the customer bought the item before, else 0
own_days           ln(1 + distinct days the customer bought it) (0 if not own)
own_age            ln(1 + days since the customer last bought it) (0 if not own)
own_recency        ln(1 + its position among the customer's items, most recent first) (0 if not own)
user_items         ln(1 + the customer's own items)
user_age           ln(1 + days since the customer's last purchase) (0 for a new customer)
trend              ln(1 + the item's purchases in the trend days before the day)
popularity         ln(1 + the item's purchases in the popularity days before the day)
trend_lift         trend - popularity: the week's share of the month, in logs
price_band         the item's price band / (PRICE_BANDS - 1), 0 unknown
copurchase         mean co-purchase cosine of the item with the customer's RECENT_ITEMS most recent items
ease               the item's EASE^R score for the customer (x_u B, fitted on purchases before the day)
ease_z             the EASE^R score, standardised within the customer's candidates (mean 0, std 1)
ease_rank          ln(1 + position by EASE^R score among all allowed rows), 0 = best; ln(1 + allowed rows) for a
                   score <= 0 (not recommended by EASE^R, e.g. every item of a new customer)
weekday_0..6       the ranked day's weekday, one-hot (Monday = 0)
=================  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.arrays import distinct
from recsys.features import items
from recsys.ranking.candidates import RECENT_ITEMS, Candidates, DayInputs, RankingError

FEATURES: tuple[str, ...] = (
    "retrieval_z", "retrieval_rank", "own", "own_days", "own_age", "own_recency", "user_items", "user_age",
    "trend", "popularity", "trend_lift", "price_band", "copurchase", *(f"weekday_{d}" for d in range(7)),
    "ease", "ease_z", "ease_rank",
)
_COL = {name: n for n, name in enumerate(FEATURES)}


def _group_starts(user: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's group in a sorted array of group ids."""
    if not len(user):
        return np.zeros(0, np.int64)
    starts = np.r_[True, user[1:] != user[:-1]]
    return np.maximum.accumulate(np.where(starts, np.arange(len(user)), 0))


def _standardised(value: np.ndarray, user: np.ndarray, b: int) -> np.ndarray:
    """``value`` [N] standardised within each user's rows (mean 0, std 1; 0 where a user's values are all equal)."""
    value = value.astype(np.float64)
    count = np.bincount(user, minlength=b).astype(np.float64)
    mean = np.bincount(user, value, minlength=b) / np.maximum(count, 1)
    var = np.bincount(user, (value - mean[user]) ** 2, minlength=b) / np.maximum(count, 1)
    return (value - mean[user]) / np.maximum(np.sqrt(var[user]), 1e-6)


def ease_positions(ease_scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """[B, I] float32 ``ease_rank`` of every row: ln(1 + position among the allowed rows by EASE^R score, ties by
    row) where the score is positive, else ln(1 + allowed rows)."""
    b, rows = ease_scores.shape
    n_allowed = int(allowed.sum())
    masked = np.where(allowed[None, :], ease_scores, -np.inf)
    by = np.argsort(-masked, axis=1, kind="stable")
    position = np.empty((b, rows), np.int64)
    np.put_along_axis(position, by, np.broadcast_to(np.arange(rows), (b, rows)), axis=1)
    return np.where((ease_scores > 0) & allowed[None, :], np.log1p(position), np.log1p(n_allowed)).astype(np.float32)


def build(candidates: Candidates, users: list[str], inputs: DayInputs,
          ease_scores: np.ndarray | None = None) -> np.ndarray:
    """[N, len(FEATURES)] float32 feature rows of ``candidates`` (of the batch ``users``) for ``inputs.day``;
    ``ease_scores`` [B, I]: :meth:`DayInputs.ease_scores` of ``users`` if the caller has them, else computed here."""
    n, b, rows = len(candidates), len(users), inputs.rows
    user, row = candidates.user, candidates.row
    if n and (user.max() >= b or row.max() >= rows):
        raise RankingError(f"candidates refer to user {user.max()} of {b} or row {row.max()} of {rows}")
    if ease_scores is None:
        ease_scores = inputs.ease_scores(users)
    if ease_scores.shape != (b, rows):
        raise RankingError(f"ease_scores are {ease_scores.shape}, expected ({b}, {rows})")
    out = np.zeros((n, len(FEATURES)), np.float32)
    out[:, _COL["retrieval_z"]] = _standardised(candidates.score, user, b)
    out[:, _COL["retrieval_rank"]] = np.log1p(np.arange(n) - _group_starts(user))

    own = inputs.own_of(users)
    own_user, own_row = own["user"], own["row"].astype(np.int64)
    days, age, recency = own["days"], own["age"], own["recency"]
    own_key = own_user * rows + own_row
    order = np.argsort(own_key, kind="stable")
    own_key = own_key[order]
    key = user * rows + row
    hit, src = np.zeros(n, bool), np.zeros(n, np.int64)
    if len(own_key):
        at = np.minimum(np.searchsorted(own_key, key), len(own_key) - 1)
        hit, src = own_key[at] == key, order[at]
        out[:, _COL["own_days"]] = np.where(hit, np.log1p(days[src]), 0)
        out[:, _COL["own_age"]] = np.where(hit, np.log1p(age[src]), 0)
        out[:, _COL["own_recency"]] = np.where(hit, np.log1p(recency[src]), 0)
    out[:, _COL["own"]] = hit
    user_items = np.bincount(own_user, minlength=b)
    user_age = np.full(b, np.inf)
    np.minimum.at(user_age, own_user, age)
    user_age[~np.isfinite(user_age)] = 0.0  # a new customer
    out[:, _COL["user_items"]] = np.log1p(user_items[user])
    out[:, _COL["user_age"]] = np.log1p(user_age[user])

    out[:, _COL["trend"]] = inputs.trend[row]
    out[:, _COL["popularity"]] = inputs.popularity[row]
    out[:, _COL["trend_lift"]] = inputs.trend[row] - inputs.popularity[row]
    out[:, _COL["price_band"]] = inputs.price_band[row] / (items.PRICE_BANDS - 1)

    recent = recency < RECENT_ITEMS
    picked = sparse.csr_matrix((np.ones(int(recent.sum()), np.float32), (own_user[recent], own_row[recent])),
                               shape=(b, rows))
    strength = (picked @ inputs.copurchase).toarray()  # [B, I]: a batch is at most stage.BLOCK_USERS customers
    n_recent = np.maximum(np.bincount(own_user[recent], minlength=b), 1)
    out[:, _COL["copurchase"]] = strength[user, row] / n_recent[user]
    out[:, _COL[f"weekday_{inputs.day.weekday()}"]] = 1.0

    ease = ease_scores[user, row]
    out[:, _COL["ease"]] = ease
    out[:, _COL["ease_z"]] = _standardised(ease, user, b)
    out[:, _COL["ease_rank"]] = ease_positions(ease_scores, inputs.allowed)[user, row]
    return out


def labels(candidates: Candidates, users: list[str], item_ids: np.ndarray,
           bought: Iterable[tuple[str, str]]) -> np.ndarray:
    """[N] float32: 1 where the candidate's customer bought its item on the day (``bought``: (user id, item id)
    pairs), else 0."""
    pairs = pd.DataFrame(list(bought), columns=["user", "item"], dtype=object)
    if pairs.empty:
        return np.zeros(len(candidates), np.float32)
    user_of = pd.Index(users).get_indexer(pairs["user"].to_numpy(object))
    row_of = pd.Index(np.asarray(item_ids, dtype=object)).get_indexer(pairs["item"].to_numpy(object))
    ok = (user_of >= 0) & (row_of >= 0)
    positive = distinct(user_of[ok].astype(np.int64) * len(item_ids) + row_of[ok])
    return np.isin(candidates.user * len(item_ids) + candidates.row, positive).astype(np.float32)


@dataclass(frozen=True)
class Lists:
    """Candidate lists padded to one length: ``features`` [L, C, F], ``labels`` [L, C], ``mask`` [L, C] (True
    where a candidate is)."""

    features: np.ndarray
    labels: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    @staticmethod
    def concat(parts: list[Lists]) -> Lists:
        """One set of lists from several (padded to the longest)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Lists(np.zeros((0, 1, len(FEATURES)), np.float32), np.zeros((0, 1), np.float32),
                         np.zeros((0, 1), bool))
        width = max(p.features.shape[1] for p in parts)

        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

        return Lists(np.concatenate([pad(p.features) for p in parts]), np.concatenate([pad(p.labels) for p in parts]),
                     np.concatenate([pad(p.mask) for p in parts]))


def to_lists(candidates: Candidates, features: np.ndarray, label: np.ndarray, *, positives_only: bool = True) -> Lists:
    """The customers' candidate lists (one per customer, in user order), padded; ``positives_only``: only the lists
    with a bought candidate (a list without one teaches a listwise loss nothing)."""
    user = candidates.user
    present, counts = np.unique(user, return_counts=True)
    if positives_only:
        has = np.bincount(user, label, minlength=int(user.max()) + 1 if len(user) else 0)[present] > 0
        present, counts = present[has], counts[has]
    width = int(counts.max()) if len(counts) else 1
    index = np.searchsorted(present, user)
    kept = (index < len(present)) & (present[np.minimum(index, max(len(present) - 1, 0))] == user) if len(present) \
        else np.zeros(len(user), bool)
    slot = np.arange(len(user)) - _group_starts(user)
    lists = Lists(np.zeros((len(present), width, features.shape[1]), np.float32),
                  np.zeros((len(present), width), np.float32), np.zeros((len(present), width), bool))
    lists.features[index[kept], slot[kept]] = features[kept]
    lists.labels[index[kept], slot[kept]] = label[kept]
    lists.mask[index[kept], slot[kept]] = True
    return lists
