"""Version retention: delete the directories of old versions that nothing may use any more.

Every trained version keeps a full ``models/two_tower/versions/<n>/`` (tables, SavedModel, index).
:func:`prune_versions` keeps the newest ``RECSYS_KEEP_VERSIONS`` trained versions and every protected one
(:func:`protected_versions`) and deletes the directories of the others. Their registry entries stay, marked
``pruned`` (when), and each run that prunes adds one :data:`~recsys.registry.PRUNED` history entry (versions,
reason, run id). It all happens under the registry lock (:func:`recsys.registry.hold`), so no deploy,
rollback or training registers anything while versions are chosen and deleted.
"""

from __future__ import annotations

import logging
from typing import Any

from recsys import registry
from recsys.config import Settings
from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)


def protected_versions(reg: registry.Registry) -> dict[int, str]:
    """Registered versions that must keep their directory, each with why.

    The champion; every version a champion switch went to or from (``rollback`` may return to any deployed
    version); every version the next fine-tune may start from (:func:`recsys.registry.parent_for_date` of any
    date after the newest fine-tune, also if a full retrain still awaiting its gate is rejected) and the
    newest fine-tune's own parent; candidates awaiting the deploy gate, and blessed ones awaiting their deploy.
    """
    versions = reg["versions"]
    why: dict[int, str] = {}

    def protect(version: int | None, reason: str) -> None:
        if version is not None and str(version) in versions:
            why.setdefault(int(version), reason)

    protect(reg["champion"], "champion")
    for h in reg["history"]:
        if h["action"] in (registry.DEPLOYED, registry.ROLLBACK):
            protect(h.get("to"), "deployed: rollback may return to it")
            protect(h.get("from"), "deployed: rollback may return to it")
    for version in _next_parents(reg):
        protect(version, "the next fine-tune may start from it")
    fine_tunes = [(m["trained_on"], int(k)) for k, m in versions.items()
                  if m.get("kind", registry.FINE_TUNE) == registry.FINE_TUNE]
    if fine_tunes:
        protect(versions[str(max(fine_tunes)[1])].get("parent"), "parent of the newest fine-tune")
    for version, reason in _awaiting(reg).items():
        protect(version, reason)
    return why


def _awaiting(reg: registry.Registry) -> dict[int, str]:
    """Versions the pipeline has not finished with: no gate decision yet, or blessed and neither deployed
    nor skipped by on-call."""
    skipped = {h.get("version") for h in reg["history"] if h["action"] == registry.DEPLOY_SKIPPED}
    deployed = {h.get("to") for h in reg["history"] if h["action"] == registry.DEPLOYED}
    out: dict[int, str] = {}
    for key, meta in reg["versions"].items():
        if meta.get("kind", registry.FINE_TUNE) == registry.FULL_RETRAIN:
            decision: registry.Decision | None = reg.get("retrains", {}).get(key)
        else:
            decision = reg["decisions"].get(meta["trained_on"])
        if decision is None:
            out[int(key)] = "awaiting the deploy gate"
        elif decision["blessed"] and decision["candidate_version"] == int(key) and int(key) not in skipped | deployed:
            out[int(key)] = "blessed, awaiting its deploy"
    return out


def _next_parents(reg: registry.Registry) -> set[int]:
    """Every version :func:`recsys.registry.parent_for_date` may pick for a date after the newest fine-tune,
    now or after the full retrains awaiting their gate are rejected."""
    versions = reg["versions"]
    retrains = reg.get("retrains", {})
    rejected = {k for k, d in retrains.items() if not d["blessed"]}
    pending = {k for k, m in versions.items() if m.get("kind") == registry.FULL_RETRAIN and k not in retrains}
    since = max((m["trained_on"] for m in versions.values()
                 if m.get("kind", registry.FINE_TUNE) == registry.FINE_TUNE), default="")
    out: set[int] = set()
    for excluded in (rejected, rejected | pending):
        usable = sorted((m["trained_on"], int(k)) for k, m in versions.items() if k not in excluded)
        # a date after trained date t starts from the highest version of the last usable date <= t
        for i, (trained_on, version) in enumerate(usable):
            last_of_date = i + 1 == len(usable) or usable[i + 1][0] != trained_on
            if last_of_date and trained_on >= since:
                out.add(version)
    return out


def prune_versions(store: PartitionStore, settings: Settings, *, run_id: str | None = None) -> dict[str, Any]:
    """Delete the directories of versions beyond ``settings.keep_versions`` that no one may use; idempotent.

    Kept: the newest ``keep_versions`` registered versions (by number), every :func:`protected_versions`
    one, and any with a serving index (``rollback --to`` accepts it). The others are marked ``pruned`` in the
    registry with a :data:`~recsys.registry.PRUNED` history entry, then deleted; a directory of a version
    marked pruned earlier (a crash between the two) is deleted too. ``keep_versions`` None: nothing happens.
    Returns ``pruned`` (versions pruned by this call), ``removed`` (directories deleted), ``protected``
    (version -> why) and ``keep``.
    """
    keep = settings.keep_versions
    if keep is None:
        return {"keep": None, "pruned": [], "removed": [], "protected": {}}
    with registry.hold(store, run_id) as held:
        stored = {int(name) for name in store.list_dir(layout.MODELS) if name.isdigit()}

        def plan(reg: registry.Registry) -> tuple[list[int], list[int], dict[int, str]]:
            protected = protected_versions(reg)
            numbers = sorted(int(k) for k in reg["versions"])
            newest = set(numbers[-keep:])
            doomed = []
            for version in numbers:
                if registry.is_pruned(reg, version) or version in protected or version in newest:
                    continue
                if version in stored and store.exists(f"{layout.model_version(version)}/{layout.INDEX_FILE}"):
                    protected[version] = "has a serving index: rollback may return to it"
                    continue
                doomed.append(version)
            if doomed:
                at = registry.now()
                for version in doomed:
                    reg["versions"][str(version)]["pruned"] = at
                reason = (f"retention (RECSYS_KEEP_VERSIONS={keep}): older than the newest {keep} trained versions "
                          "and not the champion, deployed, a possible parent of the next fine-tune, or awaiting "
                          "the deploy gate or a deploy")
                reg["history"].append({"at": at, "action": registry.PRUNED, "versions": doomed, "keep": keep,
                                       "reason": reason, "run_id": run_id})
            pruned = [v for v in numbers if registry.is_pruned(reg, v)]
            return doomed, [v for v in pruned if v in stored], protected

        doomed, present, protected = held.update(plan)
        for version in present:
            held.lock.check()  # never delete after the lease was lost
            store.delete(layout.model_version(version))
    if doomed:
        log.info("retention pruned versions %s (keeping the newest %d and %d protected)", doomed, keep,
                 len(protected))
    return {"keep": keep, "pruned": doomed, "removed": present,
            "protected": {str(v): protected[v] for v in sorted(protected)}}
