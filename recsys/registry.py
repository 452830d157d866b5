"""The model registry: ``registry/two_tower.json`` in the store.

It holds the trained versions (with their metadata and metrics), one decision per partition date,
the gate's decision on each full retrain (``retrains``, keyed by version), the current champion, and a
history of every change and every on-call decision (what, when, why, and the ``run_id`` that made it).
The document's shape is :class:`Registry` (plain JSON: the types below only describe it).

Many processes write it: the tasks of three DAGs, the CLI, benchmarks, on several machines. Every write
goes through :func:`update` (load, change, save under the store lock :data:`LOCK`, a lease with owner and
expiry: :mod:`recsys.storage.lock`), so no update is lost; :func:`load` reads without the lock (a file
is replaced atomically). Version numbers are handed out by :func:`allocate_version` before a version
directory is written, and :func:`training_lock` makes a date's training happen once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any, Final, NotRequired, Required, TypedDict, TypeVar, cast

from recsys.errors import RecsysError
from recsys.storage import PartitionStore, layout
from recsys.storage.lock import StoreLock, store_lock

T = TypeVar("T")

# --- the locks (directories of leases, recsys.storage.lock) ----------------------------------------------
LOCK: Final = "registry/locks/two_tower"  # every write of the registry
LOCK_EXPIRY: Final = 60.0  # seconds; a write holds it for well under a second (a few on a busy HDFS)
LOCK_TIMEOUT: Final = 900.0  # a writer gives up (with who holds it) after this long
LOCK_POLL: Final = 0.1  # seconds at most between two looks of a waiting writer (two store reads each)
TRAINING_LOCK_EXPIRY: Final = 300.0  # a training refreshes its lock every 100 s while it runs

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
# --- history actions: housekeeping -----------------------------------------------------------------------
PRUNED: Final = "pruned"  # version directories deleted by retention (recsys.serving.retention)
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
    pruned: str  # when retention deleted the version's directory (the entry stays; see PRUNED)


class Forced(TypedDict):
    """``forced`` of a decision on-call forced to deploy."""

    reason: str
    run_id: str | None
    at: str


class Decision(TypedDict, total=False):
    """``decisions[ISO date]``: the deploy gate's decision on a date's candidate (``recsys.evaluation``)."""

    date: str
    candidate_version: Required[int | None]  # None: the date trained no candidate (a thin day, recsys.training)
    champion_version: int | None
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    eval_users: int
    eval_examples: int
    eval_sample: dict[str, float | int]  # set when max_eval_users sampled the held-out users (recsys.evaluation)
    # paired per-user sums of the key metric (recsys.evaluation.Evidence), which later thin days may pool
    eval_evidence: dict[str, float | int]
    eval_pooled: dict[str, Any]  # set when the decision pooled the evidence of earlier thin days
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
        "versions": list[int],  # pruned
        "keep": int | None,  # pruned: RECSYS_KEEP_VERSIONS at the time
    },
    total=False,
)


class Reservation(TypedDict):
    """``reservations[str(n)]``: version number ``n`` handed to a training under way (:func:`allocate_version`)."""

    kind: str
    date: str  # ISO date trained up to
    run_id: str | None
    owner: str  # host:pid
    at: str


class Registry(TypedDict):
    """The whole document."""

    champion: int | None
    versions: dict[str, VersionEntry]  # keyed by str(version)
    decisions: dict[str, Decision]  # keyed by ISO date
    history: list[HistoryEntry]  # oldest first
    retrains: NotRequired[dict[str, RetrainDecision]]  # keyed by str(version); absent before the first
    reservations: NotRequired[dict[str, Reservation]]  # keyed by str(version); absent before the first


class DeployChoice(TypedDict):
    """What :func:`deploy_override` returns."""

    deploy: bool
    reason: str
    mode: str
    version: int | None  # None: the date trained no candidate (never deployed)


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


_writing = threading.local()


@contextlib.contextmanager
def _locked(store: PartitionStore, run_id: str | None) -> Iterator[StoreLock]:
    if getattr(_writing, "active", False):
        raise RuntimeError("registry.update inside registry.update: its outer save would undo the inner one")
    with store_lock(store, LOCK, run_id=run_id, purpose="registry write", expiry=LOCK_EXPIRY,
                    timeout=LOCK_TIMEOUT, poll=LOCK_POLL) as lock:
        _writing.active = True
        try:
            yield lock
        finally:
            _writing.active = False


def update(store: PartitionStore, change: Callable[[Registry], T], run_id: str | None = None) -> T:
    """Apply ``change`` to the registry and save it, all under :data:`LOCK`; returns what ``change`` returns.

    Every write of the registry goes through here (``change`` edits the document in place and must not
    write to the store itself). Nothing is written when ``change`` raises or changes nothing.
    """
    with _locked(store, run_id) as lock:
        registry = load(store)
        before = json.dumps(registry, sort_keys=True, default=str)
        result = change(registry)
        if json.dumps(registry, sort_keys=True, default=str) != before:
            lock.check()
            store.write_json(layout.REGISTRY, registry)
    return result


class Held:
    """The registry while :func:`hold` holds :data:`LOCK`: read, change, and do store work in between."""

    def __init__(self, store: PartitionStore, lock: StoreLock) -> None:
        self.store, self.lock = store, lock

    def update(self, change: Callable[[Registry], T]) -> T:
        """As :func:`update`, inside the held lock."""
        registry = load(self.store)
        before = json.dumps(registry, sort_keys=True, default=str)
        result = change(registry)
        if json.dumps(registry, sort_keys=True, default=str) != before:
            self.lock.check()
            self.store.write_json(layout.REGISTRY, registry)
        return result


@contextlib.contextmanager
def hold(store: PartitionStore, run_id: str | None = None) -> Iterator[Held]:
    """Hold :data:`LOCK` over several steps (registry changes and store writes between them, e.g. pruning):
    no other registry writer runs meanwhile. Call ``lock.check()`` before each store write."""
    with _locked(store, run_id) as lock:
        yield Held(store, lock)


def is_pruned(registry: Registry, version: int) -> bool:
    """True if retention deleted ``version``'s directory (its registry entry stays)."""
    return "pruned" in registry["versions"].get(str(version), {})


