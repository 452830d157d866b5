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
from recsys.features.build import load_examples, load_stats
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
        return pd.DataFrame(columns=list(schema.EXAMPLE_COLUMNS))
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
    empty = pd.DataFrame(columns=list(schema.EXAMPLE_COLUMNS))
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

    tf.keras.utils.set_random_seed(seed)
    model = two_tower.build_model(user_rows, item_rows, settings.embedding_dim)
    if parent is not None:
        old = load_tables(store, parent)
        two_tower.set_tables(model, {
            "user": two_tower.grow_table(old["user"], user_rows, seed),
            "item": two_tower.grow_table(old["item"], item_rows, seed + 1),
        })
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=settings.learning_rate))
    dataset = (
        tf.data.Dataset.from_tensor_slices({
            schema.USER_ROW: examples[schema.USER_ROW].to_numpy("int64"),
            schema.ITEM_ROW: examples[schema.ITEM_ROW].to_numpy("int64"),
        } | ({
            two_tower.ITEM_PROB: two_tower.sampling_probability(examples[schema.ITEM_ROW].to_numpy("int64"), item_rows),
        } if settings.logq_correction else {}))
        .shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
    )
    started = time.perf_counter()
    history = model.fit(dataset, epochs=settings.epochs, verbose=0)
    seconds = time.perf_counter() - started

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
        "user_rows": user_rows,
        "item_rows": item_rows,
        "final_loss": float(history.history["loss"][-1]),
        "logq_correction": settings.logq_correction,
        "train_seconds": round(seconds, 2),
        "created_at": registry.now(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tables = two_tower.get_tables(model)
        np.savez(Path(tmp) / TABLES_FILE, user=tables["user"], item=tables["item"])
        (Path(tmp) / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        store.publish_dir(Path(tmp), layout.model_version(version))
    registry.add_version(store, version, metadata, run_id)
    log.info("trained %s version %d on %s (parent %s): %s", kind, version, day, parent, metadata)
    return metadata | {"reused": False}
