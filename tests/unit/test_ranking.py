"""recsys.ranking: candidates, features (hand-computed values on a literal day), the ranker and both stages."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.ranking import FEATURES, Lists, build, day_inputs, generate, labels, to_lists
from recsys.ranking.candidates import RankingError, copurchase_matrix, own_items
from recsys.ranking.model import HIDDEN, RankerWeights, build_model, fit
from recsys.ranking.stage import rank

D1, D2, D3 = date(2011, 1, 1), date(2011, 1, 2), date(2011, 1, 3)  # D3 (a Monday) is ranked
ITEM_IDS = np.array(["", "a", "b", "c", "d", "e"], dtype=object)  # row 0 is OOV
ALLOWED = np.array([False, True, True, True, True, False])  # e is delisted
SCORES = {"u1": [-np.inf, 0.9, 0.1, 0.5, 0.3, 2.0], "u2": [-np.inf, 0.2, 0.8, 0.4, 0.6, 5.0],
          "u9": [-np.inf, 0.1, 0.2, 0.0, -0.1, 0.0]}
COL = {name: n for n, name in enumerate(FEATURES)}


class FakeScorer:
    """A retrieval model with fixed scores (what the ranking stage needs of recsys.serving.index.Scorer)."""

    item_ids = ITEM_IDS

    def scores(self, user_ids):
        return np.array([SCORES[u] for u in user_ids], np.float32)


def _examples(store, day, items):
    store.write_parquet(f"features/dt={day.isoformat()}/examples.parquet", pd.DataFrame({
        schema.USER_ID: [f"x{n}" for n in range(len(items))], schema.ITEM_ID: items,
        schema.USER_ROW: np.arange(1, len(items) + 1), schema.ITEM_ROW: [list(ITEM_IDS).index(i) for i in items],
        schema.SPLIT: "train",
    }))


@pytest.fixture
def day(store):
    """Purchases on D1 (a, a, b) and D2 (c, d); after D2, u1 has a (3 days, last D2), b (1 day, 2010-12-30) and an
    item the version does not know; u2 has c (2 days, last D1); a catalog without c."""
    _examples(store, D1, ["a", "a", "b"])
    _examples(store, D2, ["c", "d"])
    store.write_parquet(f"features/dt={D2.isoformat()}/history.parquet", pd.DataFrame({
        schema.USER_ID: ["u1", "u1", "u1", "u2"], schema.ITEM_ID: ["a", "b", "z", "c"],
        "days": np.array([3, 1, 5, 2], np.int64), "last_day": ["2011-01-02", "2010-12-30", "2011-01-02", "2011-01-01"],
    }))
    for d in (D1, D2):
        store.mark_success(f"features/dt={d.isoformat()}")
    catalog = pd.DataFrame({schema.ITEM_ID: ["a", "b", "d", "e"], schema.TITLE: ["A", "B", "D", "E"],
                            schema.CATEGORY: None, schema.PRICE: [1.0, 10.0, 0.5, 2.0], schema.AVAILABLE: True})
    store.write_parquet(f"raw/catalog/dt={D2.isoformat()}/part-00000.parquet", catalog)
    store.mark_success(f"raw/catalog/dt={D2.isoformat()}")
    return store


@pytest.fixture
def inputs(day):
    # EASE^R with lambda 1 on the own items known before D3 (u1: a, b; u2: c): X^T X + I = [[2, 1, 0], [1, 2, 0],
    # [0, 0, 2]], P = its inverse, B_ab = B_ba = (1/3) / (2/3) = 0.5, every other weight 0
    return day_inputs(day, ITEM_IDS, ALLOWED, D3, ease_lambda=1.0)


def test_own_items_are_each_customers_known_items_most_recent_first():
    snapshot = pd.DataFrame({schema.USER_ID: ["u2", "u1", "u1", "u1"], schema.ITEM_ID: ["c", "b", "z", "a"],
                             "days": [2, 1, 5, 3],
                             "last_day": ["2011-01-01", "2010-12-30", "2011-01-02", "2011-01-02"]})
    own = own_items(snapshot, ITEM_IDS, D3)
    assert own.to_dict("list") == {"user_id": ["u1", "u1", "u2"], "row": [1, 2, 3], "days": [3.0, 1.0, 2.0],
                                   "age": [1.0, 4.0, 2.0], "recency": [0, 1, 0]}


def test_copurchase_is_the_cosine_of_the_items_customer_sets():
    own = pd.DataFrame({"user_id": ["A", "A", "B", "B", "B", "C"], "row": [1, 2, 1, 2, 3, 3]})
    cosine = copurchase_matrix(own, 4).toarray()
    # a and b: {A, B} both (2 / 2); a and c: {A, B} and {B, C} share B (1 / 2)
    np.testing.assert_allclose(cosine, [[0, 0, 0, 0], [0, 0, 1, 0.5], [0, 1, 0, 0.5], [0, 0.5, 0.5, 0]], rtol=1e-6)


def test_day_inputs_read_what_was_known_before_the_day(inputs):
    np.testing.assert_array_equal(inputs.allowed, ALLOWED)
    np.testing.assert_allclose(inputs.trend, np.log1p([0, 2, 1, 1, 1, 0]), rtol=1e-6)
    np.testing.assert_allclose(inputs.popularity, inputs.trend)
    # 1 + floor(4 ln(1 + price)): a 1.0 -> 3, b 10 -> 10, c no catalog entry -> 0, d 0.5 -> 2, e 2.0 -> 5
    assert inputs.price_band.tolist() == [0, 3, 10, 0, 2, 5]
    assert inputs.copurchase.toarray()[1, 2] == 1.0 and inputs.copurchase.nnz == 2


def test_candidates_are_the_union_of_retrieval_own_and_trending_items_in_retrieval_order(inputs):
    scores = FakeScorer().scores(["u1", "u2"])
    cands = generate(scores, ["u1", "u2"], inputs, n_retrieval=2, n_trending=1)
    # u1: retrieval a, c (e is delisted), own a, b, trending a; u2: retrieval b, d, own c, trending a
    assert cands.user.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert cands.row.tolist() == [1, 3, 2, 2, 4, 3, 1]
    np.testing.assert_allclose(cands.score, [0.9, 0.5, 0.1, 0.8, 0.6, 0.4, 0.2], rtol=1e-6)
    with pytest.raises(RankingError, match="scores are"):
        generate(scores[:, :3], ["u1", "u2"], inputs)


def test_features_have_the_hand_computed_values(inputs):
    users = ["u1", "u2"]
    cands = generate(FakeScorer().scores(users), users, inputs, n_retrieval=2, n_trending=1)
    x = build(cands, users, inputs)
    assert x.shape == (7, len(FEATURES)) and x.dtype == np.float32
    expected = dict.fromkeys(FEATURES, 0.0)
    # u1's b: scores .9 .5 .1 (mean .5, std sqrt(.32 / 3)); own: 1 day, 4 days ago, its second most recent item;
    # u1 has 2 own items, the last bought 1 day ago; recent items a, b: cos(b, a) = 1, cos(b, b) = 0, mean 0.5
    u1_b = {**expected, "retrieval_z": -0.4 / np.sqrt(0.32 / 3), "retrieval_rank": np.log(3), "own": 1.0,
            "own_days": np.log(2), "own_age": np.log(5), "own_recency": np.log(2), "user_items": np.log(3),
            "user_age": np.log(2), "trend": np.log(2), "popularity": np.log(2), "trend_lift": 0.0,
            "price_band": 10 / 31, "copurchase": 0.5, "weekday_0": 1.0,
            # EASE^R: u1's scores a 0.5, b 0.5 (B_ab, B_ba), c 0: b's z over (a .5, c 0, b .5) is (1/6) / sqrt(1/18);
            # b is second of the allowed rows by EASE^R (a ties it and comes first by row)
            "ease": 0.5, "ease_z": (1 / 6) / np.sqrt(1 / 18), "ease_rank": np.log(2)}
    np.testing.assert_allclose(x[2], [u1_b[f] for f in FEATURES], rtol=1e-5, atol=1e-7)
    # u2's a: scores .8 .6 .4 .2 (mean .5, std sqrt(.05)), not own; u2 has c, bought 2 days ago; cos(a, c) = 0
    u2_a = {**expected, "retrieval_z": -0.3 / np.sqrt(0.05), "retrieval_rank": np.log(4), "user_items": np.log(2),
            "user_age": np.log(3), "trend": np.log(3), "popularity": np.log(3), "price_band": 3 / 31,
            "weekday_0": 1.0, "ease_rank": np.log(5)}  # u2's only item c has no EASE^R weight: no score > 0 (4 allowed)
    np.testing.assert_allclose(x[6], [u2_a[f] for f in FEATURES], rtol=1e-5, atol=1e-7)
    # a new customer: no own features, user features 0
    new = generate(FakeScorer().scores(["u9"]), ["u9"], inputs, n_retrieval=1, n_trending=1)
    assert not build(new, ["u9"], inputs)[:, [COL[f] for f in ("own", "user_items", "user_age", "copurchase")]].any()


def test_labels_and_lists_keep_only_customers_who_bought_a_candidate(inputs):
    users = ["u1", "u2", "u9"]
    cands = generate(FakeScorer().scores(users), users, inputs, n_retrieval=2, n_trending=1)
    y = labels(cands, users, ITEM_IDS, [("u1", "b"), ("u2", "d"), ("u2", "zzz"), ("u4", "a")])
    assert y[cands.user == 0].tolist() == [0, 0, 1] and y[cands.user == 1].tolist() == [0, 1, 0, 0]
    assert not y[cands.user == 2].any()
    lists = to_lists(cands, build(cands, users, inputs), y)
    assert lists.features.shape == (2, 4, len(FEATURES))
    assert lists.labels.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    assert lists.mask.tolist() == [[True, True, True, False], [True] * 4]
    both = Lists.concat([lists, to_lists(cands, build(cands, users, inputs), y, positives_only=False)])
    assert both.features.shape == (5, 4, len(FEATURES))


def _toy_lists(n: int, seed: int) -> Lists:
    """Lists of 6 random candidates where the bought one is the customer's own item (feature ``own``)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, len(FEATURES))).astype(np.float32)
    x[:, :, COL["own"]] = 0.0
    bought = rng.integers(0, 6, n)
    x[np.arange(n), bought, COL["own"]] = 1.0
    y = np.zeros((n, 6), np.float32)
    y[np.arange(n), bought] = 1.0
    return Lists(x, y, np.ones((n, 6), bool))


