"""recsys.serving.recommend: recommendations from the champion, limited to its serving index."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys import registry
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
