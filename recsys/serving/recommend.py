"""Recommendations from the current champion (used by the CLI and the demo)."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys import registry
from recsys.errors import RecsysError
from recsys.serving import popularity
from recsys.serving.deploy import DeployError
from recsys.serving.index import load_scorer
from recsys.storage import PartitionStore, layout


class RecommendError(RecsysError, ValueError):
    """A recommendation request is invalid (k out of range)."""


def recommend(store: PartitionStore, user_id: str, k: int = 10, popularity_fallback: bool = True) -> dict[str, Any]:
    """Top-``k`` available items for ``user_id`` from the champion, with titles.

    When the champion's gate decision calls for the popularity fallback (:mod:`recsys.serving.popularity`) and
    ``popularity_fallback`` (``RECSYS_POPULARITY_FALLBACK``) is on, the items are trailing-week popularity's
    ranking, the one the gate measured, and ``fallback`` says so."""
    from recsys.features import trend

    if k <= 0 or k > 1000:
        raise RecommendError(f"k must be in 1..1000, got {k}")
    champion = registry.load(store)["champion"]
    if champion is None:
        raise DeployError("no champion is deployed yet: run the pipeline for at least one partition")
    scorer = load_scorer(store, champion)
    index = store.read_parquet(f"{layout.model_version(champion)}/{layout.INDEX_FILE}")
    allowed = np.zeros(len(scorer.item_ids), dtype=bool)
    allowed[index["row"].to_numpy()] = True
    titles = dict(zip(index["item_id"].astype(str), index["title"].astype(str), strict=True))
    fallback = None
    day = trend.serving_day(store)
    if popularity.recorded_fallback(store, champion, popularity_fallback) is not None and day is not None:
        rows = popularity.ranking_rows(popularity.purchases(store, day, len(scorer.item_ids)))
        rows = rows[allowed[rows]]
        if len(rows):  # else nothing served was bought in the window: the model ranks
            fallback, items = popularity.FALLBACK, [str(i) for i in scorer.item_ids[rows[:k]]]
    if fallback is None:
        items = scorer.top_k([user_id], k, allowed)[0]
    return {
        "user_id": user_id,
        "known_user": scorer.knows(user_id),
        "version": champion,
        "fallback": fallback,
        "items": [{"item_id": i, "title": titles.get(i, "")} for i in items],
    }