def save(store: PartitionStore, registry: Registry) -> None:
    """Replace the whole document (under :data:`LOCK`); a change of it goes through :func:`update` instead."""
    with _locked(store, None) as lock:
        lock.check()
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
    """The number after every registered and reserved one (only :func:`allocate_version` hands numbers out)."""
    taken = [*registry["versions"], *registry.get("reservations", {})]
    return max((int(k) for k in taken), default=0) + 1


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def training_lock(store: PartitionStore, kind: str, day: date, run_id: str | None) -> contextlib.AbstractContextManager[
        StoreLock]:
    """Hold the lock of training ``kind`` on ``day`` while it runs (waiting while another run holds it).

    A second run of the same date then finds the first's version instead of training again; a crashed
    run's lock is taken over after :data:`TRAINING_LOCK_EXPIRY` (at once if it died on this host).
    """
    return store_lock(store, f"registry/locks/train-{kind}-{day.isoformat()}", run_id=run_id,
                      purpose=f"{kind} of {day.isoformat()}", expiry=TRAINING_LOCK_EXPIRY, poll=2.0)


def allocate_version(store: PartitionStore, day: date, kind: str, run_id: str | None) -> int:
    """Reserve a version number for a training of ``kind`` on ``day``, before its directory is written.

    The number is above every registered, reserved or stored version, so two trainings never share
    one. Callers hold :func:`training_lock` of ``kind`` and ``day``: a reservation of the same kind and
    day is left by an attempt that died before registering its version, and is reused (its directory,
    never registered, is replaced).
    """
    def reserve(registry: Registry) -> int:
        reservations = registry.setdefault("reservations", {})
        mine: Reservation = {"kind": kind, "date": day.isoformat(), "run_id": run_id, "owner": _owner(), "at": now()}
        for key, old in reservations.items():
            if (old["kind"], old["date"]) == (kind, day.isoformat()):
                reservations[key] = mine
                return int(key)
        stored = [int(name) for name in store.list_dir(layout.MODELS) if name.isdigit()]
        version = max(next_version(registry), max(stored, default=0) + 1)
        reservations[str(version)] = mine
        return version

    return update(store, reserve, run_id)


