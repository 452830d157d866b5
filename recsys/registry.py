"""The model registry: ``registry/two_tower.json`` in the store.

It holds the trained versions (with their metadata and metrics), one decision per partition date,
the gate's decision on each full retrain (``retrains``, keyed by version), the current champion, and a
history of every change and every on-call decision (what, when, why, and the ``run_id`` that made it).
The document's shape is :class:`Registry` (plain JSON: the types below only describe it). :func:`load`
and :func:`save` are its only reads and writes. Writes are atomic (the store writes a temporary file and
renames it); DAG runs are serialised (``max_active_runs=1``), so there is a single writer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Final, NotRequired, Required, TypedDict, cast

from recsys.errors import RecsysError
from recsys.storage import PartitionStore, layout

# --- the kinds of version ------------------------------------------------------------------------------
FINE_TUNE: Final = "fine_tune"
FULL_RETRAIN: Final = "full_retrain"

# --- history actions: the pipeline's own steps ---------------------------------------------------------
TRAINED: Final = "trained"
BLESSED: Final = "blessed"
REJECTED: Final = "rejected"
DEPLOYED: Final = "deployed"
# --- history actions: on-call decisions ---------------------------------------------------------------
ROLLBACK: Final = "rollback"
DEPLOY_SKIPPED: Final = "deploy_skipped"
DEPLOY_FORCED: Final = "deploy_forced"
REVALIDATION_FORCED: Final = "revalidation_forced"
ACCEPTED_INVALID: Final = "accepted_invalid"
ON_CALL_ACTIONS: Final = frozenset({ROLLBACK, DEPLOY_SKIPPED, DEPLOY_FORCED, REVALIDATION_FORCED, ACCEPTED_INVALID})

# --- deploy modes (:func:`deploy_override`) -----------------------------------------------------------
GATE: Final = "gate"
FORCE: Final = "force"
SKIP: Final = "skip"
DEPLOY_MODES: Final = (GATE, FORCE, SKIP)


class VersionEntry(TypedDict, total=False):
    """``versions[str(n)]``: a trained version's metadata (as in its ``metadata.json``).

    Older documents may lack any key but ``trained_on``; ``kind`` missing means :data:`FINE_TUNE`.
    """

    version: int
    kind: str  # FINE_TUNE or FULL_RETRAIN
    trained_on: Required[str]  # ISO date of the (last) partition trained on
    parent: int | None
    cold_start: bool
    window_days: int | None  # full retrains: the days trained on
    train_examples: int
    replay_examples: int
    epochs: int
    learning_rate: float
    embedding_dim: int
    batch_size: int
    history_length: int
    repeat_length: int
    repeat_scale: float
    trend_days: int
    user_rows: int
    item_rows: int
    new_user_rows: int
    new_item_rows: int
    table_megabytes: float
    final_loss: float
    repeat_weight: float
    trend_weight: float
    logq_correction: bool
    train_seconds: float
    examples_per_second: float | None
    created_at: str


class Forced(TypedDict):
    """``forced`` of a decision on-call forced to deploy."""

    reason: str
    run_id: str | None
    at: str


class Decision(TypedDict, total=False):
    """``decisions[ISO date]``: the deploy gate's decision on a date's candidate (``recsys.evaluation``)."""

    date: str
    candidate_version: Required[int]
    champion_version: int | None
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    eval_users: int
    eval_examples: int
    blessed: Required[bool]
    reason: Required[str]
    decided_at: str
    # set when on-call forced the deploy (:func:`deploy_override`)
    gate_reason: str
    gate_blessed: bool
    forced: Forced


class RetrainDecision(Decision, total=False):
    """``retrains[str(version)]``: the deploy gate's decision on a full retrain (``recsys.retrain``)."""

    kind: str  # FULL_RETRAIN
    window_days: int | None


