"""Full retrain: a model trained from scratch on a window of days, through the same evaluation and deploy gate.

Daily fine-tunes drift with every warm start; a periodic retrain from scratch resets that. The three
steps mirror the incremental pipeline and are what ``dags/recsys_full_retrain.py`` and ``recsys retrain``
run:

1. :func:`train` trains on the feature partitions of the last ``window_days`` days ending at ``end``
   (default: the newest partition with features), the end day's held-out users excluded.
2. :func:`evaluate` scores it and the champion on the end day's held-out users with the same
   :func:`recsys.evaluation.compare_with_champion` and thresholds as a day's candidate; the decision is
   recorded under ``retrains`` in the registry either way.
3. :func:`deploy` deploys it only when blessed (:func:`recsys.serving.deploy.deploy_version`).

Each step is idempotent for one ``run_id``: a retry of the same run reuses the version it trained.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from recsys import registry
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)


class RetrainError(RecsysError, RuntimeError):
    """A full retrain cannot run (no features in the window, unknown version, a contaminated comparison)."""


def end_date(store: PartitionStore, requested: date | None = None) -> date:
    """The day a retrain ends at: ``requested`` if it has features, else (None) the newest day with features."""
    days = store.partitions(layout.FEATURES)
    if requested is not None:
        if requested not in days:
            raise RetrainError(
                f"no features for {requested}: pick a processed date ({days[0]} .. {days[-1]})" if days
                else f"no features for {requested}: no partition was processed yet"
            )
        return requested
    if not days:
        raise RetrainError("no partition was processed yet: there is nothing to retrain on")
    return days[-1]


def train(
    store: PartitionStore, settings: Settings, end: date | None = None, window_days: int | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train a from-scratch version on ``window_days`` (default ``RECSYS_RETRAIN_WINDOW_DAYS``) ending at ``end``.

    Returns the version's metadata plus ``reused`` (True when this ``run_id`` had trained it already).
    """
    from recsys.training import train_from_scratch

    window = settings.retrain_window_days if window_days is None else window_days
    if window <= 0:
        raise RetrainError(f"the retrain window must be at least one day, got {window}")
    day = end_date(store, end)
    with registry.training_lock(store, registry.FULL_RETRAIN, day, run_id):  # a concurrent retry waits
        reg = registry.load(store)
        if run_id is not None:
            for entry in reg["history"]:
                meta = reg["versions"].get(str(entry.get("version")))
                if (entry["action"] == registry.TRAINED and entry.get("run_id") == run_id and meta
                        and meta.get("kind") == registry.FULL_RETRAIN and meta["trained_on"] == day.isoformat()):
                    log.info("run %s already trained full retrain version %s", run_id, entry["version"])
                    return meta | {"version": int(entry["version"]), "reused": True}
        metadata = train_from_scratch(store, settings, day, run_id=run_id, window_days=window)
    return metadata | {"window_days": window}


def evaluate(store: PartitionStore, settings: Settings, version: int, run_id: str | None = None) -> dict[str, Any]:
    """Compare full-retrain ``version`` with the champion on its end day's held-out users; record the decision.

    Refused when the champion was trained on a later day than the retrain (later fine-tunes replay older
    days' examples, held-out ones included, so the comparison would favour the champion unfairly).
    Idempotent: a decision already recorded for the version is returned unchanged.
    """
    from recsys.evaluation import compare_with_champion

    reg = registry.load(store)
    meta = reg["versions"].get(str(version))
    if meta is None or meta.get("kind") != registry.FULL_RETRAIN:
        raise RetrainError(f"version {version} is not a full retrain in the registry")
    recorded = reg.get("retrains", {}).get(str(version))
    if recorded is not None:
        return recorded | {"reused": True}
    day = date.fromisoformat(meta["trained_on"])
    champion = reg["champion"]
    if champion is not None and reg["versions"][str(champion)]["trained_on"] > meta["trained_on"]:
        raise RetrainError(
            f"the champion (version {champion}) was trained on {reg['versions'][str(champion)]['trained_on']}, "
            f"after this retrain's end day {day}: retrain up to the newest processed date instead"
        )
    result: registry.RetrainDecision = {**compare_with_champion(store, settings, day, version, champion),
                                        "kind": registry.FULL_RETRAIN, "window_days": meta.get("window_days")}
    registry.record_retrain_decision(store, version, result, run_id)
    log.info("full retrain version %d: %s", version, result["reason"])
    return result | {"reused": False}


def deploy(store: PartitionStore, settings: Settings, version: int, run_id: str | None = None) -> dict[str, Any]:
    """Deploy full-retrain ``version`` if its recorded decision blessed it (idempotent)."""
    from recsys.serving.deploy import DeployError, deploy_version

    decision = registry.load(store).get("retrains", {}).get(str(version))
    if decision is None:
        raise DeployError(f"full retrain version {version} has no evaluation decision: evaluate it first")
    if not decision["blessed"]:
        raise DeployError(f"full retrain version {version} was not blessed ({decision['reason']}); refusing to deploy")
    return deploy_version(
        store, settings, version, date.fromisoformat(decision["date"]), f"full retrain: {decision['reason']}", run_id
    )