def add_version(store: PartitionStore, version: int, metadata: VersionEntry, run_id: str | None) -> None:
    """Register trained ``version`` (its reservation, if any, is done); a registered version is never replaced."""
    def add(registry: Registry) -> None:
        if str(version) in registry["versions"]:
            raise RegistryError(f"version {version} is already registered: a version is never overwritten")
        registry.get("reservations", {}).pop(str(version), None)
        registry["versions"][str(version)] = metadata
        registry["history"].append(
            {"at": now(), "action": TRAINED, "version": version, "date": metadata["trained_on"], "run_id": run_id}
        )

    update(store, add, run_id)


def _verdict(decision: Decision) -> str:
    return BLESSED if decision["blessed"] else REJECTED


def record_decision(store: PartitionStore, day: date, decision: Decision, run_id: str | None) -> None:
    """Record the evaluation decision of ``day`` (replacing an older one for the same date)."""
    def record(registry: Registry) -> None:
        registry["decisions"][day.isoformat()] = decision
        entry: HistoryEntry = {"at": now(), "action": _verdict(decision), "date": day.isoformat(),
                               "reason": decision["reason"], "run_id": run_id}
        if decision["candidate_version"] is not None:  # None: a thin day trained no candidate
            entry["version"] = decision["candidate_version"]
        registry["history"].append(entry)

    update(store, record, run_id)


def record_retrain_decision(
    store: PartitionStore, version: int, decision: RetrainDecision, run_id: str | None
) -> None:
    """Record the deploy gate's decision on full-retrain ``version`` under ``retrains`` (keyed by version).

    Full retrains are not a date's candidate, so their decisions do not go under ``decisions``.
    """
    def record(registry: Registry) -> None:
        registry.setdefault("retrains", {})[str(version)] = decision
        registry["history"].append(
            {"at": now(), "action": _verdict(decision), "kind": FULL_RETRAIN,
             "version": version, "date": decision["date"], "reason": decision["reason"], "run_id": run_id}
        )

    update(store, record, run_id)


def set_champion(
    store: PartitionStore, version: int, action: str, reason: str, run_id: str | None
) -> HistoryEntry:
    """Switch the champion pointer to ``version`` and record the switch (``action``: :data:`DEPLOYED` or
    :data:`ROLLBACK`); returns the history entry."""
    def switch(registry: Registry) -> HistoryEntry:
        return _switch(registry, version, action, reason, run_id)

    return update(store, switch, run_id)


def _switch(registry: Registry, version: int, action: str, reason: str, run_id: str | None) -> HistoryEntry:
    if str(version) not in registry["versions"]:
        raise RegistryError(f"version {version} is not in the registry; known: {sorted(registry['versions'])}")
    if is_pruned(registry, version):
        raise RegistryError(f"version {version} was pruned by retention on "
                            f"{registry['versions'][str(version)]['pruned']} (its directory is gone): "
                            "pick a version that is kept")
    entry: HistoryEntry = {"at": now(), "action": action, "from": registry["champion"], "to": version,
                           "reason": reason, "run_id": run_id}
    registry["champion"] = version
    registry["history"].append(entry)
    return entry


def deploy_once(store: PartitionStore, version: int, reason: str, run_id: str | None) -> HistoryEntry | None:
    """Make ``version`` the champion (:data:`DEPLOYED`) unless it is or was deployed already (then None).

    The check and the switch are one registry update: of two concurrent deploys of a version, one switches.
    """
    def deploy(registry: Registry) -> HistoryEntry | None:
        if is_pruned(registry, version):
            raise RegistryError(f"version {version} was pruned by retention: it cannot be deployed")
        if registry["champion"] == version or any(
            h["action"] == DEPLOYED and h.get("to") == version for h in registry["history"]
        ):
            return None  # a rerun of a date deployed before must not take the champion back (that is a rollback)
        return _switch(registry, version, DEPLOYED, reason, run_id)

    return update(store, deploy, run_id)


