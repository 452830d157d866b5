"""Query and candidate towers: small Keras models mapping a vocabulary row to a vector."""

from __future__ import annotations

import tensorflow as tf


def id_tower(rows: int, dim: int, name: str) -> tf.keras.Model:
    """An embedding table of ``rows`` x ``dim``, input: int row ids of shape [batch], output [batch, dim]."""
    return tf.keras.Sequential([tf.keras.layers.Embedding(rows, dim, name=f"{name}_embedding")], name=name)