# ``from`` is a keyword, hence the functional form
HistoryEntry = TypedDict(
    "HistoryEntry",
    {
        "at": Required[str],
        "action": Required[str],  # one of the action constants above (older or newer ones are kept as they are)
        "version": int,
        "date": str,
        "kind": str,  # FULL_RETRAIN on a full retrain's blessed/rejected
        "from": int | None,  # a champion switch (deployed, rollback): the champion before
        "to": int,  # ... and after
        "reason": str | None,
        "run_id": str | None,
        "gate_blessed": bool,  # deploy_skipped
        "gate_reason": str,  # deploy_forced
        "failed_expectations": list[str],  # accepted_invalid
    },
    total=False,
)


class Registry(TypedDict):
    """The whole document."""

    champion: int | None
    versions: dict[str, VersionEntry]  # keyed by str(version)
    decisions: dict[str, Decision]  # keyed by ISO date
    history: list[HistoryEntry]  # oldest first
    retrains: NotRequired[dict[str, RetrainDecision]]  # keyed by str(version); absent before the first


class DeployChoice(TypedDict):
    """What :func:`deploy_override` returns."""

    deploy: bool
    reason: str
    mode: str
    version: int


class RegistryError(RecsysError, RuntimeError):
    """The registry is inconsistent with a request (unknown version, nothing to roll back to)."""


def empty() -> Registry:
    """The document before anything was trained."""
    return {"champion": None, "versions": {}, "decisions": {}, "history": []}


def load(store: PartitionStore) -> Registry:
    """The registry document; an empty one if none was written yet."""
    if not store.exists(layout.REGISTRY):
        return empty()
    return cast(Registry, store.read_json(layout.REGISTRY))


def save(store: PartitionStore, registry: Registry) -> None:
    store.write_json(layout.REGISTRY, registry)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_for_date(registry: Registry, day: date) -> int | None:
    """The version fine-tuned on partition ``day`` (the day's candidate), if any."""
    for key, meta in registry["versions"].items():
        if meta["trained_on"] == day.isoformat() and meta.get("kind", FINE_TUNE) == FINE_TUNE:
            return int(key)
    return None


def parent_for_date(registry: Registry, day: date) -> int | None:
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


def next_version(registry: Registry) -> int:
    return max((int(k) for k in registry["versions"]), default=0) + 1


def add_version(store: PartitionStore, version: int, metadata: VersionEntry, run_id: str | None) -> None:
    registry = load(store)
    registry["versions"][str(version)] = metadata
    registry["history"].append(
        {"at": now(), "action": TRAINED, "version": version, "date": metadata["trained_on"], "run_id": run_id}
    )
    save(store, registry)


def _verdict(decision: Decision) -> str:
    return BLESSED if decision["blessed"] else REJECTED


def record_decision(store: PartitionStore, day: date, decision: Decision, run_id: str | None) -> None:
    """Record the evaluation decision of ``day`` (replacing an older one for the same date)."""
    registry = load(store)
    registry["decisions"][day.isoformat()] = decision
    registry["history"].append(
        {"at": now(), "action": _verdict(decision), "version": decision["candidate_version"],
         "date": day.isoformat(), "reason": decision["reason"], "run_id": run_id}
    )
    save(store, registry)


def record_retrain_decision(
    store: PartitionStore, version: int, decision: RetrainDecision, run_id: str | None
) -> None:
    """Record the deploy gate's decision on full-retrain ``version`` under ``retrains`` (keyed by version).

    Full retrains are not a date's candidate, so their decisions do not go under ``decisions``.
    """
    registry = load(store)
    registry.setdefault("retrains", {})[str(version)] = decision
    registry["history"].append(
        {"at": now(), "action": _verdict(decision), "kind": FULL_RETRAIN,
         "version": version, "date": decision["date"], "reason": decision["reason"], "run_id": run_id}
    )
    save(store, registry)


def set_champion(
    store: PartitionStore, version: int, action: str, reason: str, run_id: str | None
) -> HistoryEntry:
    """Switch the champion pointer to ``version`` and record the switch (``action``: :data:`DEPLOYED` or
    :data:`ROLLBACK`); returns the history entry."""
    registry = load(store)
    if str(version) not in registry["versions"]:
        raise RegistryError(f"version {version} is not in the registry; known: {sorted(registry['versions'])}")
    entry: HistoryEntry = {"at": now(), "action": action, "from": registry["champion"], "to": version,
                           "reason": reason, "run_id": run_id}
    registry["champion"] = version
    registry["history"].append(entry)
    save(store, registry)
    return entry


