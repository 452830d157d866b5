"""Fine-tune the two-tower model on one partition, starting from the last checkpoint.

The first partition is a cold start. Later ones restore the version trained on the latest earlier
partition (whether or not it was deployed: every partition is trained on exactly once, so skipping
a rejected candidate's weights would forget its day), grow its tables to today's vocabularies with
every old row kept, and train on today's train split plus a replay sample of older examples (the
forgetting guard). The optimizer (Adagrad) starts fresh on each fine-tune.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from recsys import registry, schema
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.features import items, trend, vocab
from recsys.features.build import check_delivery, load_stats
from recsys.features.inputs import Part, history_inputs, replay_part, replay_sample, replay_size, train_part
from recsys.model import session
from recsys.model.tables import StoredArray, StreamedArray, load_tables, open_tables, write_tables
from recsys.progress import bar, progress
from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)


class TrainingError(RecsysError, RuntimeError):
    """Fine-tuning cannot run (no features, a parent of another embedding size, an empty training window)."""


def fine_tune(
    store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None
) -> dict[str, Any]:
    """Train the candidate for ``day`` and store it as a new version; returns its metadata.

    Exactly once per date: if a version was already fine-tuned on ``day`` it is returned unchanged, and
    a run of the same date that is training right now (another process, any machine) is waited for.
    """
    with registry.training_lock(store, registry.FINE_TUNE, day, run_id):
        return _fine_tune(store, settings, day, run_id)


def _fine_tune(store: PartitionStore, settings: Settings, day: date, run_id: str | None) -> dict[str, Any]:
    plan = plan_fine_tune(store, settings, day)
    if plan.done is not None:
        return plan.done
    parent, seed, thin = plan.parent, plan.seed, plan.thin
    inputs = training_inputs(store, settings, day, [plan.train], plan.replay, parent)
    del plan  # the parts' frames: the inputs hold what training needs (bench/scale: they stayed for the whole fit)
    result = _train_version(store, settings, day, inputs, parent, registry.FINE_TUNE, seed, run_id)
    return result if thin is None else result | {"note": thin}


@dataclass(frozen=True)
class FineTunePlan:
    """What the fine-tune of a day trains on, or (``done``) its result without training: the version already
    trained on the day, or a thin day's "no candidate"."""

    train: Part
    replay: Part
    parent: int | None
    seed: int
    thin: str | None
    done: dict[str, Any] | None


def plan_fine_tune(store: PartitionStore, settings: Settings, day: date, *,
                   parent: int | Literal["registry"] | None = "registry") -> FineTunePlan:
    """Read what the fine-tune of ``day`` trains on; ``parent`` from the registry (the default: the caller
    holds the training lock) or as given (a worker that follows its chief's choice, reading no registry)."""
    if parent == "registry":
        reg = registry.load(store)
        existing = registry.version_for_date(reg, day)
        if existing is not None:
            log.info("version %d was already trained on %s; nothing to do", existing, day)
            done = reg["versions"][str(existing)] | {"version": existing, "reused": True}
            return FineTunePlan(Part.empty(), Part.empty(), existing, 0, None, dict(done))
        parent = registry.parent_for_date(reg, day)

    check_delivery(store, day)  # the features are those of the delivery that passed validation
    train = train_part(store, day, only_train=True)
    seed = settings.seed + day.toordinal()
    replay = replay_part(replay_sample(store, day, settings.replay_examples, seed))
    thin = thin_day_reason(store, day, train.size, replay.size, parent)
    if thin is not None and not replay.size:  # a thin day never stops the pipeline: keep the current model
        log.warning("%s", thin)
        return FineTunePlan(train, replay, parent, seed, thin, {
            "version": None, "trained_on": day.isoformat(), "parent": parent, "trained": False, "reason": thin,
            "reused": False})
    return FineTunePlan(train, replay, parent, seed, thin, None)


def no_candidate_reason(store: PartitionStore, settings: Settings, day: date) -> str | None:
    """Why :func:`fine_tune` trains no candidate for ``day`` (None: it trains one, or has not run)."""
    stats = f"{layout.features(day)}/{layout.STATS_FILE}"
    if not store.is_complete(layout.features(day)) or not store.exists(stats):
        return None
    if load_stats(store, day).get("train_examples", 1):
        return None
    if replay_size(store, day, settings.replay_examples):
        return None
    return thin_day_reason(store, day, 0, 0, registry.parent_for_date(registry.load(store), day))


