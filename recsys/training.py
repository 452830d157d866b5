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
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import registry, schema
from recsys.config import Settings
from recsys.features import history, items, vocab
from recsys.features.build import EXAMPLE_FILE_COLUMNS, load_examples, load_stats
from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)

TABLES_FILE = "tables.npz"
METADATA_FILE = "metadata.json"


class TrainingError(RuntimeError):
    """Fine-tuning cannot run (no features, no training examples)."""


def replay_sample(store: PartitionStore, day: date, size: int, seed: int) -> pd.DataFrame:
    """Up to ``size`` examples drawn uniformly from all feature partitions before ``day``."""
    older = [d for d in store.partitions(layout.FEATURES) if d < day]
    if size == 0 or not older:
        return pd.DataFrame(columns=list(EXAMPLE_FILE_COLUMNS))
    pool = pd.concat([load_examples(store, d) for d in older], ignore_index=True)
    if len(pool) <= size:
        return pool
    return pool.sample(n=size, random_state=seed).reset_index(drop=True)


def load_tables(store: PartitionStore, version: int) -> dict[str, np.ndarray]:
    """The embedding tables of a stored version."""
    import io

    with np.load(io.BytesIO(store.read_bytes(f"{layout.model_version(version)}/{TABLES_FILE}"))) as npz:
        return {name: npz[name] for name in npz.files}


def fine_tune(
    store: PartitionStore, settings: Settings, day: date, run_id: str | None = None
) -> dict[str, Any]:
    """Train the candidate for ``day`` and store it as a new version; returns its metadata.

    Idempotent: if a version was already fine-tuned on ``day`` it is returned unchanged.
    """
    reg = registry.load(store)
    existing = registry.version_for_date(reg, day)
    if existing is not None:
        log.info("version %d was already trained on %s; nothing to do", existing, day)
        return reg["versions"][str(existing)] | {"version": existing, "reused": True}

    today = load_examples(store, day)
    train = today[today[schema.SPLIT] == "train"]
    if train.empty:
        raise TrainingError(f"partition {day} has no training examples (all users were held out)")
    seed = settings.seed + day.toordinal()
    replay = replay_sample(store, day, settings.replay_examples, seed)
    parent = registry.parent_for_date(reg, day)
    return _train_version(
        store, settings, day, train, replay, parent, registry.FINE_TUNE, seed, run_id
    )


def train_from_scratch(
    store: PartitionStore, settings: Settings, day: date, run_id: str | None = None,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Train a fresh model on every feature partition up to ``day`` (``day``'s holdout excluded).

    Used to bootstrap a model from history and for periodic full retrains; stored as a version of
    kind ``full_retrain`` that later fine-tunes may start from. ``window_days`` keeps only the
    partitions of the last that many days (``day`` included); None: all of them.
    """
    if window_days is not None and window_days <= 0:
        raise TrainingError(f"the training window must be at least one day, got {window_days}")
    first = date.min if window_days is None else day - timedelta(days=window_days - 1)
    days = [d for d in store.partitions(layout.FEATURES) if first <= d <= day]
    if day not in days:
        raise TrainingError(f"no features for {day}: run the features step first")
    frames = [load_examples(store, d) for d in days]
    frames[-1] = frames[-1][frames[-1][schema.SPLIT] == "train"]
    history = pd.concat(frames, ignore_index=True)
    empty = pd.DataFrame(columns=list(EXAMPLE_FILE_COLUMNS))
    seed = settings.seed + day.toordinal()
    return _train_version(
        store, settings, day, history, empty, None, registry.FULL_RETRAIN, seed, run_id
    )


def _train_version(
    store: PartitionStore, settings: Settings, day: date, train: pd.DataFrame, replay: pd.DataFrame,
    parent: int | None, kind: str, seed: int, run_id: str | None,
) -> dict[str, Any]:
    """Build (or warm-start from ``parent``), train on ``train`` + ``replay``, store a new version."""
    import tensorflow as tf

    from recsys.model import two_tower

    examples = pd.concat([train, replay], ignore_index=True)
    stats = load_stats(store, day)
    user_rows, item_rows = stats["user_vocab_size"], stats["item_vocab_size"]
    items_vocab = vocab.load(store, vocab.ITEMS)
    item_features = items.feature_arrays(items.latest_catalog(store, day), items_vocab, item_rows)
    row_of = dict(zip(items_vocab[vocab.ID].astype(str), items_vocab[vocab.ROW].astype(int), strict=True))
    hist_rows, hist_days = history.to_rows(
        examples[history.HIST_ITEMS], examples[history.HIST_DAYS], row_of, settings.history_length
    )

    tf.keras.utils.set_random_seed(seed)
    model = two_tower.build_model(user_rows, item_rows, settings.embedding_dim, **item_features)
    old = load_tables(store, parent) if parent is not None else None
    if old is not None and old["user"].shape[1] != settings.embedding_dim:
        raise TrainingError(
            f"version {parent} has {old['user'].shape[1]}-d embeddings but RECSYS_EMBEDDING_DIM is "
            f"{settings.embedding_dim}: a fine-tune cannot change the size; run a full retrain (`recsys retrain` "
            f"or the recsys_full_retrain DAG) with the new size first, or set the size back"
        )
    if old is not None:
        two_tower.set_tables(model, two_tower.grow_tables(old, user_rows, item_rows, seed))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=settings.learning_rate))
    item_row = examples[schema.ITEM_ROW].to_numpy("int64")
    features = {
        schema.USER_ROW: examples[schema.USER_ROW].to_numpy("int64"),
        schema.ITEM_ROW: item_row,
        two_tower.HIST_ROWS: hist_rows,
        two_tower.HIST_DAYS: hist_days,
    }
    if settings.logq_correction:
        features[two_tower.ITEM_PROB] = two_tower.sampling_probability(item_row, item_rows)
    dataset = (
        tf.data.Dataset.from_tensor_slices(features)
        .shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
    )
    started = time.perf_counter()
    fit = model.fit(dataset, epochs=settings.epochs, verbose=0)
    seconds = time.perf_counter() - started
    tables = two_tower.get_tables(model)

    reg = registry.load(store)
    version = registry.next_version(reg)
    metadata = {
        "version": version,
        "kind": kind,
        "trained_on": day.isoformat(),
        "parent": parent,
        "cold_start": parent is None,
        "train_examples": len(train),
        "replay_examples": len(replay),
        "epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        "embedding_dim": settings.embedding_dim,
        "batch_size": settings.batch_size,
        "history_length": settings.history_length,
        "user_rows": user_rows,
        "item_rows": item_rows,
        "new_user_rows": user_rows - (len(old["user"]) if old is not None else 0),
        "new_item_rows": item_rows - (len(old["item"]) if old is not None else 0),
        "table_megabytes": round(sum(t.nbytes for t in tables.values()) / 2**20, 3),
        "final_loss": float(fit.history["loss"][-1]),
        "repeat_weight": float(tables["repeat_weight"]),
        "logq_correction": settings.logq_correction,
        "train_seconds": round(seconds, 2),
        "examples_per_second": round(len(examples) * settings.epochs / seconds, 1) if seconds > 0 else None,
        "created_at": registry.now(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / TABLES_FILE, **tables)  # type: ignore[arg-type]
        (Path(tmp) / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        store.publish_dir(Path(tmp), layout.model_version(version))
    registry.add_version(store, version, metadata, run_id)
    log.info("trained %s version %d on %s (parent %s): %s", kind, version, day, parent, metadata)
    return metadata | {"reused": False}
