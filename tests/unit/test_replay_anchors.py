"""The replay benchmark's non-neural anchors (bench/replay_quality/anchors.py) against hand-computed examples."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "replay_quality"))
import anchors

DAY = date(2011, 12, 1)


def _history(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(user, item, days before DAY) -> the history frame the anchors read."""
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "day": [date.fromordinal(DAY.toordinal() - r[2]) for r in rows]})


# u1 bought a and b, u2 and u3 bought a: X^T X = [[3, 1], [1, 1]]
TWO_ITEMS = _history([("u1", "a", 3), ("u1", "b", 3), ("u2", "a", 2), ("u3", "a", 1)])


def test_ease_weights_by_hand():
    # with lambda = 1, P = inv([[4, 1], [1, 2]]) = [[2, -1], [-1, 4]] / 7, and B_ij = -P_ij / P_jj:
    # B_ab = (1/7) / (4/7) = 1/4, B_ba = (1/7) / (2/7) = 1/2, zero diagonal
    matrix, users, items = anchors.interactions(TWO_ITEMS)
    assert users == ["u1", "u2", "u3"] and items == ["a", "b"]
    np.testing.assert_allclose(anchors.ease_weights(matrix, 1.0), [[0.0, 0.25], [0.5, 0.0]])


def test_knn_weights_by_hand():
    # a is bought by u1, u2, u3 and b by u1: cosine(a, b) = 1 / (sqrt(3) * 1)
    matrix, _, _ = anchors.interactions(TWO_ITEMS)
    np.testing.assert_allclose(anchors.knn_weights(matrix, 1), [[0.0, 1 / np.sqrt(3)], [1 / np.sqrt(3), 0.0]])


THREE_ITEMS = _history([
    ("u1", "a", 5), ("u1", "b", 5), ("u2", "a", 4), ("u2", "b", 4), ("u3", "b", 3), ("u3", "c", 3),
    ("u4", "a", 2), ("u4", "a", 1), ("u5", "c", 1),
])


def test_popular_counts_the_trailing_days_and_breaks_ties_by_id():
    # in the 7 days before DAY: a 4 times, b 3, c 2
    assert anchors.popular(THREE_ITEMS, DAY, 3) == ["a", "b", "c"]
    # in the 2 days before DAY: a twice (u4), c once (u5)
    assert anchors.popular(THREE_ITEMS, DAY, 3, days=2) == ["a", "c"]


def test_own_items_by_purchase_days_then_count_then_id():
    own = anchors.own_items(THREE_ITEMS, ["u3", "u4", "nobody"])
    assert own == {"u3": ["b", "c"], "u4": ["a"]}


def test_plain_ease_ranks_by_x_times_b_then_popular_fill():
    # u5 bought only c: scores = B[c, :]; b co-occurs with c (u3), a never does, so b first; a comes as fill
    weights = anchors.ease_weights(anchors.interactions(THREE_ITEMS)[0], 1.0)
    items = ["a", "b", "c"]
    assert weights[items.index("c"), items.index("b")] > 0
    assert weights[items.index("c"), items.index("a")] < 0
    ranked = anchors.ease(THREE_ITEMS, DAY, ["u5", "new"], 3, 1.0, own_first=False)
    assert ranked[0] == ["b", "a", "c"]  # b by EASE; then the popular fill a, c (c was not scored above 0)
    assert ranked[1] == ["a", "b", "c"]  # no history: popularity


def test_own_first_ease_puts_own_items_first():
    ranked = anchors.ease(THREE_ITEMS, DAY, ["u5"], 3, 1.0, own_first=True)
    assert ranked == [["c", "b", "a"]]


def test_item_knn_own_items_then_neighbours():
    # u4 bought a (on two days): own a first; b is a's neighbour (u1, u2), c is not
    assert anchors.item_knn(THREE_ITEMS, DAY, ["u4"], 3, neighbours=1) == [["a", "b", "c"]]


@pytest.mark.parametrize("k", [1, 2])
def test_rankings_have_k_items_at_most(k):
    assert all(len(r) <= k for r in anchors.ease(THREE_ITEMS, DAY, ["u1", "u5"], k, 1.0, own_first=False))