def test_numpy_scores_are_the_keras_models():
    import tensorflow as tf

    model = build_model(len(FEATURES), seed=3)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in model.get_weights()])
    x = rng.normal(size=(5, len(FEATURES))).astype(np.float32)
    weights = RankerWeights.from_list(model.get_weights())
    np.testing.assert_allclose(weights.score(x), model(tf.constant(x[None]))[0].numpy(), rtol=1e-4, atol=1e-5)
    again = RankerWeights.from_bytes(weights.to_bytes())
    assert again.features == FEATURES
    np.testing.assert_array_equal(again.score(x), weights.score(x))
    with pytest.raises(RankingError, match="feature rows"):
        weights.score(x[:, :3])


def test_fit_learns_is_seeded_and_warm_starts_from_the_last_weights():
    train, test = _toy_lists(256, 0), _toy_lists(64, 1)
    first = fit(train, epochs=10, learning_rate=0.01, seed=7)
    again = fit(train, epochs=10, learning_rate=0.01, seed=7)
    assert [a.tobytes() for a in again.as_list()] == [a.tobytes() for a in first.as_list()]
    scores = first.score(test.features.reshape(-1, len(FEATURES))).reshape(64, 6)
    assert (scores.argmax(1) == test.labels.argmax(1)).mean() > 0.9  # chance: 1 / 6
    kept = fit(train, first, epochs=0, seed=8)  # a warm start keeps every weight
    assert all(np.array_equal(a, b) for a, b in zip(kept.as_list(), first.as_list(), strict=True))
    tuned = fit(_toy_lists(32, 2), first, epochs=1, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(tuned.as_list(), first.as_list(), strict=True))
    with pytest.raises(RankingError, match="no candidate list"):
        fit(Lists(np.zeros((0, 1, len(FEATURES)), np.float32), np.zeros((0, 1)), np.zeros((0, 1), bool)))


