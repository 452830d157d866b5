"""recsys.model.two_tower: the TFRS model, its tables, and warm start across vocabulary growth."""

from __future__ import annotations

import numpy as np
import pytest

from recsys import schema

pytestmark = pytest.mark.slow  # imports TensorFlow


@pytest.fixture(scope="module")
def tt():
    from recsys.model import two_tower

    return two_tower


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


OLD = np.arange(12, dtype=np.float32).reshape(3, 4) / 100  # 3 rows x dim 4, all inside +-0.12


def test_grow_table_keeps_old_rows_bit_for_bit(tt):
    grown = tt.grow_table(OLD, 5, seed=7)
    assert grown.shape == (5, 4)
    assert grown.dtype == np.float32
    assert np.array_equal(grown[:3], OLD)
    assert np.all(np.abs(grown[3:]) <= tt.INIT_SCALE)
    assert not np.array_equal(grown[3:], np.zeros((2, 4), np.float32))


def test_grow_table_new_rows_depend_only_on_the_seed(tt):
    assert np.array_equal(tt.grow_table(OLD, 6, seed=1), tt.grow_table(OLD.copy(), 6, seed=1))
    assert not np.array_equal(tt.grow_table(OLD, 6, seed=1)[3:], tt.grow_table(OLD, 6, seed=2)[3:])


def test_grow_table_to_the_same_size_is_a_copy(tt):
    assert np.array_equal(tt.grow_table(OLD, 3, seed=0), OLD)


def test_grow_table_refuses_to_shrink(tt):
    with pytest.raises(ValueError, match="a vocabulary never shrinks: table has 3 rows, asked for 2"):
        tt.grow_table(OLD, 2, seed=0)


def test_build_model_has_tables_of_the_vocabulary_sizes(tt):
    model = tt.build_model(user_rows=5, item_rows=7, dim=8)
    tables = tt.get_tables(model)
    assert tables["user"].shape == (5, 8)
    assert tables["item"].shape == (7, 8)
    assert tables["item_bias"].shape == (7,)
    assert tables["item_words"].shape == (7, 8)
    assert tables["user"].dtype == np.float32
    assert np.all(np.abs(tables["item"]) <= 0.05)  # Keras' default uniform initialiser
    assert not tables["item_bias"].any()
    assert float(tables["repeat_weight"]) == 1.0


def test_item_features_must_cover_the_item_rows(tt):
    with pytest.raises(ValueError, match="item features must cover the 4 item rows"):
        tt.build_model(3, 4, 8, item_words=np.zeros((3, 8), np.int32), item_price=np.zeros(4, np.int32))


