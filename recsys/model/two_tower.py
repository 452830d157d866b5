"""The TFRS two-tower retrieval model, its factory, and warm start across vocabulary growth."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys import schema
from recsys.model.towers import id_tower

ITEM_PROB = "item_prob"  # feature: the example's item share of the training examples (logQ correction)

# Keras' default Embedding initializer is uniform(-0.05, 0.05); new rows of a grown table use the same.
INIT_SCALE = 0.05


class TwoTowerModel(tfrs.Model):
    """Query tower (user), candidate tower (item), and an in-batch softmax retrieval task.

    In-batch negatives are drawn in proportion to item popularity, which over-penalises popular
    items; when the features carry ``item_prob`` (the item's share of the training examples), the
    task applies the logQ correction (subtracts log(prob) from each logit), as in Yi et al. 2019.
    """

    def __init__(self, query_tower: tf.keras.Model, candidate_tower: tf.keras.Model) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        queries = self.query_tower(features[schema.USER_ROW])
        candidates = self.candidate_tower(features[schema.ITEM_ROW])
        return self.task(
            queries, candidates, compute_metrics=not training,
            candidate_sampling_probability=features.get(ITEM_PROB),
        )


def build_model(user_rows: int, item_rows: int, dim: int) -> TwoTowerModel:
    """A fresh model for vocabularies of ``user_rows`` and ``item_rows`` rows (OOV row included)."""
    model = TwoTowerModel(id_tower(user_rows, dim, "query"), id_tower(item_rows, dim, "candidate"))
    # create the variables now so tables can be read and set before training
    model.query_tower(tf.zeros([1], tf.int64))
    model.candidate_tower(tf.zeros([1], tf.int64))
    return model


def get_tables(model: TwoTowerModel) -> dict[str, np.ndarray]:
    """The embedding tables: ``user`` [user_rows, dim] and ``item`` [item_rows, dim], float32."""
    return {
        "user": model.query_tower.get_weights()[0],
        "item": model.candidate_tower.get_weights()[0],
    }


def set_tables(model: TwoTowerModel, tables: dict[str, np.ndarray]) -> None:
    model.query_tower.set_weights([tables["user"]])
    model.candidate_tower.set_weights([tables["item"]])


def sampling_probability(item_rows: np.ndarray, rows: int) -> np.ndarray:
    """Each example's item share of the examples (add-one smoothed over ``rows`` items), float32."""
    counts = np.bincount(item_rows, minlength=rows).astype(np.float64) + 1.0
    return (counts / counts.sum())[item_rows].astype(np.float32)


def grow_table(old: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``old`` extended to ``rows`` rows: old rows kept bit for bit, new rows freshly initialised."""
    if rows < old.shape[0]:
        raise ValueError(f"a vocabulary never shrinks: table has {old.shape[0]} rows, asked for {rows}")
    rng = np.random.default_rng(seed)
    new = rng.uniform(-INIT_SCALE, INIT_SCALE, size=(rows - old.shape[0], old.shape[1])).astype(old.dtype)
    return np.concatenate([old, new], axis=0)