def test_both_stages_rank_a_tiny_day_and_train_on_it(inputs):
    users = ["u1", "u2", "u9"]
    first = rank(FakeScorer(), users, inputs, None, k=3, n_retrieval=2, n_trending=1)
    assert first.ranked[:2] == [["a", "c", "b"], ["b", "d", "c"]]  # no ranker: the retrieval order, top 3
    assert len(first.candidates) == len(first.features) == 7 + 2  # u9 (new): retrieval b, a; trending a
    y = labels(first.candidates, users, ITEM_IDS, [("u1", "b"), ("u2", "c")])
    ranker = fit(to_lists(first.candidates, first.features, y), epochs=30, learning_rate=0.05, seed=1)
    second = rank(FakeScorer(), users, inputs, ranker, k=3, n_retrieval=2, n_trending=1)
    # both bought items are the customers' own, ranked last by retrieval: the ranker puts them first
    assert second.ranked[0][0] == "b" and second.ranked[1][0] == "c"
    np.testing.assert_array_equal(second.features, first.features)  # one feature function for both paths


def test_own_of_looks_up_a_batch_of_customers_in_the_days_own_table(inputs):
    own = inputs.own_of(["u2", "nobody", "u1"])
    assert own["user"].tolist() == [0, 2, 2]
    assert own["row"].tolist() == [3, 1, 2] and own["age"].tolist() == [2.0, 1.0, 4.0]
    assert own["recency"].tolist() == [0, 0, 1]
    assert inputs.own_of(["nobody"])["row"].tolist() == []
    assert inputs.trending.tolist() == [1, 2, 3, 4]  # allowed rows by trend (a 2 purchases), ties by row