def record_accepted_invalid(
    store: PartitionStore, day: date, reason: str, failed: list[str], run_id: str | None
) -> HistoryEntry:
    """Record that on-call accepted partition ``day`` although it failed validation; returns the entry.

    ``failed`` names the failed expectations (as in the validation message); ``reason`` must say why.
    """
    if not reason.strip():
        raise RegistryError(f"accepting the invalid partition {day} needs a reason")
    registry = load(store)
    entry: HistoryEntry = {"at": now(), "action": ACCEPTED_INVALID, "date": day.isoformat(),
                           "reason": reason.strip(), "failed_expectations": list(failed), "run_id": run_id}
    registry["history"].append(entry)
    save(store, registry)
    return entry


# --- on-call decisions -------------------------------------------------------------------------------


def record_manual(store: PartitionStore, action: str, reason: str | None, run_id: str | None,
                  **fields: Any) -> HistoryEntry:
    """Append an on-call decision (``action`` with its ``reason`` and ``run_id``) to the history; returns it.

    ``fields`` are further :class:`HistoryEntry` keys. A retry of the same run (same action, run id and
    fields) does not add a second entry.
    """
    registry = load(store)
    entry = cast(HistoryEntry, {"at": now(), "action": action, **fields,
                                "reason": (reason or "").strip() or None, "run_id": run_id})
    same = {k: v for k, v in entry.items() if k != "at"}
    for old in registry["history"]:
        if run_id is not None and {k: v for k, v in old.items() if k != "at"} == same:
            return old
    registry["history"].append(entry)
    save(store, registry)
    return entry


def deploy_override(
    store: PartitionStore, day: date, mode: str, reason: str | None, run_id: str | None
) -> DeployChoice:
    """Whether the candidate of ``day`` goes to deploy: the gate's decision, or on-call's override.

    ``mode`` is ``gate`` (the evaluation decision decides), ``skip`` (do not deploy this time, even if
    blessed) or ``force`` (deploy even if the gate rejected it: the date's decision becomes blessed, the
    gate's own reason kept under ``gate_reason``). Overrides need a reason and are recorded in the
    history as ``deploy_skipped`` / ``deploy_forced`` with ``run_id``.
    """
    if mode not in DEPLOY_MODES:
        raise RegistryError(f"deploy mode {mode!r}: expected one of {', '.join(DEPLOY_MODES)}")
    registry = load(store)
    decision = registry["decisions"].get(day.isoformat())
    if decision is None:
        raise RegistryError(f"no evaluation decision for {day}: run the evaluate step first")
    version = decision["candidate_version"]
    if mode == GATE:
        return {"deploy": bool(decision["blessed"]), "reason": decision["reason"], "mode": mode, "version": version}
    why = (reason or "").strip()
    if not why:
        raise RegistryError(
            f"{'skipping' if mode == SKIP else 'forcing'} the deploy of {day} needs a reason "
            "(it is recorded in the registry history)"
        )
    gate = decision.get("gate_reason", decision["reason"])
    if mode == SKIP:
        record_manual(store, DEPLOY_SKIPPED, why, run_id, date=day.isoformat(), version=version,
                      gate_blessed=bool(decision["blessed"]))
        return {"deploy": False, "reason": f"deploy skipped by on-call: {why}", "mode": mode, "version": version}
    if not decision.get("forced"):
        registry["decisions"][day.isoformat()] = decision | {
            "blessed": True, "reason": f"forced by on-call: {why} (the gate said: {gate})", "gate_reason": gate,
            "gate_blessed": bool(decision["blessed"]), "forced": {"reason": why, "run_id": run_id, "at": now()},
        }
        save(store, registry)
    record_manual(store, DEPLOY_FORCED, why, run_id, date=day.isoformat(), version=version, gate_reason=gate)
    return {"deploy": True, "reason": f"deploy forced by on-call: {why}", "mode": mode, "version": version}
