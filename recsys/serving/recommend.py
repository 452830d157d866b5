"""Recommendations from the current champion (used by the CLI and the demo)."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys import registry
from recsys.errors import RecsysError
from recsys.serving.deploy import DeployError
from recsys.serving.index import load_scorer
from recsys.storage import PartitionStore, layout


class RecommendError(RecsysError, ValueError):
    """A recommendation request is invalid (k out of range)."""


def recommend(store: PartitionStore, user_id: str, k: int = 10) -> dict[str, Any]:
    """Top-``k`` available items for ``user_id`` from the champion, with titles."""
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
    items = scorer.top_k([user_id], k, allowed)[0]
    return {
        "user_id": user_id,
        "known_user": scorer.knows(user_id),
        "version": champion,
        "items": [{"item_id": i, "title": titles.get(i, "")} for i in items],
    }
