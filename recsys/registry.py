"""The model registry: ``registry/two_tower.json`` in the store.

It holds the trained versions (with their metadata and metrics), one decision per partition date,
the gate's decision on each full retrain (``retrains``, keyed by version), the current champion, and a
history of every change and every on-call decision (what, when, why, and the ``run_id`` that made it).
Writes are atomic (the store writes a temporary file and renames it); DAG runs are serialised
(``max_active_runs=1``), so there is a single writer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from recsys.errors import RecsysError
from recsys.storage import PartitionStore, layout


class RegistryError(RecsysError, RuntimeError):
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

    Fine-tunes and full retrains both count, except a full retrain its deploy gate rejected (see
    :func:`record_retrain_decision`); for one date the later version wins.
    """
    rejected = {key for key, dec in registry.get("retrains", {}).items() if not dec["blessed"]}
    earlier = [
        (meta["trained_on"], int(key))  # ties on the date: the higher version number
        for key, meta in registry["versions"].items()
        if meta["trained_on"] < day.isoformat() and key not in rejected
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


def record_retrain_decision(
    store: PartitionStore, version: int, decision: dict[str, Any], run_id: str | None
) -> None:
    """Record the deploy gate's decision on full-retrain ``version`` under ``retrains`` (keyed by version).

    Full retrains are not a date's candidate, so their decisions do not go under ``decisions``.
    """
    registry = load(store)
    registry.setdefault("retrains", {})[str(version)] = decision
    registry["history"].append(
        {"at": now(), "action": "blessed" if decision["blessed"] else "rejected", "kind": FULL_RETRAIN,
         "version": version, "date": decision["date"], "reason": decision["reason"], "run_id": run_id}
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


# --- on-call decisions -------------------------------------------------------------------------------
DEPLOY_MODES = ("gate", "force", "skip")


def record_manual(store: PartitionStore, action: str, reason: str | None, run_id: str | None,
                  **fields: Any) -> dict[str, Any]:
    """Append an on-call decision (``action`` with its ``reason`` and ``run_id``) to the history; returns it.

    A retry of the same run (same action, run id and fields) does not add a second entry.
    """
    registry = load(store)
    entry = {"at": now(), "action": action, **fields, "reason": (reason or "").strip() or None, "run_id": run_id}
    same = {k: v for k, v in entry.items() if k != "at"}
    for old in registry["history"]:
        if run_id is not None and {k: v for k, v in old.items() if k != "at"} == same:
            return old
    registry["history"].append(entry)
    save(store, registry)
    return entry


def deploy_override(
    store: PartitionStore, day: date, mode: str, reason: str | None, run_id: str | None
) -> dict[str, Any]:
    """Whether the candidate of ``day`` goes to deploy: the gate's decision, or on-call's override.

    ``mode`` is ``gate`` (the evaluation decision decides), ``skip`` (do not deploy this time, even if
    blessed) or ``force`` (deploy even if the gate rejected it: the date's decision becomes blessed, the
    gate's own reason kept under ``gate_reason``). Overrides need a reason and are recorded in the
    history as ``deploy_skipped`` / ``deploy_forced`` with ``run_id``. Returns ``{"deploy", "reason",
    "mode", "version"}``.
    """
    if mode not in DEPLOY_MODES:
        raise RegistryError(f"deploy mode {mode!r}: expected one of {', '.join(DEPLOY_MODES)}")
    registry = load(store)
    decision = registry["decisions"].get(day.isoformat())
    if decision is None:
        raise RegistryError(f"no evaluation decision for {day}: run the evaluate step first")
    version = decision["candidate_version"]
    if mode == "gate":
        return {"deploy": bool(decision["blessed"]), "reason": decision["reason"], "mode": mode, "version": version}
    why = (reason or "").strip()
    if not why:
        raise RegistryError(
            f"{'skipping' if mode == 'skip' else 'forcing'} the deploy of {day} needs a reason "
            "(it is recorded in the registry history)"
        )
    gate = decision.get("gate_reason", decision["reason"])
    if mode == "skip":
        record_manual(store, "deploy_skipped", why, run_id, date=day.isoformat(), version=version,
                      gate_blessed=bool(decision["blessed"]))
        return {"deploy": False, "reason": f"deploy skipped by on-call: {why}", "mode": mode, "version": version}
    if not decision.get("forced"):
        registry["decisions"][day.isoformat()] = decision | {
            "blessed": True, "reason": f"forced by on-call: {why} (the gate said: {gate})", "gate_reason": gate,
            "gate_blessed": bool(decision["blessed"]), "forced": {"reason": why, "run_id": run_id, "at": now()},
        }
        save(store, registry)
    record_manual(store, "deploy_forced", why, run_id, date=day.isoformat(), version=version, gate_reason=gate)
    return {"deploy": True, "reason": f"deploy forced by on-call: {why}", "mode": mode, "version": version}
