"""Processes of the retention race test (tests/unit/test_retention.py): importable for ``spawn``."""

from __future__ import annotations

import time
from typing import Any


def prune(root: str, keep: int, run_id: str, start: float) -> list[dict[str, Any]]:
    """``prune_versions`` three times in a row, from wall-clock time ``start``."""
    from recsys.config import Settings
    from recsys.serving.retention import prune_versions
    from recsys.storage.local import LocalStore

    store = LocalStore(root)
    time.sleep(max(0.0, start - time.time()))
    return [prune_versions(store, Settings(storage_root=root, keep_versions=keep), run_id=f"{run_id}-{i}")
            for i in range(3)]


def rollbacks(root: str, targets: list[int], start: float) -> list[int]:
    """``recsys.serving.deploy.rollback`` to each of ``targets`` in turn; returns the versions switched to."""
    from recsys.serving.deploy import rollback
    from recsys.storage.local import LocalStore

    store = LocalStore(root)
    time.sleep(max(0.0, start - time.time()))
    return [rollback(store, f"race {i}", to=target, run_id="rb")["version"] for i, target in enumerate(targets)]
