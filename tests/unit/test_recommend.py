"""recsys.serving.recommend: recommendations from the champion, limited to its serving index."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.serving.deploy import DeployError
from recsys.serving.recommend import recommend

USERS = [[-1, -1], [1, 0], [0, 1]]  # OOV, u1, u2
ITEMS = [[10, 10], [3, 0], [0, 2], [1, 0.5]]  # OOV, A, B, C
# u1: A 3, B 0, C 1 ; u2: A 0, B 2, C 0.5 ; OOV user: A -3, B -2, C -1.5


@pytest.fixture
def served(store, put_vocab, put_version):
    put_vocab(store, "users", ["u1", "u2"])
    put_vocab(store, "items", ["A", "B", "C"])
    put_version(store, 1, date(2011, 1, 4), USERS, ITEMS)
    # the serving index lists A and C only (B was delisted)
    index = pd.DataFrame({"item_id": ["A", "C"], "row": [1, 3], "title": ["Lantern", ""], "price": [1.0, 2.0]})
    store.write_parquet("models/two_tower/versions/1/index.parquet", index)
    registry.set_champion(store, 1, "deployed", "test", None)
    return store


def test_recommend_for_a_known_user(served):
    assert recommend(served, "u2", 3) == {
        "user_id": "u2",
        "known_user": True,
        "version": 1,
        "fallback": None,
        "items": [{"item_id": "C", "title": ""}, {"item_id": "A", "title": "Lantern"}],  # B not in the index
    }


def test_recommend_for_an_unknown_user_uses_the_oov_row(served):
    result = recommend(served, "stranger", 1)
    assert result["known_user"] is False
    assert result["items"] == [{"item_id": "C", "title": ""}]


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_recommend_rejects_k_out_of_range(served, k):
    with pytest.raises(ValueError, match=f"k must be in 1..1000, got {k}"):
        recommend(served, "u1", k)


def test_recommend_without_champion_raises(store):
    with pytest.raises(DeployError, match="no champion is deployed yet"):
        recommend(store, "u1")


def _gate_measured_popularity_ahead(store) -> None:
    """Purchases of the day before the serving day (B 3, A 2, C 1) and version 1's gate decision: popularity ahead
    of it by 1.0 on 10 held-out users (the fallback)."""
    from recsys.serving.popularity import PairedRecall, fallback_verdict

    day = pd.DataFrame({schema.USER_ID: ["x"] * 6, schema.ITEM_ID: ["B", "B", "B", "A", "A", "C"],
                        schema.USER_ROW: 0, schema.ITEM_ROW: [2, 2, 2, 1, 1, 3], schema.SPLIT: "train"})
    store.write_parquet("features/dt=2011-01-04/examples.parquet", day)
    store.mark_success("features/dt=2011-01-04")
    registry.record_decision(store, date(2011, 1, 4), {
        "date": "2011-01-04", "candidate_version": 1, "champion_version": None, "blessed": True, "reason": "test",
        "popularity_fallback": fallback_verdict(PairedRecall.of(np.ones(10), np.zeros(10)), 10, True, "recall@100"),
    }, None)


def test_the_popularity_fallback_answers_with_the_gate_s_ranking_of_the_served_items(served):
    from recsys.evaluation import popularity_ranking

    _gate_measured_popularity_ahead(served)
    result = recommend(served, "u2", 3)
    # the gate's ranking B, A, C without B (not in the serving index); the model would answer C, A
    assert popularity_ranking(served, date(2011, 1, 5), np.array(["", "A", "B", "C"]), 7, 3) == ["B", "A", "C"]
    assert (result["fallback"], [i["item_id"] for i in result["items"]]) == ("popularity", ["A", "C"])
    assert [i["item_id"] for i in recommend(served, "u2", 1)["items"]] == ["A"]
    off = recommend(served, "u2", 3, popularity_fallback=False)  # RECSYS_POPULARITY_FALLBACK=false
    assert (off["fallback"], [i["item_id"] for i in off["items"]]) == (None, ["C", "A"])
