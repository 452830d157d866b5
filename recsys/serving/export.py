"""Export a version as a SavedModel with a serving signature (TensorFlow Serving layout).

The signature ``serving_default`` takes ``user_id`` (string, [batch]) and returns ``item_ids``
(string, [batch, k]) and ``scores`` (float32, [batch, k]). It scores as the model does (see
:mod:`recsys.serving.index`): the user's row (OOV for unknown users) plus the mean of their recent
items, dotted with every candidate vector, plus the item bias and the repeat term (over the whole
stored history; the query's mean over its first ``query_length`` items). The customers' past items
are those known at export time (the version's deploy), baked into the SavedModel. The signature
``with_session`` also takes ``session_item_ids`` (string, [batch, S], "" padding): each customer's
session items (viewed or carted today and not bought since, most recent first, as the live state holds
them), scored with the version's session term (:mod:`recsys.model.session`).

Sizes: the past items are stored flat (CSR: every customer's items back to back, ``hist_offsets``
[customers + 2] into them), so they cost their number, not customers x the longest history. Every
table, the id lookups included, lives in the checkpoint (``variables/``), never as a constant in the
graph: ``saved_model.pb`` stays a few hundred KB however many customers, far from protobuf's 2 GB
limit. A request gathers only its customers' own items: the repeat term is a scatter-add of at most
``repeat_length`` bonuses per customer into the [batch, items] scores (no [batch, history, items] tensor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from recsys.serving.index import Scorer


def history_arrays(scorer: Scorer) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(customer ids as UTF-8 bytes, offsets [n + 2] int64, item rows [total] int32, days [total] float32).

    Customer ``ids[h - 1]`` has index h (1..n; 0: no history) and owns entries
    ``offsets[h]:offsets[h + 1]``, most recent first; ``offsets[0] = offsets[1] = 0``. The scorer's
    histories are already one CSR table (:class:`~recsys.serving.ids.IdLists`): nothing per customer is built.
    """
    table = scorer.histories
    rows, days = table.columns
    offsets = np.concatenate([[0], table.offsets]).astype(np.int64)
    return table.id_bytes, offsets, rows.astype(np.int32, copy=False), days.astype(np.float32, copy=False)


