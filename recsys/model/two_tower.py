"""The TFRS two-tower retrieval model, its tables, and warm start across vocabulary growth.

Candidate tower: an item is its id embedding plus the mean of its title words' embeddings plus its
price band's embedding (:mod:`recsys.features.items`), so a new item is placed near the items its
title resembles before anyone has bought it.

Query tower: a customer is their id embedding plus the mean of the id embeddings of their recent
purchases (:mod:`recsys.features.history`), so a customer the model has never trained on is still
embedded by what they bought, and a purchase moves the query at once, without retraining.

Score of item i for customer u::

    query(u) . candidate(i)  +  bias(i)  +  repeat_weight * ln(1 + days u bought i)
                             +  trend_weight * ln(1 + purchases of i in the last trend_days days)

The item bias is the item's learned prior (its popularity, once the logQ correction has removed
the sampling bias of in-batch negatives); the trend term is its recent popularity, counted from
the data as of the query's day (:mod:`recsys.features.trend`); the repeat term is non-zero only for
the customer's own past items, so retrieval stays a dot-product search over all items (bias and
trend fold into one per-item constant) plus a sparse bonus over the customer's own items (see
:class:`recsys.serving.index.Scorer`). All of it is trained jointly with an in-batch softmax (tfrs
``Model``, its accidental-hit removal and sampling correction layers); in training, each in-batch
candidate's trend is the one as of the *row's* day (examples of a batch come from many days).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys import schema
from recsys.features.items import PRICE_BANDS, TITLE_WORDS, WORD_BUCKETS
from recsys.features.trend import TREND

ITEM_PROB = "item_prob"  # feature: the example's item share of the training examples (logQ correction)
HIST_ROWS = "hist_rows"  # feature: [batch, history_length] item rows of the user's history, 0 = padding
HIST_DAYS = "hist_days"  # feature: [batch, history_length] days each history item was bought

# Keras' default Embedding initializer is uniform(-0.05, 0.05); new rows of a grown table use the same.
INIT_SCALE = 0.05
# tables grown with the vocabularies (rows = vocabulary size); the rest have fixed shapes
GROWING = ("user", "item", "item_bias")
# rows moved between this process and a sharded table at a time (warm start, check, save): about this many bytes
CHUNK_BYTES = 32 * 2**20


class TwoTowerModel(tfrs.Model):
    """Query tower (user id + recent items), candidate tower (item id + title + price), item bias and
    repeat term, trained with an in-batch softmax (see the module docstring)."""

    def __init__(self, user_rows: int, item_rows: int, dim: int, item_words: np.ndarray,
                 item_price: np.ndarray, id_initializer: str = "uniform") -> None:
        super().__init__()
        if item_words.shape != (item_rows, TITLE_WORDS) or item_price.shape != (item_rows,):
            raise ValueError(f"item features must cover the {item_rows} item rows: got words {item_words.shape}, "
                             f"price {item_price.shape}")
        self.user_embedding = tf.keras.layers.Embedding(user_rows, dim, embeddings_initializer=id_initializer,
                                                        name="user_embedding")
        self.item_embedding = tf.keras.layers.Embedding(item_rows, dim, embeddings_initializer=id_initializer,
                                                        name="item_embedding")
        self.word_embedding = tf.keras.layers.Embedding(WORD_BUCKETS, dim, name="word_embedding")
        self.price_embedding = tf.keras.layers.Embedding(PRICE_BANDS, dim, name="price_embedding")
        self.item_bias = tf.keras.layers.Embedding(item_rows, 1, embeddings_initializer="zeros", name="item_bias")
        self.repeat_weight = tf.Variable(1.0, name="repeat_weight")
        self.trend_weight = tf.Variable(0.0, name="trend_weight")
        self.item_words = tf.constant(item_words, tf.int32)
        self.item_price = tf.constant(item_price, tf.int32)
        self.remove_accidental_hits = tfrs.layers.loss.RemoveAccidentalHits()
        self.sampling_correction = tfrs.layers.loss.SamplingProbablityCorrection()

    def candidate_vectors(self, item_rows: tf.Tensor) -> tf.Tensor:
        """[...] item rows -> [..., dim]: id + mean of title words + price band."""
        words = tf.gather(self.item_words, item_rows)
        mask = tf.cast(words > 0, tf.float32)[..., None]
        title = tf.reduce_sum(self.word_embedding(words) * mask, -2) / tf.maximum(tf.reduce_sum(mask, -2), 1.0)
        return self.item_embedding(item_rows) + title + self.price_embedding(tf.gather(self.item_price, item_rows))

    def query_vectors(self, user_rows: tf.Tensor, hist_rows: tf.Tensor) -> tf.Tensor:
        """[batch] user rows and [batch, H] history rows -> [batch, dim]: id + mean of recent items' id
        embeddings (the whole candidate vector of each recent item measured no better on the replay
        benchmark, at 1.6x the training time)."""
        mask = tf.cast(hist_rows > 0, tf.float32)[..., None]
        recent = tf.reduce_sum(self.item_embedding(hist_rows) * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        return self.user_embedding(user_rows) + recent

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        items = features[schema.ITEM_ROW]
        hist = features[HIST_ROWS]
        queries = self.query_vectors(features[schema.USER_ROW], hist)
        logits = tf.matmul(queries, self.candidate_vectors(items), transpose_b=True)
        logits += tf.transpose(self.item_bias(items))
        # repeat term: ln(1 + days) where the in-batch candidate is in the row's history
        same = tf.cast(tf.equal(hist[:, :, None], items[None, None, :]), tf.float32)  # [B, H, B]
        logits += self.repeat_weight * tf.reduce_sum(same * tf.math.log1p(features[HIST_DAYS])[:, :, None], 1)
        if TREND in features:  # [B, B]: candidate j's recent purchases as of row i's day
            logits += self.trend_weight * features[TREND]
        if ITEM_PROB in features:
            logits = self.sampling_correction(logits, features[ITEM_PROB])
        labels = tf.eye(tf.shape(items)[0])
        logits = self.remove_accidental_hits(labels, logits, items)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def build_model(user_rows: int, item_rows: int, dim: int, item_words: np.ndarray | None = None,
                item_price: np.ndarray | None = None, *, warm: bool = False) -> TwoTowerModel:
    """A fresh model for vocabularies of ``user_rows`` and ``item_rows`` rows (OOV row included).

    ``warm``: every row of the id tables is about to be written (:func:`warm_start`), so they start at zeros,
    not random: the random initialiser holds three times the table in TensorFlow's CPU allocator, which keeps
    that memory for the rest of the process (bench/scale: 1.5 GB for 2M users x 64, against 0.5 GB)."""
    if item_words is None:
        item_words = np.zeros((item_rows, TITLE_WORDS), np.int32)
    if item_price is None:
        item_price = np.zeros(item_rows, np.int32)
    model = TwoTowerModel(user_rows, item_rows, dim, item_words, item_price, "zeros" if warm else "uniform")
    # create the variables now so tables can be read and set before training; built, not called: an eager lookup
    # of a table sharded over parameter servers copies the whole table into this process (2.5 GB at 3M x 64).
    # The order is the order a first call creates them in (the random initial values follow it).
    for layer in (model.item_embedding, model.user_embedding, model.word_embedding, model.price_embedding,
                  model.item_bias):
        with tf.name_scope(layer.name):
            layer.build(None)
    return model


def get_tables(model: TwoTowerModel) -> dict[str, np.ndarray]:
    """Every weight and item feature as float32/int32 arrays (the stored form of a version).

    ``user`` [U, d], ``item`` [I, d], ``word`` [WORD_BUCKETS, d], ``price`` [PRICE_BANDS, d],
    ``item_bias`` [I], ``repeat_weight`` [], ``trend_weight`` [], ``item_words`` [I, TITLE_WORDS],
    ``item_price`` [I].
    """
    return {
        "user": read_table(model.user_embedding.embeddings),
        "item": read_table(model.item_embedding.embeddings),
        **_fixed_tables(model),
        "item_bias": read_table(model.item_bias.embeddings)[:, 0],
        **_weights_and_item_features(model),
    }


def streamed_tables(model: TwoTowerModel, chunk_bytes: int | None = None) -> dict[str, Any]:
    """:func:`get_tables`, the growing tables as :class:`recsys.model.tables.StreamedArray`: read piece by piece
    (:func:`table_pieces`) while they are written (:func:`recsys.model.tables.write_tables`), never whole."""
    from recsys.model.tables import StreamedArray

    def streamed(name: str, variable: Any) -> StreamedArray:
        def chunks() -> Any:
            for shard, first, start, stop in table_pieces(variable, chunk_bytes):
                rows = read_rows(shard, first, start, stop)
                yield rows[:, 0] if name == "item_bias" else rows

        shape = (sum(int(v.shape[0]) for v in shards(variable)), *variable.shape[1:])
        return StreamedArray(shape[:1] if name == "item_bias" else tuple(shape),
                             np.dtype(variable.dtype.as_numpy_dtype), chunks)

    growing = {name: streamed(name, v) for name, v in growing_variables(model).items()}
    return {"user": growing["user"], "item": growing["item"], **_fixed_tables(model), "item_bias": growing["item_bias"],
            **_weights_and_item_features(model)}


def _fixed_tables(model: TwoTowerModel) -> dict[str, np.ndarray]:
    return {"word": read_table(model.word_embedding.embeddings), "price": read_table(model.price_embedding.embeddings)}


def _weights_and_item_features(model: TwoTowerModel) -> dict[str, np.ndarray]:
    return {
        "repeat_weight": np.asarray(model.repeat_weight.numpy(), np.float32),
        "trend_weight": np.asarray(model.trend_weight.numpy(), np.float32),
        "item_words": model.item_words.numpy(),
        "item_price": model.item_price.numpy(),
    }


def set_tables(model: TwoTowerModel, tables: dict[str, np.ndarray]) -> None:
    """Load stored weights (tables of the model's shapes; item features are the model's own)."""
    write_table(model.user_embedding.embeddings, tables["user"])
    write_table(model.item_embedding.embeddings, tables["item"])
    if "word" in tables:
        write_table(model.item_bias.embeddings, tables["item_bias"][:, None])
    _set_fixed(model, tables)


def _set_fixed(model: TwoTowerModel, tables: dict[str, Any]) -> None:
    """Load the tables of fixed shapes (words, price bands, the repeat and trend weights) of stored ``tables``."""
    if "word" in tables:
        write_table(model.word_embedding.embeddings, np.asarray(tables["word"]))
        write_table(model.price_embedding.embeddings, np.asarray(tables["price"]))
        model.repeat_weight.assign(float(tables["repeat_weight"]))
    if "trend_weight" in tables:  # versions stored before the trend term start it at 0
        model.trend_weight.assign(float(tables["trend_weight"]))


def shards(variable: Any) -> list[Any]:
    """The pieces of a table: the shards of a ``ShardedVariable`` (a table split by rows across parameter
    servers, :mod:`recsys.training_distributed`), in row order, or ``[variable]`` for a whole one."""
    return list(getattr(variable, "variables", None) or [variable])


def read_table(variable: Any) -> np.ndarray:
    """A table's value as one array, its shards concatenated in row order (bit for bit)."""
    parts = [np.asarray(v.numpy()) for v in shards(variable)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def write_table(variable: Any, value: np.ndarray) -> None:
    """Assign ``value`` (the whole table) to a table, each shard its own rows (bit for bit)."""
    pieces = shards(variable)
    rows = [int(v.shape[0]) for v in pieces]
    if sum(rows) != value.shape[0] or tuple(pieces[0].shape[1:]) != value.shape[1:]:
        raise ValueError(f"a table of {sum(rows)} rows x {tuple(pieces[0].shape[1:])} cannot take {value.shape}")
    start = 0
    for v, n in zip(pieces, rows, strict=True):
        v.assign(value[start:start + n])
        start += n


def table_pieces(variable: Any, chunk_bytes: int | None = None, *,
                 split_whole: bool = False) -> list[tuple[Any, int, int, int]]:
    """How a table is visited piece by piece: ``(shard, first row of the shard, start, stop)`` with ``start..stop``
    the table rows of the piece (about ``chunk_bytes``, default :data:`CHUNK_BYTES`, never across a shard's end),
    in row order. A table that is not sharded is one piece, unless ``split_whole``."""
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    pieces = []
    first = 0
    parts = shards(variable)
    for v in parts:
        rows = int(v.shape[0])
        row_bytes = max(1, int(np.prod(v.shape[1:], dtype=np.int64)) * v.dtype.size)
        # a whole (or mirrored) table is one piece, as it is in this process anyway; split_whole cuts it too
        step = max(1, chunk_bytes // row_bytes) if parts[0] is not variable or split_whole else max(1, rows)
        pieces += [(v, first, a, min(a + step, first + rows)) for a in range(first, first + rows, step)]
        first += rows
    return pieces


def read_rows(shard: Any, first: int, start: int, stop: int) -> np.ndarray:
    """Table rows ``start..stop`` of ``shard`` (whose first table row is ``first``), sliced where the shard lives
    (a parameter server), so only those rows reach this process."""
    if start == first and stop - first == int(shard.shape[0]):
        return np.asarray(shard.numpy())
    with tf.device(shard.device):
        return np.asarray(shard[start - first:stop - first].numpy())


def write_rows(shard: Any, first: int, start: int, value: np.ndarray) -> None:
    """Assign ``value`` to table rows ``start..start + len(value)`` of ``shard`` (first table row ``first``)."""
    if start == first and len(value) == int(shard.shape[0]):
        shard.assign(value)
        return
    with tf.device(shard.device):
        rows = tf.range(start - first, start - first + len(value))
        shard.scatter_update(tf.IndexedSlices(tf.constant(value, shard.dtype), rows))


def warm_start(model: TwoTowerModel, old: dict[str, Any], seed: int,
               chunk_bytes: int | None = None) -> dict[str, list[dict[str, int]]]:
    """Load ``old`` (a parent's tables) into ``model``, the growing tables grown to the model's rows exactly as
    :func:`grow_tables` grows them, written piece by piece (:func:`table_pieces`): each shard receives only its
    own rows, and only a piece of rows is ever in this process beyond ``old`` itself (whose growing tables may
    be :class:`recsys.model.tables.StoredArray`, read by rows). Returns each growing table's shards
    (``rows``, ``pieces``, ``largest_piece`` in rows). A whole table is written in pieces too: a whole write
    would hold a second copy of it in TensorFlow's allocator, which keeps it."""
    written = {}
    for name, variable in growing_variables(model).items():
        if name not in old:  # a version stored before the item bias: it starts at 0
            continue
        total = sum(int(v.shape[0]) for v in shards(variable))
        seen: dict[int, dict[str, int]] = {}
        for shard, first, start, stop in table_pieces(variable, chunk_bytes, split_whole=True):
            value = grown_rows(old, name, total, seed, start, stop)
            write_rows(shard, first, start, value if name != "item_bias" else value[:, None])
            mine = seen.setdefault(id(shard), {"rows": int(shard.shape[0]), "pieces": 0, "largest_piece": 0})
            mine["pieces"] += 1
            mine["largest_piece"] = max(mine["largest_piece"], stop - start)
        written[name] = list(seen.values())
    _set_fixed(model, old)
    return written


def growing_variables(model: TwoTowerModel) -> dict[str, Any]:
    """The variables of the growing tables (:data:`GROWING`), whole or sharded; ``item_bias`` is [I, 1]."""
    return {"user": model.user_embedding.embeddings, "item": model.item_embedding.embeddings,
            "item_bias": model.item_bias.embeddings}


def grow_tables(old: dict[str, np.ndarray], user_rows: int, item_rows: int, seed: int) -> dict[str, np.ndarray]:
    """``old`` with the user and item tables grown to the new vocabulary sizes (old rows bit for bit;
    new id rows freshly initialised, new item biases 0); fixed-size tables are kept as they are."""
    grown = dict(old)
    grown["user"] = grown_rows(old, "user", user_rows, seed, 0, user_rows)
    grown["item"] = grown_rows(old, "item", item_rows, seed, 0, item_rows)
    if "item_bias" in old:
        grown["item_bias"] = grown_rows(old, "item_bias", item_rows, seed, 0, item_rows)
    return grown


def grown_rows(old: dict[str, Any], name: str, rows: int, seed: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start..stop`` of growing table ``name`` (``user``, ``item``, ``item_bias``) of ``old`` grown to
    ``rows`` rows by :func:`grow_tables` with ``seed``: the user table draws its new rows with ``seed``, the item
    table with ``seed + 1``, new item biases are 0. Only ``old``'s rows ``start..stop`` are read."""
    if name == "item_bias":
        bias = old["item_bias"]
        if rows < len(bias):
            raise ValueError(f"a vocabulary never shrinks: bias has {len(bias)} rows, asked for {rows}")
        kept = bias[min(start, len(bias)):min(stop, len(bias))]
        return np.concatenate([kept, np.zeros(stop - start - len(kept), bias.dtype)])
    return grow_table(old[name], rows, seed if name == "user" else seed + 1, start, stop)


def sampling_probability(item_rows: np.ndarray, rows: int) -> np.ndarray:
    """Each example's item share of the examples (add-one smoothed over ``rows`` items), float32."""
    counts = np.bincount(item_rows, minlength=rows).astype(np.float64) + 1.0
    return (counts / counts.sum())[item_rows].astype(np.float32)


def grow_table(old: Any, rows: int, seed: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """``old`` extended to ``rows`` rows: old rows kept bit for bit, new rows freshly initialised (uniform in
    +-:data:`INIT_SCALE` from ``np.random.default_rng(seed)``, drawn row after row).

    With ``start``/``stop``, only rows ``start..stop`` of that table, bit for bit the same values, reading only
    those rows of ``old`` (an ndarray or anything sliced by rows with ``shape`` and ``dtype``): each float64 uniform
    takes one 64-bit draw of PCG64, so new row ``r`` starts ``r x dim`` draws into the stream (``PCG64.advance``).
    """
    stop = rows if stop is None else stop
    n_old, dim = old.shape[0], old.shape[1]
    if rows < n_old:
        raise ValueError(f"a vocabulary never shrinks: table has {n_old} rows, asked for {rows}")
    if not 0 <= start <= stop <= rows:
        raise ValueError(f"rows {start}..{stop} are not rows of a table of {rows}")
    kept = np.asarray(old[min(start, n_old):min(stop, n_old)])
    first_new = max(start, n_old)
    if first_new >= stop:
        return kept.copy() if kept.base is not None else kept  # never a view of the caller's table
    bits = np.random.PCG64(seed)
    bits.advance((first_new - n_old) * dim)
    new = np.random.Generator(bits).uniform(-INIT_SCALE, INIT_SCALE, size=(stop - first_new, dim)).astype(old.dtype)
    return new if not len(kept) else np.concatenate([kept, new], axis=0)
