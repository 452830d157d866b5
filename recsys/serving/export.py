"""Export a version as a SavedModel with a serving signature (TensorFlow Serving layout).

The signature ``serving_default`` takes ``user_id`` (string, [batch]) and returns ``item_ids``
(string, [batch, k]) and ``scores`` (float32, [batch, k]). It scores as the model does (see
:mod:`recsys.serving.index`): the user's row (OOV for unknown users) plus the mean of their recent
items, dotted with every candidate vector, plus the item bias and the repeat term (over the whole
stored history; the query's mean over its first ``query_length`` items). The customers' past items
are those known at export time (the version's deploy), baked into the SavedModel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from recsys.serving.index import Scorer


class _Recommender(tf.Module):
    def __init__(self, scorer: Scorer, served_rows: list[int], k: int) -> None:
        super().__init__()
        users = [u for u, r in scorer.user_rows.items() if r < len(scorer.user_table)]
        with_history = sorted(scorer.histories)
        length = max([len(scorer.history(u)[0]) for u in with_history], default=0) or 1
        hist_rows = np.zeros((len(with_history) + 1, length), np.int64)  # row 0: no history
        hist_days = np.zeros((len(with_history) + 1, length), np.float32)
        for n, user in enumerate(with_history, start=1):
            rows, days = scorer.history(user)
            hist_rows[n, : len(rows)] = rows
            hist_days[n, : len(rows)] = days
        served = np.full(len(scorer.item_table), -np.inf, np.float32)
        served[served_rows] = 0.0
        self.user_table = tf.Variable(scorer.user_table, trainable=False)
        self.item_table = tf.Variable(scorer.item_table, trainable=False)
        self.history_table = tf.Variable(scorer.history_table, trainable=False)
        self.item_bias = tf.Variable(scorer.item_bias.astype(np.float32) + served, trainable=False)
        self.item_ids = tf.Variable([str(i) for i in scorer.item_ids], trainable=False)
        self.hist_rows = tf.Variable(hist_rows, trainable=False)
        self.hist_days = tf.Variable(hist_days, trainable=False)
        self.repeat_weight = tf.Variable(scorer.repeat_weight, trainable=False)
        self.history_weight = tf.Variable(scorer.history_weight, trainable=False)
        self.user_lookup = _table(users, [scorer.user_rows[u] for u in users])
        self.history_lookup = _table(with_history, list(range(1, len(with_history) + 1)))
        self.query_length = min(scorer.query_length or length, length)
        self.k = min(k, len(served_rows))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.gather(self.hist_rows, self.history_lookup.lookup(user_id))  # [B, H]
        days = tf.gather(self.hist_days, self.history_lookup.lookup(user_id))
        query_rows = rows[:, : self.query_length]
        mask = tf.cast(query_rows > 0, tf.float32)[..., None]
        recent = (tf.reduce_sum(tf.gather(self.history_table, query_rows) * mask, 1)
                  / tf.maximum(tf.reduce_sum(mask, 1), 1.0))
        queries = tf.gather(self.user_table, self.user_lookup.lookup(user_id)) + self.history_weight * recent
        scores = tf.matmul(queries, self.item_table, transpose_b=True) + self.item_bias[None, :]
        bonus = self.repeat_weight * tf.math.log1p(days) * tf.cast(rows > 0, tf.float32)
        scores += tf.reduce_sum(tf.one_hot(rows, tf.shape(self.item_table)[0]) * bonus[..., None], 1)
        best, found = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.item_ids, found), "scores": best}


def _table(keys: list[str], values: list[int]) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys or [""], tf.string),
                                            tf.constant(values or [0], tf.int64)),
        default_value=0,
    )


def export_saved_model(scorer: Scorer, served_rows: list[int], out_dir: Path, k: int) -> None:
    """Write a SavedModel into ``out_dir`` (``saved_model.pb`` + ``variables/``).

    Only the item rows in ``served_rows`` (the serving index: known and available items, never the
    OOV row 0) can be returned.
    """
    if not served_rows or 0 in served_rows:
        raise ValueError("served_rows must be non-empty and must not contain the OOV row 0")
    module = _Recommender(scorer, served_rows, k)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
