"""The model registry: ``registry/two_tower.json`` in the store.

It holds the trained versions (with their metadata and metrics), one decision per partition date,
the current champion, and a history of every change (who, when, why). Writes are atomic (the store
writes a temporary file and renames it); DAG runs are serialised (``max_active_runs=1``), so there
is a single writer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from recsys.storage import PartitionStore, layout


class RegistryError(RuntimeError):
    """The registry is inconsistent with a request (unknown version, nothing to roll back to)."""


def load(store: PartitionStore) -> dict[str, Any]:
    """The registry document; an empty one if none was written yet."""
    if not store.exists(layout.REGISTRY):
        return {"champion": None, "versions": {}, "decisions": {}, "history": []}
    return store.read_json(layout.REGISTRY)


def save(store: PartitionStore, registry: dict[str, Any]) -> None:
    store.write_json(layout.REGISTRY, registry)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


FINE_TUNE = "fine_tune"
FULL_RETRAIN = "full_retrain"


def version_for_date(registry: dict[str, Any], day: date) -> int | None:
    """The version fine-tuned on partition ``day`` (the day's candidate), if any."""
    for key, meta in registry["versions"].items():
        if meta["trained_on"] == day.isoformat() and meta.get("kind", FINE_TUNE) == FINE_TUNE:
            return int(key)
    return None


def parent_for_date(registry: dict[str, Any], day: date) -> int | None:
    """The version trained on the latest partition before ``day`` (the checkpoint to start from).

    Fine-tunes and full retrains both count; for one date the later version wins.
    """
    earlier = [
        (meta["trained_on"], int(key))  # ties on the date: the higher version number
        for key, meta in registry["versions"].items()
        if meta["trained_on"] < day.isoformat()
    ]
    return max(earlier)[1] if earlier else None


def next_version(registry: dict[str, Any]) -> int:
    return max((int(k) for k in registry["versions"]), default=0) + 1


def add_version(store: PartitionStore, version: int, metadata: dict[str, Any], run_id: str | None) -> None:
    registry = load(store)
    registry["versions"][str(version)] = metadata
    registry["history"].append(
        {"at": now(), "action": "trained", "version": version, "date": metadata["trained_on"], "run_id": run_id}
    )
    save(store, registry)


def record_decision(store: PartitionStore, day: date, decision: dict[str, Any], run_id: str | None) -> None:
    """Record the evaluation decision of ``day`` (replacing an older one for the same date)."""
    registry = load(store)
    registry["decisions"][day.isoformat()] = decision
    registry["history"].append(
        {"at": now(), "action": "blessed" if decision["blessed"] else "rejected",
         "version": decision["candidate_version"], "date": day.isoformat(), "reason": decision["reason"],
         "run_id": run_id}
    )
    save(store, registry)


def set_champion(
    store: PartitionStore, version: int, action: str, reason: str, run_id: str | None
) -> dict[str, Any]:
    """Switch the champion pointer to ``version`` and record the switch; returns the history entry."""
    registry = load(store)
    if str(version) not in registry["versions"]:
        raise RegistryError(f"version {version} is not in the registry; known: {sorted(registry['versions'])}")
    entry = {"at": now(), "action": action, "from": registry["champion"], "to": version,
             "reason": reason, "run_id": run_id}
    registry["champion"] = version
    registry["history"].append(entry)
    save(store, registry)
    return entry


def record_accepted_invalid(
    store: PartitionStore, day: date, reason: str, failed: list[str], run_id: str | None
) -> dict[str, Any]:
    """Record that on-call accepted partition ``day`` although it failed validation; returns the entry.

    ``failed`` names the failed expectations (as in the validation message); ``reason`` must say why.
    """
    if not reason.strip():
        raise RegistryError(f"accepting the invalid partition {day} needs a reason")
    registry = load(store)
    entry = {"at": now(), "action": "accepted_invalid", "date": day.isoformat(), "reason": reason.strip(),
             "failed_expectations": list(failed), "run_id": run_id}
    registry["history"].append(entry)
    save(store, registry)
    return entry