def test_ease_fit_by_hand_binary_and_capped():
    from recsys.ranking import ease

    # u1 bought a twice and b, u2 c: X^T X + I = [[2, 1, 0], [1, 2, 0], [0, 0, 2]]; B_ab = B_ba = 0.5
    fitted = ease.fit(np.array(["u1", "u1", "u1", "u2"], object), np.array([1, 1, 2, 3]), 6, regularisation=1.0)
    assert fitted.columns.tolist() == [1, 2, 3]
    np.testing.assert_allclose(fitted.weights, [[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]], atol=1e-7)
    # u1 (a, b) and a customer with an item EASE^R was not fitted on (row 5)
    scores = fitted.scores(np.array([0, 0, 1]), np.array([1, 2, 5]), 2, 6)
    np.testing.assert_allclose(scores, [[0, 0.5, 0.5, 0, 0, 0], [0] * 6], atol=1e-7)
    # at most 2 items: the two bought by the most customers (a by u1, u2, u3; b by u1, u2; c by u3)
    capped = ease.fit(np.array(["u1", "u1", "u2", "u2", "u3", "u3"], object), np.array([1, 2, 1, 2, 1, 3]), 4,
                      regularisation=1.0, max_items=2)
    assert capped.columns.tolist() == [1, 2]
    # the same weights as the closed form the replay benchmark's anchors use on that matrix
    np.testing.assert_allclose(capped.weights, ease.ease_weights(np.array([[1, 1], [1, 1], [1, 0]]), 1.0), rtol=1e-6)
    assert ease.fit(np.zeros(0, object), np.zeros(0, np.int64), 4).scores(np.zeros(0, np.int64), np.zeros(0, np.int64),
                                                                         1, 4).tolist() == [[0, 0, 0, 0]]