def record_accepted_invalid(
    store: PartitionStore, day: date, reason: str, failed: list[str], run_id: str | None
) -> HistoryEntry:
    """Record that on-call accepted partition ``day`` although it failed validation; returns the entry.

    ``failed`` names the failed expectations (as in the validation message); ``reason`` must say why.
    """
    if not reason.strip():
        raise RegistryError(f"accepting the invalid partition {day} needs a reason")
    entry: HistoryEntry = {"at": now(), "action": ACCEPTED_INVALID, "date": day.isoformat(),
                           "reason": reason.strip(), "failed_expectations": list(failed), "run_id": run_id}
    update(store, lambda registry: registry["history"].append(entry), run_id)
    return entry


# --- on-call decisions -------------------------------------------------------------------------------


def record_manual(store: PartitionStore, action: str, reason: str | None, run_id: str | None,
                  **fields: Any) -> HistoryEntry:
    """Append an on-call decision (``action`` with its ``reason`` and ``run_id``) to the history; returns it.

    ``fields`` are further :class:`HistoryEntry` keys. A retry of the same run (same action, run id and
    fields) does not add a second entry.
    """
    entry = _manual(action, reason, run_id, **fields)
    return update(store, lambda registry: _append_once(registry, entry), run_id)


def _manual(action: str, reason: str | None, run_id: str | None, **fields: Any) -> HistoryEntry:
    return cast(HistoryEntry, {"at": now(), "action": action, **fields,
                               "reason": (reason or "").strip() or None, "run_id": run_id})


def _append_once(registry: Registry, entry: HistoryEntry) -> HistoryEntry:
    """Append ``entry`` unless the history has it already (same fields but the time, and a run id)."""
    same = {k: v for k, v in entry.items() if k != "at"}
    for old in registry["history"]:
        if entry.get("run_id") is not None and {k: v for k, v in old.items() if k != "at"} == same:
            return old
    registry["history"].append(entry)
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
    why = (reason or "").strip()

    def decide(registry: Registry) -> DeployChoice:
        decision = registry["decisions"].get(day.isoformat())
        if decision is None:
            raise RegistryError(f"no evaluation decision for {day}: run the evaluate step first")
        version = decision["candidate_version"]
        if mode == GATE:
            return {"deploy": bool(decision["blessed"]), "reason": decision["reason"], "mode": mode,
                    "version": version}
        if not why:
            raise RegistryError(
                f"{'skipping' if mode == SKIP else 'forcing'} the deploy of {day} needs a reason "
                "(it is recorded in the registry history)"
            )
        gate = decision.get("gate_reason", decision["reason"])
        if mode == FORCE and version is None:
            raise RegistryError(f"{day} has no candidate to deploy ({decision['reason']}); the champion stays")
        if mode == SKIP:
            _append_once(registry, _manual(DEPLOY_SKIPPED, why, run_id, date=day.isoformat(), version=version,
                                           gate_blessed=bool(decision["blessed"])))
            return {"deploy": False, "reason": f"deploy skipped by on-call: {why}", "mode": mode, "version": version}
        if not decision.get("forced"):
            registry["decisions"][day.isoformat()] = decision | {
                "blessed": True, "reason": f"forced by on-call: {why} (the gate said: {gate})",
                "gate_reason": gate, "gate_blessed": bool(decision["blessed"]),
                "forced": {"reason": why, "run_id": run_id, "at": now()},
            }
        _append_once(registry, _manual(DEPLOY_FORCED, why, run_id, date=day.isoformat(), version=version,
                                       gate_reason=gate))
        return {"deploy": True, "reason": f"deploy forced by on-call: {why}", "mode": mode, "version": version}

    if mode == GATE:  # a read: no lock
        return decide(load(store))
    return update(store, decide, run_id)