def _random_tables(tt, users: int, items: int, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    model = tt.build_model(users, items, dim, _words(items, seed), rng.integers(0, 32, items).astype(np.int32))
    tables = tt.get_tables(model)
    for name in ("user", "item", "word", "price", "item_bias"):
        tables[name] = rng.normal(size=tables[name].shape).astype(np.float32)
    tables["repeat_weight"] = np.float32(0.7)
    return tables


def _words(items: int, seed: int) -> np.ndarray:
    words = np.random.default_rng(seed).integers(1, 100, size=(items, 8)).astype(np.int32)
    words[0] = 0  # the OOV row has no title
    words[:, 5:] = 0  # short titles
    return words


def _full_scores(model, tf, users, hist, days):
    """The model's score of every item for each (user, history): as in compute_loss."""
    items = tf.range(len(model.item_words.numpy()), dtype=tf.int64)
    scores = model.query_vectors(users, hist).numpy() @ model.candidate_vectors(items).numpy().T
    scores += model.item_bias(items).numpy()[:, 0][None, :]
    for n in range(len(hist)):
        for r, d in zip(hist[n].numpy(), days[n], strict=True):
            if r > 0:
                scores[n, r] += float(model.repeat_weight.numpy()) * np.log1p(d)
    return scores


def test_set_tables_then_get_tables_roundtrip(tt):
    tables = _random_tables(tt, 4, 6, 3)
    model = tt.build_model(4, 6, 3, tables["item_words"], tables["item_price"])
    tt.set_tables(model, tables)
    back = tt.get_tables(model)
    assert sorted(back) == sorted(tables)
    for name, table in tables.items():
        assert np.array_equal(back[name], table), name


def test_growing_keeps_every_old_row_and_every_old_score_before_training_resumes(tt, tf):
    old = _random_tables(tt, 3, 4, 8)
    old_model = tt.build_model(3, 4, 8, old["item_words"], old["item_price"])
    tt.set_tables(old_model, old)
    users = tf.constant([0, 1, 2], tf.int64)
    hist = tf.constant([[1, 2], [3, 0], [0, 0]], tf.int64)
    days = np.array([[2, 1], [1, 0], [0, 0]], np.float32)
    before = _full_scores(old_model, tf, users, hist, days)

    grown = tt.grow_tables(old, user_rows=6, item_rows=9, seed=1)
    for name in ("user", "item", "item_bias"):
        assert np.array_equal(grown[name][: len(old[name])], old[name]), name  # bit for bit
    assert not grown["item_bias"][4:].any()
    words = np.concatenate([old["item_words"], _words(5, 9)])  # the new items' titles
    price = np.concatenate([old["item_price"], np.ones(5, np.int32)])
    new_model = tt.build_model(6, 9, 8, words, price)  # the vocabularies grew
    tt.set_tables(new_model, grown)
    after = _full_scores(new_model, tf, users, hist, days)
    assert np.array_equal(after[:, :4], before)  # old users x old items: identical scores
    assert new_model.query_vectors(tf.constant([5], tf.int64), tf.constant([[8]], tf.int64)).shape == (1, 8)


def test_compute_loss_is_a_finite_positive_scalar(tt, tf):
    model = tt.build_model(4, 4, 8)
    model.repeat_weight.assign(0.0)
    features = {
        schema.USER_ROW: tf.constant([1, 2, 3], tf.int64), schema.ITEM_ROW: tf.constant([1, 2, 3], tf.int64),
        tt.HIST_ROWS: tf.zeros([3, 2], tf.int64), tt.HIST_DAYS: tf.zeros([3, 2], tf.float32),
    }
    loss = float(model.compute_loss(features, training=True))
    # mean in-batch softmax loss over 3 candidates with near-zero initial scores: about ln(3)
    assert np.isfinite(loss)
    assert loss == pytest.approx(np.log(3), rel=0.05)


def test_the_repeat_term_lowers_the_loss_when_the_bought_item_is_in_the_history(tt, tf):
    model = tt.build_model(4, 4, 8)
    base = {schema.USER_ROW: tf.constant([1, 2, 3], tf.int64), schema.ITEM_ROW: tf.constant([1, 2, 3], tf.int64),
            tt.HIST_DAYS: tf.constant([[3.0], [3.0], [3.0]])}
    repeat = float(model.compute_loss(base | {tt.HIST_ROWS: tf.constant([[1], [2], [3]], tf.int64)}))
    other = float(model.compute_loss(base | {tt.HIST_ROWS: tf.constant([[2], [3], [1]], tf.int64)}))
    assert repeat < np.log(3) < other


def test_a_new_item_with_a_title_lands_near_items_with_similar_titles(tt, tf):
    """Trained on customers who buy either 'red' or 'blue' titled items; a new, never bought item titled
    like the red ones is closer to them, and red buyers score it above blue buyers."""
    red, blue = [1, 2, 3, 4], [5, 6, 7, 8]
    words = np.zeros((10, 8), np.int32)
    for r in red:
        words[r, :3] = [11, 12, 20 + r]  # "red heart <own word>"
    for b in blue:
        words[b, :3] = [31, 32, 40 + b]  # "blue star <own word>"
    rng = np.random.default_rng(0)
    users = rng.integers(1, 41, 4000)  # users 1..20 buy red, 21..40 blue
    items = np.where(users <= 20, rng.choice(red, 4000), rng.choice(blue, 4000))
    tf.keras.utils.set_random_seed(0)
    model = tt.build_model(41, 10, 16, words, np.zeros(10, np.int32))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.2))
    data = {schema.USER_ROW: users, schema.ITEM_ROW: items, tt.HIST_ROWS: np.zeros((4000, 1), np.int64),
            tt.HIST_DAYS: np.zeros((4000, 1), np.float32)}
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=3, verbose=0)

    grown = tt.grow_tables(tt.get_tables(model), 41, 11, seed=3)
    words = np.concatenate([words, [[11, 12, 99, 0, 0, 0, 0, 0]]]).astype(np.int32)  # new item 10: "red heart lamp"
    new_model = tt.build_model(41, 11, 16, words, np.zeros(11, np.int32))
    tt.set_tables(new_model, grown)
    vectors = new_model.candidate_vectors(tf.range(11, dtype=tf.int64)).numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    to_red, to_blue = unit[red] @ unit[10], unit[blue] @ unit[10]
    assert to_red.mean() > to_blue.mean() + 0.3
    scores = new_model.query_vectors(tf.range(1, 41, dtype=tf.int64), tf.zeros([40, 1], tf.int64)).numpy() @ vectors[10]
    assert scores[:20].mean() > scores[20:].mean()


def test_sampling_probability_is_the_smoothed_item_share():
    from recsys.model import two_tower

    # rows 0..3, examples on items [1, 1, 2]: counts+1 = [1, 3, 2, 1] over 7 -> 3/7, 3/7, 2/7
    probs = two_tower.sampling_probability(np.array([1, 1, 2]), rows=4)
    assert probs.dtype == np.float32
    assert np.allclose(probs, [3 / 7, 3 / 7, 2 / 7])
