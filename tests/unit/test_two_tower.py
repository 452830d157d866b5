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
    assert tables["user"].dtype == np.float32
    assert np.all(np.abs(tables["item"]) <= 0.05)  # Keras' default uniform initialiser


def test_set_tables_then_get_tables_roundtrip(tt):
    rng = np.random.default_rng(0)
    tables = {"user": rng.normal(size=(4, 3)).astype(np.float32), "item": rng.normal(size=(6, 3)).astype(np.float32)}
    model = tt.build_model(4, 6, 3)
    tt.set_tables(model, tables)
    back = tt.get_tables(model)
    assert np.array_equal(back["user"], tables["user"])
    assert np.array_equal(back["item"], tables["item"])


def test_scores_of_known_ids_survive_growth_and_restore(tt, tf):
    old_model = tt.build_model(3, 4, 8)
    old = tt.get_tables(old_model)
    users, items = tf.constant([0, 1, 2], tf.int64), tf.constant([0, 1, 2, 3], tf.int64)
    before = old_model.query_tower(users).numpy() @ old_model.candidate_tower(items).numpy().T

    new_model = tt.build_model(6, 9, 8)  # the vocabularies grew
    tt.set_tables(new_model, {"user": tt.grow_table(old["user"], 6, 1), "item": tt.grow_table(old["item"], 9, 2)})
    after = new_model.query_tower(users).numpy() @ new_model.candidate_tower(items).numpy().T
    assert np.array_equal(after, before)
    assert new_model.query_tower(tf.constant([5], tf.int64)).shape == (1, 8)


def test_compute_loss_is_a_finite_positive_scalar(tt, tf):
    model = tt.build_model(4, 4, 8)
    features = {schema.USER_ROW: tf.constant([1, 2, 3], tf.int64), schema.ITEM_ROW: tf.constant([1, 2, 3], tf.int64)}
    loss = float(model.compute_loss(features, training=True))
    # in-batch softmax over 3 candidates with near-zero initial scores: about 3 * ln(3) summed
    assert np.isfinite(loss)
    assert loss == pytest.approx(3 * np.log(3), rel=0.05)


def test_id_tower_maps_rows_to_vectors(tf):
    from recsys.model.towers import id_tower

    tower = id_tower(rows=5, dim=3, name="query")
    assert tower.name == "query"
    assert tower(tf.constant([0, 4], tf.int64)).shape == (2, 3)


def test_sampling_probability_is_the_smoothed_item_share():
    from recsys.model import two_tower

    # rows 0..3, examples on items [1, 1, 2]: counts+1 = [1, 3, 2, 1] over 7 -> 3/7, 3/7, 2/7
    probs = two_tower.sampling_probability(np.array([1, 1, 2]), rows=4)
    assert probs.dtype == np.float32
    assert np.allclose(probs, [3 / 7, 3 / 7, 2 / 7])