class _Recommender(tf.Module):
    def __init__(self, scorer: Scorer, served_rows: list[int], k: int) -> None:
        super().__init__()
        users = scorer.user_rows
        known = users.targets < len(scorer.user_table)
        hist_ids, offsets, hist_rows, hist_days = history_arrays(scorer)
        longest = int(np.diff(offsets).max(initial=0))
        served = np.full(len(scorer.item_table), -np.inf, np.float32)
        served[served_rows] = 0.0
        self.user_table = _variable(scorer.user_table)
        self.item_table = _variable(scorer.item_table)
        self.history_table = _variable(scorer.history_table)
        self.item_bias = tf.Variable(scorer.item_bias.astype(np.float32) + served, trainable=False)
        self.item_ids = tf.Variable(np.asarray(scorer.item_ids, dtype=object).astype(str), trainable=False)
        self.hist_offsets = tf.Variable(offsets, trainable=False)
        self.hist_rows = tf.Variable(hist_rows, trainable=False)
        self.hist_days = tf.Variable(hist_days, trainable=False)
        self.repeat_weight = tf.Variable(scorer.repeat_weight, trainable=False)
        self.history_weight = tf.Variable(scorer.history_weight, trainable=False)
        self.session_weight = tf.Variable(scorer.session_weight, trainable=False)
        self.session_query_weight = tf.Variable(scorer.session_query_weight, trainable=False)
        named = np.flatnonzero(np.asarray(scorer.item_ids, dtype=object).astype(str) != "")
        named = named[named > 0]
        self.item_lookup = _table(np.asarray(scorer.item_ids, dtype=object)[named].astype(str), named)
        self.user_lookup = _table(users.id_bytes[known], users.targets[known])
        self.history_lookup = _table(hist_ids, np.arange(1, len(hist_ids) + 1))
        self.query_length = int(scorer.query_length if scorer.query_length is not None else max(longest, 1))
        self.session_length = int(scorer.query_length if scorer.query_length is not None else np.iinfo(np.int32).max)
        self.k = min(k, len(served_rows))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top_k(self._scores(user_id))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None, None], tf.string, name="session_item_ids")])
    def serve_session(self, user_id: tf.Tensor, session_item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """``serve`` with each customer's session items ([batch, S], most recent first, "" = padding): the
        session term of :mod:`recsys.model.session` (its query part over the first ``query_length`` of them)."""
        scores = self._scores(user_id)
        rows = tf.reshape(self.item_lookup.lookup(tf.reshape(session_item_ids, [-1])), tf.shape(session_item_ids))
        rows = tf.cast(rows, tf.int32)  # [B, S], 0: padding or an unknown item
        known = rows > 0
        # the first query_length known items of each row (as Scorer.session_query cuts them)
        rank = tf.cumsum(tf.cast(known, tf.int32), axis=1, exclusive=True)
        first = tf.cast(known & (rank < self.session_length), tf.float32)[..., None]
        mean = tf.reduce_sum(tf.gather(self.history_table, rows) * first, 1) / tf.maximum(tf.reduce_sum(first, 1), 1.0)
        scores += self.session_query_weight * tf.matmul(mean, self.item_table, transpose_b=True)
        at = tf.where(known)  # [n, 2] (batch row, position)
        hits = tf.stack([tf.cast(at[:, 0], tf.int32), tf.gather_nd(rows, at)], axis=1)
        marked = tf.tensor_scatter_nd_max(tf.zeros_like(scores), hits, tf.ones(tf.shape(hits)[:1], tf.float32))
        return self._top_k(scores + self.session_weight * marked)

    def _top_k(self, scores: tf.Tensor) -> dict[str, tf.Tensor]:
        best, found = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.item_ids, found), "scores": best}

    def _scores(self, user_id: tf.Tensor) -> tf.Tensor:
        """[B, I] scores without the session term (the served mask in the bias)."""
        batch = tf.shape(user_id)[0]
        index = tf.reshape(self.history_lookup.lookup(user_id), [-1])  # [B] 0: no history
        starts = tf.gather(self.hist_offsets, index)
        entries = tf.ragged.range(starts, tf.gather(self.hist_offsets, index + 1))  # [B, (own items)]
        flat = tf.reshape(entries.flat_values, [-1])  # positions into hist_rows / hist_days
        owner = tf.reshape(tf.cast(entries.value_rowids(), tf.int32), [-1])  # the batch row of each entry
        rows = tf.gather(self.hist_rows, flat)
        # query: the mean of the first query_length own items (most recent first), 0 for none
        first = (flat - tf.gather(starts, owner)) < self.query_length
        query_rows, query_owner = tf.boolean_mask(rows, first), tf.boolean_mask(owner, first)
        total = tf.math.unsorted_segment_sum(tf.gather(self.history_table, query_rows), query_owner, batch)
        count = tf.math.unsorted_segment_sum(tf.ones_like(query_owner, tf.float32), query_owner, batch)
        recent = total / tf.maximum(count, 1.0)[:, None]
        user_rows = tf.reshape(self.user_lookup.lookup(user_id), [-1])
        queries = tf.gather(self.user_table, user_rows) + self.history_weight * recent
        scores = tf.matmul(queries, self.item_table, transpose_b=True) + self.item_bias[None, :]
        # repeat term: one bonus per own item, added at (batch row, item row)
        bonus = self.repeat_weight * tf.math.log1p(tf.gather(self.hist_days, flat))
        return tf.tensor_scatter_nd_add(scores, tf.stack([owner, rows], axis=1), bonus)


_CHUNK = 1 << 18  # ids inserted / table rows assigned at once: bounds the temporary tensors


def _variable(array: np.ndarray) -> tf.Variable:
    """A float32 variable holding ``array`` [N, d], filled a chunk of rows at a time (one copy of the table in
    TensorFlow, not a constant plus a variable)."""
    array = np.asarray(array, np.float32)
    if len(array) <= _CHUNK:
        return tf.Variable(array, trainable=False)
    variable = tf.Variable(tf.zeros(array.shape, tf.float32), trainable=False)
    for start in range(0, len(array), _CHUNK):
        variable[start: start + _CHUNK].assign(array[start: start + _CHUNK])
    return variable


def _table(keys: np.ndarray, values: np.ndarray) -> tf.lookup.experimental.MutableHashTable:
    """id -> int64 (default 0); a mutable table is saved in the checkpoint, not as a graph constant.

    ``keys`` are UTF-8 bytes (an ``S<w>`` array), inserted a chunk at a time as Python bytes (numpy's padding
    stripped), so no Python object per id exists at once beyond a chunk's."""
    table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=0)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start: start + _CHUNK]
        table.insert(tf.constant(chunk.tolist() if chunk.dtype.kind == "S" else chunk.astype(str), tf.string),
                     tf.constant(values[start: start + _CHUNK], tf.int64))
    return table


def export_saved_model(scorer: Scorer, served_rows: list[int], out_dir: Path, k: int) -> None:
    """Write a SavedModel into ``out_dir`` (``saved_model.pb`` + ``variables/``).

    Only the item rows in ``served_rows`` (the serving index: known and available items, never the
    OOV row 0) can be returned.
    """
    if not served_rows or 0 in served_rows:
        raise ValueError("served_rows must be non-empty and must not contain the OOV row 0")
    module = _Recommender(scorer, served_rows, k)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve,
                                                          "with_session": module.serve_session})