def thin_day_reason(store: PartitionStore, day: date, train: int, replay: int, parent: int | None) -> str | None:
    """Why ``day`` has no examples of its own to train on (None: it has ``train`` > 0 of them), and what
    happens instead: training on the ``replay`` sample of older days, or (none) keeping ``parent``."""
    if train:
        return None
    stats = load_stats(store, day)
    held = stats.get("holdout_users", 0)
    if not stats.get("examples", 1):
        why = f"partition {day} has no training examples: no usable events after cleaning ({stats.get('cleaning')})"
    elif held:
        why = f"partition {day} has no training examples: its {held} customer(s) were all held out for evaluation"
    else:
        why = f"partition {day} has no training examples"
    if replay:
        return f"{why}; the candidate was trained on the replay sample of earlier days only ({replay} examples)"
    kept = f"version {parent} stays the latest model" if parent is not None else "there is no model yet"
    return f"{why} and there is no replay sample of earlier days: no candidate was trained ({kept})"


def train_from_scratch(
    store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Train a fresh model on every feature partition up to ``day`` (``day``'s holdout excluded).

    Used to bootstrap a model from history and for periodic full retrains; stored as a version of
    kind ``full_retrain`` that later fine-tunes may start from. ``window_days`` keeps only the
    partitions of the last that many days (``day`` included); None: all of them. Full retrains ending
    on the same day run one at a time (:func:`recsys.registry.training_lock`).
    """
    if window_days is not None and window_days <= 0:
        raise TrainingError(f"the training window must be at least one day, got {window_days}")
    with registry.training_lock(store, registry.FULL_RETRAIN, day, run_id):
        return _train_from_scratch(store, settings, day, run_id, window_days)


def _train_from_scratch(
    store: PartitionStore, settings: Settings, day: date, run_id: str | None, window_days: int | None
) -> dict[str, Any]:
    first = date.min if window_days is None else layout.shift_day(day, -(window_days - 1))
    days = [d for d in store.partitions(layout.FEATURES) if first <= d <= day]
    if day not in days:
        raise TrainingError(f"no features for {day}: run the features step first")
    parts = [train_part(store, d, only_train=d == day) for d in progress(days, "reading features", "day")]
    seed = settings.seed + day.toordinal()
    inputs = training_inputs(store, settings, day, parts, Part.empty(), None)
    del parts
    return _train_version(
        store, settings, day, inputs, None, registry.FULL_RETRAIN, seed, run_id
    )


def training_dataset(
    features: dict[str, np.ndarray], hist_index: np.ndarray, hist_rows: np.ndarray, hist_days: np.ndarray,
    batch_size: int, seed: int, trend_table: np.ndarray | None = None,
) -> Any:
    """Shuffled batches of ``features`` (arrays of one value per example) with each example's history.

    Every array is held once (as a constant); an epoch draws a fresh permutation of the example
    indices (seeded: the same seed gives the same batches) and each batch gathers its rows, its
    history index and its history rows. Nothing is copied per example: no ``from_tensor_slices`` of
    the features and no shuffle buffer of whole examples (bench/scale). With ``trend_table`` [days,
    items] and a ``trend_day`` feature (each example's row in it), each batch also gets ``trend``
    [B, B]: the trend of candidate j as of row i's day.
    """
    import tensorflow as tf

    n = len(hist_index)
    gather = batch_gatherer(features, hist_index, hist_rows, hist_days, trend_table)
    batches = -(-n // batch_size)

    def epoch(draw: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int32), seed=tf.stack([draw, seed]))
        return tf.data.Dataset.range(batches).map(
            lambda b: order[b * batch_size: tf.minimum((b + 1) * batch_size, n)]
        )

    # one random draw per iteration (an epoch of fit), seeded: reshuffled every epoch, reproducibly
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return (
        draws.flat_map(epoch)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def batch_gatherer(
    features: dict[str, np.ndarray], hist_index: np.ndarray, hist_rows: np.ndarray, hist_days: np.ndarray,
    trend_table: np.ndarray | None = None,
) -> Callable[[Any], dict[str, Any]]:
    """A function from example indices [B] to the model's batch (see :func:`training_dataset`); every
    array is held once, as a constant."""
    import tensorflow as tf

    from recsys.model import two_tower

    constants = {name: tf.constant(values) for name, values in features.items()}
    index_c = tf.constant(hist_index, tf.int32)
    rows_c = tf.constant(hist_rows, tf.int32)
    days_c = tf.constant(hist_days)
    trend_c = tf.constant(trend_table, tf.float32) if trend_table is not None else None

    def gather(i: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = {name: tf.gather(values, i) for name, values in constants.items()}
        h = tf.gather(index_c, i)
        batch[two_tower.HIST_ROWS] = tf.gather(rows_c, h)
        batch[two_tower.HIST_DAYS] = tf.cast(tf.gather(days_c, h), tf.float32)
        if trend_c is not None:
            day_row, item = tf.meshgrid(batch.pop(trend.TREND_DAY), batch[schema.ITEM_ROW], indexing="ij")
            batch[trend.TREND] = tf.gather_nd(trend_c, tf.stack([day_row, item], -1))
        return batch

    return gather


@dataclass
class TrainingInputs:
    """Everything a training run reads, in the model's form: vocabulary sizes, item features, one array per
    feature over the examples, their histories, the trend table, and the parent's tables (None: cold start)."""

    user_rows: int
    item_rows: int
    item_features: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    trend_table: np.ndarray | None
    hist_rows: np.ndarray
    hist_days: np.ndarray
    hist_index: np.ndarray
    train_examples: int
    replay_examples: int
    old: dict[str, np.ndarray | StoredArray] | None
    old_rows: dict[str, int] | None = None  # rows of the parent's user and item tables (kept by drop_parent)

    @property
    def examples(self) -> int:
        return len(self.hist_index)

    def drop_examples(self) -> None:
        """Let go of the example arrays (once a dataset or step function holds them as constants)."""
        self.features, self.trend_table = {}, None
        self.hist_rows, self.hist_days = self.hist_rows[:0], self.hist_days[:0]

    def drop_parent(self) -> None:
        """Let go of the parent's tables once the model is warm-started from them (their row counts stay)."""
        self.old = None


def training_inputs(
    store: PartitionStore, settings: Settings, day: date, parts: list[Part], replay: Part, parent: int | None,
    *, by_rows: bool = False,
) -> TrainingInputs:
    """Read and assemble what training on ``parts`` + ``replay`` (warm-started from ``parent``) needs; with
    ``by_rows``, the parent's growing tables are opened to be read by rows (:func:`recsys.model.tables.open_tables`),
    not read whole."""
    stats = load_stats(store, day)
    user_rows, item_rows = stats["user_vocab_size"], stats["item_vocab_size"]
    items_vocab = vocab.load(store, vocab.ITEMS)
    item_features = items.feature_arrays(items.latest_catalog(store, day), items_vocab, item_rows)
    everything = [*parts, replay]
    hist_rows, hist_days, hist_index = history_inputs(everything, items_vocab, settings.history_length)
    features, trend_table = _example_features(store, settings, everything, item_rows)
    old = _parent_tables(store, settings, parent, by_rows)
    return TrainingInputs(
        user_rows, item_rows, item_features, features, trend_table, hist_rows, hist_days, hist_index,
        sum(p.size for p in parts), replay.size, old,
        None if old is None else {"user": len(old["user"]), "item": len(old["item"])},
    )


def warm_model(settings: Settings, inputs: TrainingInputs, seed: int) -> tuple[Any, dict[str, Any]]:
    """A fresh model of the inputs' vocabulary sizes, warm-started from the parent's tables grown to them
    (every old row bit for bit, :func:`recsys.model.two_tower.warm_start`: shard by shard, piece by piece);
    under a distribution strategy's scope, its variables are the strategy's. Also how each growing table was
    written (empty on a cold start)."""
    from recsys.model import two_tower

    model = two_tower.build_model(inputs.user_rows, inputs.item_rows, settings.embedding_dim, **inputs.item_features,
                                  warm=_every_table_written(inputs.old))
    written = two_tower.warm_start(model, inputs.old, seed) if inputs.old is not None else {}
    return model, written


def _every_table_written(old: Mapping[str, Any] | None) -> bool:
    """Whether a warm start from ``old`` writes every table the random initialiser would fill (a parent stored
    before the title words keeps the random ones; so does a cold start)."""
    return old is not None and all(name in old for name in ("user", "item", "word", "price"))


def _train_version(
    store: PartitionStore, settings: Settings, day: date, inputs: TrainingInputs,
    parent: int | None, kind: str, seed: int, run_id: str | None,
) -> dict[str, Any]:
    """Build (or warm-start from ``parent``), train on ``inputs``, store a new version.

    Memory: the parent's tables go once the model holds them and the example arrays once the dataset does
    (bench/scale: a 30M-event fine-tune held both to its end)."""
    import tensorflow as tf

    from recsys.model import two_tower

    tf.keras.utils.set_random_seed(seed)
    model, _ = warm_model(settings, inputs, seed)
    inputs.drop_parent()
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=settings.learning_rate))
    dataset = training_dataset(inputs.features, inputs.hist_index, inputs.hist_rows, inputs.hist_days,
                               settings.batch_size, seed, inputs.trend_table)
    inputs.drop_examples()
    started = time.perf_counter()
    fit = fit_with_progress(model, dataset, settings.epochs, f"training {kind} on {day}")
    seconds = time.perf_counter() - started
    metadata = save_trained(store, settings, day, kind, parent, inputs, two_tower.get_tables(model),
                            float(fit.history["loss"][-1]), seconds, run_id)
    return dict(metadata) | {"reused": False}


def save_trained(
    store: PartitionStore, settings: Settings, day: date, kind: str, parent: int | None, inputs: TrainingInputs,
    tables: Mapping[str, np.ndarray | StreamedArray], final_loss: float, seconds: float, run_id: str | None,
) -> registry.VersionEntry:
    """Store trained ``tables`` as a new version with its metadata and register it (a :class:`StreamedArray` is
    written piece by piece)."""

    fit = _session_fit(store, settings, day, tables)
    if fit is not None:
        tables = {**tables, session.SESSION_WEIGHT: np.asarray(fit[session.SESSION_WEIGHT], np.float32),
                  session.SESSION_QUERY_WEIGHT: np.asarray(fit[session.SESSION_QUERY_WEIGHT], np.float32)}

    def describe(version: int) -> registry.VersionEntry:
        entry = _metadata(
            version, kind, day, parent, settings, inputs.train_examples, inputs.replay_examples, inputs.user_rows,
            inputs.item_rows, inputs.old_rows, tables, final_loss, seconds,
        )
        return entry if fit is None else cast(registry.VersionEntry, {**entry, "session_fit": fit})

    metadata = store_version(store, day, kind, tables, describe, run_id)
    log.info("trained %s version %d on %s (parent %s): %s", kind, metadata["version"], day, parent, metadata)
    return metadata


def _session_fit(store: PartitionStore, settings: Settings, day: date,
                 tables: Mapping[str, np.ndarray | StreamedArray]) -> dict[str, Any] | None:
    """The session weights of a version trained on ``day`` (:func:`recsys.model.session.fit_session`); None when
    its tables are streamed (a sharded fine-tune: the version then scores without a session term)."""
    if any(isinstance(t, StreamedArray) for t in tables.values()):
        log.warning("session weights not fitted for %s: the tables are sharded (the session term stays 0)", day)
        return None
    return session.fit_session(store, settings, day, tables)  # type: ignore[arg-type]


def store_version(
    store: PartitionStore, day: date, kind: str, tables: Mapping[str, np.ndarray | StreamedArray],
    describe: Callable[[int], registry.VersionEntry], run_id: str | None,
) -> registry.VersionEntry:
    """Store trained ``tables`` as a new version and register it; returns its metadata (``describe(number)``).

    The number is allocated in the registry before its directory is written, so two trainings never
    share one (:func:`recsys.registry.allocate_version`).
    """
    version = registry.allocate_version(store, day, kind, run_id)
    metadata = describe(version)
    with tempfile.TemporaryDirectory() as tmp:
        write_tables(Path(tmp) / layout.TABLES_FILE, tables)
        (Path(tmp) / layout.METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        store.publish_dir(Path(tmp), layout.model_version(version))
    registry.add_version(store, version, metadata, run_id)
    return metadata


def _parent_tables(
    store: PartitionStore, settings: Settings, parent: int | None, by_rows: bool = False
) -> dict[str, np.ndarray | StoredArray] | None:
    """The parent version's tables (None for a cold start), the growing ones opened to be read by rows with
    ``by_rows``; their size must match the settings'."""
    if parent is None:
        return None
    from recsys.model.two_tower import GROWING

    old: dict[str, np.ndarray | StoredArray] = (
        open_tables(store, parent, GROWING) if by_rows else dict(load_tables(store, parent)))
    if old["user"].shape[1] != settings.embedding_dim:
        raise TrainingError(
            f"version {parent} has {old['user'].shape[1]}-d embeddings but RECSYS_EMBEDDING_DIM is "
            f"{settings.embedding_dim}: a fine-tune cannot change the size; run a full retrain (`recsys retrain` "
            f"or the recsys_full_retrain DAG) with the new size first, or set the size back"
        )
    return old


def _example_features(
    store: PartitionStore, settings: Settings, parts: list[Part], item_rows: int
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One array per feature over every example of ``parts``, and the trend table (None: no trend)."""
    from recsys.model import two_tower

    item_row = np.concatenate([p.item_row for p in parts])
    features = {
        schema.USER_ROW: np.concatenate([p.user_row for p in parts]),
        schema.ITEM_ROW: item_row,
    }
    if settings.logq_correction:
        features[two_tower.ITEM_PROB] = two_tower.sampling_probability(item_row, item_rows)
    trend_table = None
    if settings.trend_days:  # one trend row per distinct day of the examples (the day's and the replay's)
        ordinals = np.concatenate([p.day for p in parts])
        days = np.unique(ordinals)
        trend_table = trend.table(store, [date.fromordinal(int(o)) for o in days], item_rows, settings.trend_days)
        features[trend.TREND_DAY] = np.searchsorted(days, ordinals).astype(np.int32)
    return features, trend_table


def _metadata(
    version: int, kind: str, day: date, parent: int | None, settings: Settings, train_examples: int,
    replay_examples: int, user_rows: int, item_rows: int, old_rows: Mapping[str, int] | None,
    tables: Mapping[str, np.ndarray | StreamedArray], final_loss: float, seconds: float,
) -> registry.VersionEntry:
    """The version's ``metadata.json``: what it was trained on, with which settings, and how it went."""
    examples = train_examples + replay_examples
    return {
        "version": version,
        "kind": kind,
        "trained_on": day.isoformat(),
        "parent": parent,
        "cold_start": parent is None,
        "train_examples": train_examples,
        "replay_examples": replay_examples,
        "epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        "embedding_dim": settings.embedding_dim,
        "batch_size": settings.batch_size,
        "history_length": settings.history_length,
        "repeat_length": settings.repeat_length,
        "repeat_scale": settings.repeat_scale,
        "trend_days": settings.trend_days,
        "user_rows": user_rows,
        "item_rows": item_rows,
        "new_user_rows": user_rows - (old_rows["user"] if old_rows is not None else 0),
        "new_item_rows": item_rows - (old_rows["item"] if old_rows is not None else 0),
        "table_megabytes": round(sum(t.nbytes for t in tables.values()) / 2**20, 3),
        "final_loss": final_loss,
        "repeat_weight": float(np.asarray(tables["repeat_weight"])),
        "trend_weight": float(np.asarray(tables["trend_weight"])),
        "logq_correction": settings.logq_correction,
        "train_seconds": round(seconds, 2),
        "examples_per_second": round(examples * settings.epochs / seconds, 1) if seconds > 0 else None,
        "created_at": registry.now(),
    }


def fit_with_progress(model: Any, dataset: Any, epochs: int, desc: str) -> Any:
    """``model.fit`` (silent), with batches done, rate and time left on a terminal (:mod:`recsys.progress`).

    The total is known when the dataset's cardinality is (batches per epoch x ``epochs``). Returns the history.
    """
    import tensorflow as tf

    steps = int(dataset.cardinality())  # -1: infinite, -2: unknown
    with bar(steps * epochs if steps > 0 else None, desc, "batch") as shown:

        class BatchProgress(tf.keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                shown.update(1)

        return model.fit(dataset, epochs=epochs, verbose=0, callbacks=[BatchProgress()])
