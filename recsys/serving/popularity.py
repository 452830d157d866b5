"""Trailing popularity: the baseline the deploy gate measures every candidate against, and the ranking
serving falls back to when the gate measured it ahead of the deployed version (issue 19).

One function ranks by popularity (:func:`ranking_rows`): the gate's baseline (``recsys.evaluation``) and the
served fallback (:mod:`recsys.serving.model_holder`, :mod:`recsys.serving.recommend`) both call it, so what
serving falls back to is exactly what the gate measured.

The fallback is decided by the gate, per version: :func:`fallback_verdict` over the paired per-user recall of
popularity and the candidate on the held-out users the gate decided on. It falls back only when popularity is
ahead by more than the standard error of the paired difference, on at least ``RECSYS_MIN_EVAL_USERS`` users,
and ``RECSYS_POPULARITY_FALLBACK`` is on. The verdict is recorded in the decision (``popularity_fallback``);
a serving process reads the verdict of the version it serves (:func:`recorded_fallback`), so a rollback
returns to that version's verdict too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from recsys import registry
from recsys.storage import PartitionStore

POPULARITY_DAYS = 7  # the trailing week's most purchased items: bench/replay_quality strategy (d)
FALLBACK = "popularity"  # ``Recommendation.fallback`` of an answer ranked by :func:`ranking_rows`


def purchases(store: PartitionStore, day: date, item_rows: int, window_days: int = POPULARITY_DAYS) -> np.ndarray:
    """[item_rows] int64 purchases of each item row in the ``window_days`` calendar days before ``day``
    (``day`` excluded), from the feature partitions the trend term counts (:mod:`recsys.features.trend`)."""
    from recsys.features import trend

    total = np.zeros(item_rows, np.int64)
    for d in trend.window(store, day, window_days):
        total += trend.daily_counts(store, d, item_rows)
    return total


def ranking_rows(counts: np.ndarray) -> np.ndarray:
    """Item rows by ``counts`` (:func:`purchases`), most first, ties in row order; the OOV row never; empty when
    nothing was bought (no popularity to rank by)."""
    from recsys.features import vocab

    counts = np.asarray(counts)
    rows = np.arange(len(counts))
    rows = rows[rows != vocab.OOV_ROW]
    if not (counts[rows] > 0).any():
        return rows[:0]
    return rows[np.argsort(-counts[rows], kind="stable")]


@dataclass(frozen=True)
class PairedRecall:
    """Per-user recall sums of popularity and the model on the same held-out users, and the sum of squared
    per-user differences (popularity - model): what a verdict needs, pooled over days by addition."""

    users: int
    popularity: float
    model: float
    squares: float

    @classmethod
    def of(cls, popularity: np.ndarray, model: np.ndarray) -> PairedRecall:
        return cls(len(model), float(popularity.sum()), float(model.sum()), float(((popularity - model) ** 2).sum()))

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> PairedRecall:
        return cls(int(recorded["users"]), float(recorded["popularity"]), float(recorded["model"]),
                   float(recorded["squares"]))

    def __add__(self, other: PairedRecall) -> PairedRecall:
        return PairedRecall(self.users + other.users, self.popularity + other.popularity, self.model + other.model,
                            self.squares + other.squares)

    def difference(self) -> float:
        """Mean of popularity - model (0 without users)."""
        return (self.popularity - self.model) / self.users if self.users else 0.0

    def difference_se(self) -> float:
        """Standard error of the mean paired difference (0 for fewer than 2 users)."""
        n = self.users
        if n < 2:
            return 0.0
        mean = self.difference()
        return float(np.sqrt(max(self.squares - n * mean * mean, 0.0) / (n - 1) / n))


def fallback_verdict(evidence: PairedRecall, min_users: int, enabled: bool, metric: str,
                     dates: list[str] | None = None) -> dict[str, Any]:
    """The ``popularity_fallback`` record of a decision: serve popularity instead of this candidate?

    Yes only if ``enabled`` (``RECSYS_POPULARITY_FALLBACK``), with at least ``min_users`` users, and popularity's
    mean ``metric`` is ahead of the model's by more than the standard error of the paired difference (a tie, or
    a lead within the noise, keeps the model)."""
    difference, se = evidence.difference(), evidence.difference_se()
    ahead = evidence.users >= min_users and difference > 0 and difference > se
    return {
        "fallback": FALLBACK if ahead and enabled else None,
        "enabled": enabled,
        "users": evidence.users,
        f"popularity_{metric}": evidence.popularity / evidence.users if evidence.users else 0.0,
        f"model_{metric}": evidence.model / evidence.users if evidence.users else 0.0,
        "difference": difference,
        "difference_se": se,
        "dates": dates or [],
        "evidence": {"users": evidence.users, "popularity": evidence.popularity, "model": evidence.model,
                     "squares": evidence.squares},
    }


def deciding_record(reg: Mapping[str, Any], version: int) -> Mapping[str, Any] | None:
    """The gate's decision on ``version``: its full-retrain decision, else the decision of the date it was
    trained on whose candidate it was (None: never evaluated, e.g. a bootstrap)."""
    retrained = (reg.get("retrains") or {}).get(str(version))
    if retrained is not None:
        return retrained
    meta = reg["versions"].get(str(version))
    if meta is None:
        return None
    decision = reg["decisions"].get(meta["trained_on"])
    return decision if decision is not None and decision.get("candidate_version") == version else None


def recorded_fallback(store: PartitionStore, version: int, enabled: bool = True) -> dict[str, Any] | None:
    """The gate's ``popularity_fallback`` record of ``version`` when it says to serve popularity, else None (no
    decision, measured behind or within the noise, or ``enabled`` False: ``RECSYS_POPULARITY_FALLBACK`` off)."""
    if not enabled:
        return None
    decision = deciding_record(registry.load(store), version)
    verdict = (decision or {}).get("popularity_fallback")
    return verdict if verdict and verdict.get("fallback") == FALLBACK else None
