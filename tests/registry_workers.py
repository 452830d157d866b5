"""Registry writers run in separate processes by the concurrency tests (tests/unit/test_registry_concurrency.py).

They live in an importable module because ``multiprocessing``'s spawn start method imports a child's target by
name (pytest's importlib mode makes ``tests`` importable from the repository root). Each writer goes through the
production functions (``recsys.registry``, ``recsys.training.store_version``, ``recsys.serving.deploy.rollback``)
with tiny fake tables instead of TensorFlow; each starts at the wall-clock time ``start`` so that they race.
"""

from __future__ import annotations

import os
import time
from datetime import date
from typing import Any

import numpy as np


def _store(root: str) -> Any:
    from recsys.storage.local import LocalStore

    return LocalStore(root)


def _wait(start: float) -> None:
    time.sleep(max(0.0, start - time.time()))


def fake_training(root: str, kind: str, day: str, run_id: str, start: float) -> dict[str, Any]:
    """A training of ``kind`` on ``day`` as fine_tune / train_from_scratch do it, minus TensorFlow.

    Under the date's training lock: reuse a fine-tune already registered for the date, else store a version
    whose tables hold this process's pid and run id (so an overwritten version is detectable).
    """
    from recsys import registry
    from recsys.training import store_version

    store, when = _store(root), date.fromisoformat(day)
    _wait(start)
    with registry.training_lock(store, kind, when, run_id):
        reg = registry.load(store)
        existing = registry.version_for_date(reg, when) if kind == registry.FINE_TUNE else None
        if existing is not None:
            return {"version": existing, "reused": True, "run_id": run_id}
        tables = {"user": np.full((2, 2), os.getpid(), np.float32), "item": np.zeros((3, 2), np.float32)}

        def describe(version: int) -> registry.VersionEntry:
            return {"version": version, "kind": kind, "trained_on": day, "train_seconds": float(os.getpid()),
                    "created_at": run_id}

        meta = store_version(store, when, kind, tables, describe, run_id)
    if kind == registry.FULL_RETRAIN:
        registry.record_retrain_decision(store, meta["version"], {
            "date": day, "candidate_version": meta["version"], "blessed": False, "reason": "race test",
            "kind": kind}, run_id)
    return {"version": meta["version"], "reused": False, "run_id": run_id}


def rollbacks(root: str, targets: list[int], run_id: str, start: float) -> int:
    """Roll the champion back to each of ``targets`` in turn, as the rollback DAG and ``recsys rollback`` do
    (``recsys.serving.deploy.rollback``; the store has no catalog, so the index refresh is skipped and noted);
    returns how many."""
    from recsys.serving.deploy import rollback

    store = _store(root)
    _wait(start)
    for i, target in enumerate(targets):
        done = rollback(store, f"race {i}", target, run_id)
        assert done["version"] == target and "index_error" in done, done
    return len(targets)


def manual_writers(root: str, count: int, run_id: str, start: float) -> int:
    """``count`` on-call writes, alternating a recorded decision and a rollback; returns how many."""
    from recsys import registry

    store = _store(root)
    _wait(start)
    for i in range(count):
        if i % 2:
            registry.set_champion(store, 1 + i % 3, registry.ROLLBACK, f"{run_id} {i}", f"{run_id}-{i}")
        else:
            registry.record_manual(store, registry.DEPLOY_SKIPPED, f"{run_id} {i}", f"{run_id}-{i}", version=1)
    return count


def hold_registry_lock(root: str, ready: str) -> None:
    """Take the registry lock (in the middle of an update) and never give it back: the parent kills us."""
    from pathlib import Path

    from recsys import registry

    def block(reg: Any) -> None:
        Path(ready).write_text(str(os.getpid()))
        time.sleep(3600)

    registry.update(_store(root), block, "doomed")


def hold_lock(root: str, path: str, expiry: float, seconds: float, ready: str) -> None:
    """Hold the store lock at ``path`` (leases of ``expiry`` s, refreshed) for ``seconds``."""
    from pathlib import Path

    from recsys.storage.lock import store_lock

    with store_lock(_store(root), path, run_id="holder", purpose="test", expiry=expiry):
        Path(ready).write_text(str(os.getpid()))
        time.sleep(seconds)


def fine_tune(root: str, settings: dict[str, Any], day: str, run_id: str, start: float) -> dict[str, Any]:
    """The real ``recsys.training.fine_tune`` of ``day`` (TensorFlow) on the store at ``root``."""
    from recsys.config import Settings
    from recsys.training import fine_tune as real_fine_tune

    store = _store(root)
    _wait(start)
    meta = real_fine_tune(store, Settings(**settings), date.fromisoformat(day), run_id=run_id)
    return {"version": meta["version"], "reused": meta["reused"], "run_id": run_id}
