"""recsys.serving.index: exact dot-product top-k over a version's tables."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.serving.index import Scorer, item_titles, load_scorer

# 3 user rows x 4 item rows (row 0 of each is OOV), dim 2
USERS = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # OOV, u1, u2
ITEMS = np.array([[10.0, 10.0], [3.0, 0.0], [0.0, 2.0], [1.0, 0.5]], dtype=np.float32)  # OOV, A, B, C
ITEM_IDS = np.array(["", "A", "B", "C"], dtype=object)
# scores (user . item), OOV item column never served:
#   u1  : A 3,  B 0,  C 1    -> A, C, B   (the OOV item would score 10)
#   u2  : A 0,  B 2,  C 0.5  -> B, C, A
#   OOV : A -3, B -2, C -1.5 -> C, B, A


@pytest.fixture
def scorer() -> Scorer:
    return Scorer(USERS, ITEMS, {"u1": 1, "u2": 2, "u9": 7}, ITEM_IDS)


def test_top_k_orders_by_score(scorer):
    assert scorer.top_k(["u1", "u2"], 2) == [["A", "C"], ["B", "C"]]
    assert scorer.top_k(["u2", "u1"], 1) == [["B"], ["A"]]


def test_the_oov_item_row_is_never_returned(scorer):
    assert scorer.top_k(["u1"], 10) == [["A", "C", "B"]]
    assert scorer.top_k(["u1"], 4) == [["A", "C", "B"]]


def test_unknown_users_use_the_oov_row(scorer):
    # "zz" is not in the vocabulary; "u9" has row 7, beyond this version's 3-row table
    assert scorer.top_k(["zz", "u9"], 3) == [["C", "B", "A"], ["C", "B", "A"]]
    np.testing.assert_array_equal(scorer.user_vectors(["zz", "u2", "u9"]), USERS[[0, 2, 0]])


def test_allowed_mask_is_respected(scorer):
    allowed = np.array([True, True, False, True])  # B is not available; OOV stays excluded anyway
    assert scorer.top_k(["u2", "u1"], 3, allowed) == [["C", "A"], ["A", "C"]]
    nothing = np.array([True, False, False, False])
    assert scorer.top_k(["u1"], 3, nothing) == [[]]


def test_no_users_gives_no_lists(scorer):
    assert scorer.top_k([], 5) == []


def test_load_scorer_uses_the_vocabularies_within_the_version_tables(store, put_vocab, put_version):
    put_vocab(store, "users", ["u1", "u2", "u3"])  # u3 arrived after this version was trained
    put_vocab(store, "items", ["A", "B", "C", "D"])  # so did item D (row 4)
    put_version(store, 1, date(2011, 1, 4), USERS, ITEMS)
    loaded = load_scorer(store, 1)
    assert list(loaded.item_ids) == ["", "A", "B", "C"]
    assert loaded.user_rows == {"u1": 1, "u2": 2, "u3": 3}
    np.testing.assert_array_equal(loaded.user_table, USERS)
    np.testing.assert_array_equal(loaded.item_table, ITEMS)
    assert loaded.top_k(["u1", "u3"], 3) == [["A", "C", "B"], ["C", "B", "A"]]


def test_item_titles():
    index = pd.DataFrame({"item_id": ["A", "B"], "row": [1, 2], "title": ["Lantern", "Heart"]})
    assert item_titles(index) == {"A": "Lantern", "B": "Heart"}


def test_history_bias_and_repeat_term_score_as_the_model_does():
    # u1 bought B on 2 days: query = u1 + mean(B) = (1, 0) + (0, 2) = (1, 2)
    #   dot: A 3, B 4, C 2 ; bias: A 0, B 0, C 1.5 -> A 3, B 4, C 3.5 ; repeat 0.5 * ln(3) on B -> B 4.549
    bias = np.array([0.0, 0.0, 0.0, 1.5], np.float32)
    histories = {"u1": (np.array([2]), np.array([2.0], np.float32)), "new": (np.array([1]), np.array([1.0]))}
    rich = Scorer(USERS, ITEMS, {"u1": 1, "u2": 2}, ITEM_IDS, item_bias=bias, repeat_weight=0.5,
                  history_weight=1.0, histories=histories)
    np.testing.assert_allclose(rich.scores(["u1"])[0, 1:], [3.0, 4.0 + 0.5 * np.log(3), 3.5], rtol=1e-6)
    assert rich.top_k(["u1"], 3) == [["B", "C", "A"]]
    # a customer without a row but with a history is embedded by it: OOV row + A = (2, -1)
    assert rich.knows("new") and not rich.knows("nobody")
    np.testing.assert_allclose(rich.user_vectors(["new"]), [[2.0, -1.0]])
    # query_length: the query averages the most recent items only; the repeat term covers every one
    two = {"u1": (np.array([2, 1]), np.array([2.0, 1.0], np.float32))}  # B (most recent), then A
    short = Scorer(USERS, ITEMS, {"u1": 1}, ITEM_IDS, item_bias=bias, repeat_weight=0.5, history_weight=1.0,
                   histories=two, query_length=1)
    np.testing.assert_allclose(short.user_vectors(["u1"]), [[1.0, 2.0]])  # u1 + B, not u1 + mean(B, A)
    np.testing.assert_allclose(short.scores(["u1"])[0, 1:], [3.0 + 0.5 * np.log(2), 4.0 + 0.5 * np.log(3), 3.5],
                               rtol=1e-6)
    full = Scorer(USERS, ITEMS, {"u1": 1}, ITEM_IDS, history_weight=1.0, histories=two)
    np.testing.assert_allclose(full.user_vectors(["u1"]), [[2.5, 1.0]])  # u1 + mean((0, 2), (3, 0))
    # without history_weight (a version stored with id tables only) histories are ignored
    plain = Scorer(USERS, ITEMS, {"u1": 1}, ITEM_IDS, histories=histories)
    assert not plain.knows("new")
    np.testing.assert_array_equal(plain.user_vectors(["u1"]), USERS[[1]])
