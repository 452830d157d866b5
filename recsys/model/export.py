"""Export a version as a SavedModel with a serving signature (TensorFlow Serving layout).

The signature ``serving_default`` takes ``user_id`` (string, [batch]) and returns ``item_ids``
(string, [batch, k]) and ``scores`` (float32, [batch, k]); unknown users use the OOV row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf


class _Recommender(tf.Module):
    def __init__(self, user_table: np.ndarray, item_table: np.ndarray, user_ids: list[str],
                 user_rows: list[int], item_ids: list[str], served_rows: list[int], k: int) -> None:
        super().__init__()
        self.user_table = tf.Variable(user_table, trainable=False)
        self.item_table = tf.Variable(item_table[served_rows], trainable=False)
        self.item_ids = tf.Variable([item_ids[r] for r in served_rows], trainable=False)
        self.lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(user_ids, tf.string), tf.constant(user_rows, tf.int64)
            ),
            default_value=0,
        )
        self.k = min(k, len(served_rows))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        queries = tf.gather(self.user_table, self.lookup.lookup(user_id))
        scores, rows = tf.math.top_k(tf.matmul(queries, self.item_table, transpose_b=True), k=self.k)
        return {"item_ids": tf.gather(self.item_ids, rows), "scores": scores}


def export_saved_model(tables: dict[str, np.ndarray], user_rows: dict[str, int], item_ids: list[str],
                       served_rows: list[int], out_dir: Path, k: int) -> None:
    """Write a SavedModel into ``out_dir`` (``saved_model.pb`` + ``variables/``).

    Only the item rows in ``served_rows`` (the serving index: known and available items, never the
    OOV row 0) can be returned.
    """
    if not served_rows or 0 in served_rows:
        raise ValueError("served_rows must be non-empty and must not contain the OOV row 0")
    ids = [u for u, r in user_rows.items() if r < len(tables["user"])]
    module = _Recommender(
        tables["user"], tables["item"], ids, [user_rows[u] for u in ids], item_ids, served_rows, k
    )
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
