"""The ranking model: a deep & cross network over the candidate features, trained listwise, fine-tuned daily.

score(x) = MLP(Cross(x)), with ``Cross`` TFRS's full-rank cross layer (x0 * (W x + b) + x: every pair of
features can interact, e.g. "bought before" x "days since") and a small ReLU MLP. The loss is a softmax
over each customer's candidate list against the normalised labels (ListNet's top-one cross-entropy): what
counts is the order within a customer's list, which is what recall and NDCG measure.

Training returns :class:`RankerWeights`, plain numpy arrays: they are the checkpoint (:meth:`to_bytes`),
the warm start of the next fine-tune (:func:`fit` with ``previous``) and the serving model
(:meth:`RankerWeights.score`, numpy only: no TensorFlow in the request path, microseconds per candidate).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.ranking.candidates import RankingError
from recsys.ranking.features import FEATURES, Lists

HIDDEN = (64, 32)
_MASKED = -1e9  # logit of a padding slot: exp() of it is 0


@dataclass(frozen=True)
class RankerWeights:
    """The ranking model's weights: ``cross_kernel`` [F, F], ``cross_bias`` [F], then per dense layer a kernel
    and a bias (the last layer has one output), and the feature names they were trained on."""

    cross_kernel: np.ndarray
    cross_bias: np.ndarray
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]
    features: tuple[str, ...] = FEATURES

    def score(self, x: np.ndarray) -> np.ndarray:
        """[N] float32 scores of feature rows ``x`` [N, F] (higher: rank first)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise RankingError(f"feature rows are {x.shape}, the ranker takes [N, {len(self.features)}]")
        h = x * (x @ self.cross_kernel + self.cross_bias) + x
        for n, (kernel, bias) in enumerate(self.dense):
            h = h @ kernel + bias
            if n < len(self.dense) - 1:
                np.maximum(h, 0.0, out=h)
        return h[:, 0]

    def as_list(self) -> list[np.ndarray]:
        """The arrays in the order of the Keras model's ``get_weights``."""
        return [self.cross_kernel, self.cross_bias, *(a for layer in self.dense for a in layer)]

    def grown(self, features: tuple[str, ...] = FEATURES) -> RankerWeights:
        """These weights over the feature list ``features``, a superset of the ones they were trained on: every
        learned weight is kept at its feature's new position, the new features' cross rows and columns, cross
        bias and first dense rows are zero, so the grown ranker scores every row exactly as before until a
        fine-tune teaches it the new features (the warm start across a feature change)."""
        if tuple(features) == self.features:
            return self
        missing = [f for f in self.features if f not in features]
        if missing:
            raise RankingError(f"the checkpoint uses features {missing} that {tuple(features)} lacks: retrain it")
        at = np.array([features.index(f) for f in self.features], np.int64)
        f = len(features)
        kernel, bias = np.zeros((f, f), np.float32), np.zeros(f, np.float32)
        kernel[np.ix_(at, at)], bias[at] = self.cross_kernel, self.cross_bias
        first = np.zeros((f, self.dense[0][0].shape[1]), np.float32)
        first[at] = self.dense[0][0]
        dense = ((first, self.dense[0][1]), *self.dense[1:])
        return RankerWeights(kernel, bias, dense, tuple(features))

    @classmethod
    def from_list(cls, arrays: Sequence[np.ndarray], features: tuple[str, ...] = FEATURES) -> RankerWeights:
        arrays = [np.asarray(a, np.float32) for a in arrays]
        if len(arrays) < 4 or len(arrays) % 2:
            raise RankingError(f"a ranker has a cross kernel and bias and dense pairs; got {len(arrays)} arrays")
        dense = tuple((arrays[i], arrays[i + 1]) for i in range(2, len(arrays), 2))
        return cls(arrays[0], arrays[1], dense, tuple(features))

    def to_bytes(self) -> bytes:
        """The checkpoint: an ``.npz`` of the arrays and the feature names."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {f"w{n}": a for n, a in enumerate(self.as_list())}
        np.savez(buffer, features=np.array(self.features), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RankerWeights:
        with np.load(io.BytesIO(data)) as npz:
            arrays = [npz[f"w{n}"] for n in range(sum(1 for k in npz.files if k.startswith("w")))]
            return cls.from_list(arrays, tuple(str(f) for f in npz["features"]))


def build_model(n_features: int, seed: int, hidden: Sequence[int] = HIDDEN) -> Any:
    """The Keras ranking model, a ``tfrs.Model`` (built: its weights exist), seeded."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    class RankingModel(tfrs.Model):
        """Cross layer, ReLU MLP, one logit per candidate; listwise softmax loss over each padded list."""

        def __init__(self) -> None:
            super().__init__()
            init = tf.keras.initializers.GlorotUniform
            self.cross = tfrs.layers.dcn.Cross(kernel_initializer=init(seed))
            self.hidden = [tf.keras.layers.Dense(u, activation="relu", kernel_initializer=init(seed + n + 1))
                           for n, u in enumerate(hidden)]
            self.out = tf.keras.layers.Dense(1, kernel_initializer=init(seed + len(hidden) + 1))
            self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))

        def call(self, x: Any) -> Any:  # [L, C, F] -> [L, C]
            h = self.cross(x)
            for layer in self.hidden:
                h = layer(h)
            return tf.squeeze(self.out(h), -1)

        def compute_loss(self, inputs: Any, training: bool = False) -> Any:
            features, labels, mask = inputs
            logits = tf.where(mask, self(features), _MASKED)
            target = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1.0)
            return self.task(labels=target, predictions=logits)

    model = RankingModel()
    model(tf.zeros((1, 1, n_features)))
    return model


def fit(lists: Lists, previous: RankerWeights | None = None, *, epochs: int = 3, batch_lists: int = 32,
        learning_rate: float = 3e-3, seed: int = 0) -> RankerWeights:
    """Train on ``lists`` (one per customer-day, each with at least one bought candidate), from ``previous``
    (the last checkpoint: a fine-tune) or from a seeded initialisation; the same inputs and seed give the same
    weights. Each epoch visits the lists in a seeded random order."""
    import tensorflow as tf

    if not len(lists):
        raise RankingError("no candidate list with a bought item to train the ranker on")
    n_features = lists.features.shape[2]
    if n_features != len(FEATURES):
        raise RankingError(f"lists have {n_features} features, the ranker takes {len(FEATURES)} ({FEATURES})")
    if previous is not None:
        previous = previous.grown(FEATURES)  # a checkpoint from before a feature was added keeps every weight
    tf.keras.utils.set_random_seed(seed)
    model = build_model(n_features, seed)
    if previous is not None:
        model.set_weights(previous.as_list())
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(lists))
        data = (lists.features[order], lists.labels[order], lists.mask[order])
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(batch_lists)
        model.fit(dataset, epochs=1, verbose=0)
    return RankerWeights.from_list(model.get_weights())