def test_ease_is_fitted_on_what_was_known_before_the_day(day):
    # the ranked day's own snapshot (u2 buys a on D3) must not change the weights used to rank D3
    day.write_parquet(f"features/dt={D3.isoformat()}/history.parquet", pd.DataFrame({
        schema.USER_ID: ["u1", "u1", "u2", "u2"], schema.ITEM_ID: ["a", "b", "c", "a"],
        "days": np.array([3, 1, 2, 1], np.int64), "last_day": ["2011-01-02", "2010-12-30", "2011-01-01", "2011-01-03"],
    }))
    day.mark_success(f"features/dt={D3.isoformat()}")
    inputs = day_inputs(day, ITEM_IDS, ALLOWED, D3, ease_lambda=1.0)
    np.testing.assert_allclose(inputs.ease.weights, [[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(inputs.ease_scores(["u1", "u2", "u9"]),
                               [[0, 0.5, 0.5, 0, 0, 0], [0] * 6, [0] * 6], atol=1e-7)


def test_ease_adds_candidates_beyond_retrieval_own_and_trending(inputs):
    from dataclasses import replace

    from recsys.ranking import ease

    # u1 bought a and b, u2 a: X^T X + I = [[3, 1], [1, 2]], P = [[2, -1], [-1, 3]] / 5, B_ab = (1/5) / (3/5) = 1/3
    own = own_items(pd.DataFrame({schema.USER_ID: ["u1", "u1", "u2"], schema.ITEM_ID: ["a", "b", "a"],
                                  "days": [1, 1, 1], "last_day": ["2011-01-02"] * 3}), ITEM_IDS, D3)
    fitted = ease.fit(own["user_id"].to_numpy(object), own["row"].to_numpy(), len(ITEM_IDS), regularisation=1.0)
    day = replace(inputs, own=own, ease=fitted)
    assert day.ease_scores(["u2"])[0, 2] == pytest.approx(1 / 3)
    scores = FakeScorer().scores(["u2"])
    # u2: retrieval's best b... is also EASE^R's; with d instead first by retrieval, b comes from EASE^R only
    scores[0, 2] = -1.0
    plain = generate(scores, ["u2"], day, n_retrieval=1, n_trending=0, n_ease=0)
    assert plain.row.tolist() == [4, 1]  # retrieval d, own a
    both = generate(scores, ["u2"], day, n_retrieval=1, n_trending=0, n_ease=1)
    assert both.row.tolist() == [4, 1, 2]  # ... and EASE^R's b (in retrieval order)
    x = build(both, ["u2"], day)
    np.testing.assert_allclose(x[:, COL["ease"]], [0, 0, 1 / 3], rtol=1e-6)
    # a is u2's own item: EASE^R's diagonal is 0, so only b has a positive score (first of 4 allowed rows)
    np.testing.assert_allclose(x[:, COL["ease_rank"]], [np.log(5), np.log(5), 0.0], rtol=1e-6)


def test_features_of_a_batch_are_those_of_single_requests(inputs):
    # training builds the rows of a day's customers in blocks; serving builds one customer's per request
    users = ["u1", "u2", "u9"]
    batch = rank(FakeScorer(), users, inputs, None, k=3, n_retrieval=2, n_trending=1, n_ease=2)
    single = []
    for user in users:
        cands = generate(FakeScorer().scores([user]), [user], inputs, n_retrieval=2, n_trending=1, n_ease=2)
        single.append(build(cands, [user], inputs))
    np.testing.assert_array_equal(batch.features, np.concatenate(single))
    one_block = rank(FakeScorer(), users, inputs, None, k=3, n_retrieval=2, n_trending=1, n_ease=2, block=2)
    np.testing.assert_array_equal(one_block.features, batch.features)


def test_a_checkpoint_from_before_new_features_keeps_every_weight_and_its_scores():
    rng = np.random.default_rng(5)
    old_features = tuple(f for f in FEATURES if not f.startswith("ease"))
    f, (h1, h2) = len(old_features), HIDDEN
    shapes = ((f, f), (f,), (f, h1), (h1,), (h1, h2), (h2,), (h2, 1), (1,))
    arrays = [rng.normal(scale=0.3, size=s).astype(np.float32) for s in shapes]
    old = RankerWeights.from_list(arrays, old_features)
    grown = old.grown(FEATURES)
    at = [FEATURES.index(name) for name in old_features]
    np.testing.assert_array_equal(grown.cross_kernel[np.ix_(at, at)], old.cross_kernel)
    np.testing.assert_array_equal(grown.dense[0][0][at], old.dense[0][0])
    assert all(np.array_equal(a, b) for a, b in zip(grown.as_list()[3:], old.as_list()[3:], strict=True))
    x = rng.normal(size=(7, len(FEATURES))).astype(np.float32)
    np.testing.assert_allclose(grown.score(x), old.score(x[:, at]), rtol=1e-5, atol=1e-5)
    kept = fit(_toy_lists(8, 0), old, epochs=0, seed=1)  # the fine-tune's warm start is the grown checkpoint
    assert all(np.array_equal(a, b) for a, b in zip(kept.as_list(), grown.as_list(), strict=True))
    with pytest.raises(RankingError, match="lacks"):
        grown.grown(old_features)
