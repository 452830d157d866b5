"""Human-readable summaries of what the pipeline did, per partition date."""

from __future__ import annotations

from datetime import date
from typing import Any, Final

from recsys import registry
from recsys.storage import PartitionStore, layout
from recsys.validation import health


def _read_optional(store: PartitionStore, path: str) -> dict[str, Any] | None:
    """The JSON document at ``path``, or None when that step has not written it."""
    return store.read_json(path) if store.exists(path) else None


def date_lines(store: PartitionStore, day: str, reg: registry.Registry) -> list[str]:
    """A few readable lines about one partition date."""
    lines = [f"== {day}"]
    val = _read_optional(store, f"{layout.validation_report(date.fromisoformat(day))}/summary.json")
    if val is None:
        lines.append("   validation : not run")
    else:
        if val["success"]:
            outcome = "passed"
        elif val.get("accepted"):
            outcome = f"failed ({', '.join(val['failed'])}) but ACCEPTED by on-call: {val['accepted']['reason']}"
        else:
            outcome = f"FAILED ({val['problem'] or ', '.join(val['failed'])})"
        lines.append(f"   validation : {outcome}, {val['rows']} events, {len(val['checks'])} checks")
        margins = health.margin_lines(val)  # how close the day came to each threshold
        lines += [f"   {'margins    :' if i == 0 else ' ' * 12} {m}" for i, m in enumerate(margins)]
    feats = _read_optional(store, f"{layout.features(date.fromisoformat(day))}/stats.json")
    if feats:
        lines.append(
            f"   examples   : {feats['examples']} ({feats['train_examples']} train, "
            f"{feats['holdout_examples']} held out from {feats['holdout_users']} users); "
            f"+{feats['new_users']} users, +{feats['new_items']} items"
        )
        built = feats.get("fingerprint")
        if built:  # which delivery the date's examples (and so its model) came from; a refused later one
            later = (val or {}).get("fingerprint")
            lines.append(f"   delivery   : examples built from the delivery {built[:12]}" + (
                f"; a later delivery {later[:12]} was refused (not trained on)" if later and later != built else ""))
        if "pending_users" in feats:
            lines.append(
                f"   vocabulary : {feats['user_vocab_size']} user rows, {feats['item_vocab_size']} item rows; "
                f"{feats['pending_users']} users and {feats['pending_items']} items wait below the minimum count "
                f"({feats['min_user_count']}, {feats['min_item_count']}) on the OOV row"
            )
    version = next((int(v) for v, m in reg["versions"].items() if m.get("trained_on") == day), None)
    if version is not None and "table_megabytes" in reg["versions"][str(version)]:
        meta = reg["versions"][str(version)]
        lines.append(
            f"   training   : v{version} {meta['kind']} on {meta['train_examples']} + {meta['replay_examples']} replay "
            f"examples in {meta['train_seconds']} s; tables {meta['table_megabytes']} MB "
            f"(+{meta['new_user_rows']} user, +{meta['new_item_rows']} item rows), repeat weight "
            f"{meta['repeat_weight']:.2f}"
            + (f", trend weight {meta['trend_weight']:.2f}" if "trend_weight" in meta else "")
        )
    decision = reg["decisions"].get(day)
    if decision:
        cand = decision["candidate_metrics"]
        champ = decision["champion_metrics"]
        metric = next(iter(cand), "")
        champ_text = f"champion v{decision['champion_version']} {champ[metric]:.4f}" if champ else "no champion"
        cand_text = f"{cand[metric]:.4f}" if metric else "n/a"
        if decision["candidate_version"] is not None:  # None: a thin day trained no candidate (the reason says)
            lines.append(
                f"   {metric or 'metric'} : candidate v{decision['candidate_version']} {cand_text} vs {champ_text}"
            )
        lines.append(f"   decision   : {verdict(decision['blessed'])} - {decision['reason']}")
    return lines


def summary_text(store: PartitionStore, only: str | None = None) -> str:
    """Every processed date (or only the date ``only``), then the champion."""
    reg = registry.load(store)
    days = sorted({*reg["decisions"], *(d.isoformat() for d in store.partitions(layout.RAW_EVENTS))})
    if only is not None:
        return "\n".join(date_lines(store, only, reg))
    lines: list[str] = []
    for day in days:
        lines.extend(date_lines(store, day, reg))
    champion = reg["champion"]
    if champion is None:
        lines.append("Champion: none deployed yet")
    else:
        meta = reg["versions"][str(champion)]
        lines.append(f"Champion: version {champion}, fine-tuned on {meta['trained_on']}")
    return "\n".join(lines)


def showcase_text(store: PartitionStore, k: int = 10) -> str:
    """The champion, and its recommendations for the most active customer next to what they bought."""
    import pandas as pd

    from recsys import schema
    from recsys.features.build import load_examples
    from recsys.serving.recommend import recommend

    reg = registry.load(store)
    if reg["champion"] is None:
        return "No champion deployed yet."
    days = store.partitions(layout.FEATURES)
    examples = pd.concat([load_examples(store, d) for d in days], ignore_index=True)
    user = examples[schema.USER_ID].value_counts().idxmax()
    bought = examples.loc[examples[schema.USER_ID] == user, schema.ITEM_ID].astype(str)
    catalog_day: date = max(store.partitions(layout.RAW_CATALOG))
    from recsys.storage.raw import read_partition

    catalog = read_partition(store, layout.raw_catalog(catalog_day))
    titles = dict(zip(catalog[schema.ITEM_ID].astype(str), catalog[schema.TITLE].astype(str), strict=True))
    recs = recommend(store, str(user), k)
    meta = reg["versions"][str(reg["champion"])]
    lines = [
        f"Champion: version {reg['champion']} (fine-tuned on {meta['trained_on']}, "
        f"{meta['user_rows'] - 1} users x {meta['item_rows'] - 1} items)",
        f"Customer {user} bought {bought.nunique()} distinct items in these days, e.g.:",
        *[f"   - {titles.get(i, i)}" for i in bought.drop_duplicates().head(5)],
        f"Top {k} recommendations for customer {user}:",
        *[f"  {n:2d}. {it['title'] or it['item_id']}{'  (bought before)' if it['item_id'] in set(bought) else ''}"
          for n, it in enumerate(recs["items"], 1)],
    ]
    return "\n".join(lines)


# --- read-only views for the Airflow UI plugin (plugins/recsys_ui) ---------------------------------------


def key_metric(k: int) -> str:
    """The name of the metric that decides deployments (``recall@K``, K = ``RECSYS_K``)."""
    return f"recall@{k}"


VERSION_SIZE_FIELDS = ("table_megabytes", "user_rows", "item_rows", "new_user_rows", "new_item_rows", "window_days")

# a decision as the pages show it
DEPLOY: Final = "DEPLOY"
REJECT: Final = "REJECT"
# which gate decided a version (``decided_by`` of :func:`version_rows`)
DECIDED_BY_DATE: Final = "date"
DECIDED_BY_RETRAIN: Final = "retrain"
# a partition's validation status (:func:`validation_rows`)
PASSED: Final = "PASSED"
FAILED: Final = "FAILED"
ACCEPTED: Final = "ACCEPTED"
NOT_VALIDATED: Final = "NOT VALIDATED"


def verdict(blessed: bool) -> str:
    """:data:`DEPLOY` for a blessed candidate, else :data:`REJECT`."""
    return DEPLOY if blessed else REJECT


def version_rows(reg: registry.Registry, metric: str) -> list[dict[str, Any]]:
    """Every trained version, newest first, with its decision, its ``metric`` and whether it served.

    Each row: ``version``, ``kind`` (fine_tune or full_retrain), ``trained_on``, ``parent``,
    ``created_at``, ``train_examples``, ``final_loss``, ``metric`` (the value the deploy gate saw, None if
    never evaluated), ``metrics`` (all of them), ``decision`` (``DEPLOY``, ``REJECT`` or None), ``reason``,
    ``decided_by`` (``date``: the gate of its partition date; ``retrain``: the full-retrain gate, under the
    registry's ``retrains``; None), ``champion`` (serving now) and ``served`` (ever made champion); and from
    the version's metadata (None for versions trained before they were recorded): ``table_megabytes``,
    ``user_rows``, ``item_rows``, ``new_user_rows``, ``new_item_rows``, ``window_days``.
    """
    decided: dict[int, tuple[str, registry.Decision]] = {}
    for decision in reg.get("decisions", {}).values():
        candidate = decision.get("candidate_version")
        if candidate is not None:
            decided[int(candidate)] = (DECIDED_BY_DATE, decision)
    for key, retrain in reg.get("retrains", {}).items():  # a full retrain's own gate decision
        decided[int(key)] = (DECIDED_BY_RETRAIN, retrain)
    served = {int(h["to"]) for h in reg.get("history", []) if h.get("to") is not None}
    rows = []
    for key, meta in reg.get("versions", {}).items():
        version = int(key)
        source: str | None = None
        dec: registry.Decision | None = None
        if version in decided:
            source, dec = decided[version]
        metrics = dict(dec.get("candidate_metrics") or {}) if dec else {}
        rows.append({
            "version": version,
            "kind": meta.get("kind", registry.FINE_TUNE),
            "trained_on": meta.get("trained_on"),
            "parent": meta.get("parent"),
            "created_at": meta.get("created_at"),
            "train_examples": meta.get("train_examples"),
            "final_loss": meta.get("final_loss"),
            "metric": metrics.get(metric),
            "metrics": metrics,
            "decision": None if dec is None else verdict(bool(dec.get("blessed"))),
            "reason": None if dec is None else dec.get("reason"),
            "decided_by": source,
            "champion": version == reg.get("champion"),
            "served": version in served,
            **{name: meta.get(name) for name in VERSION_SIZE_FIELDS},
        })
    return sorted(rows, key=lambda r: r["version"], reverse=True)


def decision_rows(reg: registry.Registry, metric: str) -> list[dict[str, Any]]:
    """One row per decided partition date, oldest first: candidate and champion ``metric``, verdict, reason."""
    rows = []
    for day in sorted(reg.get("decisions", {})):
        dec = reg["decisions"][day]
        champion_metrics = dec.get("champion_metrics") or {}
        rows.append({
            "date": day,
            "candidate_version": dec.get("candidate_version"),
            "candidate": (dec.get("candidate_metrics") or {}).get(metric),
            "champion_version": dec.get("champion_version"),
            "champion": champion_metrics.get(metric),
            "blessed": bool(dec.get("blessed")),
            "reason": dec.get("reason", ""),
            "eval_users": dec.get("eval_users"),
            "decided_at": dec.get("decided_at"),
        })
    return rows


def retrain_rows(reg: registry.Registry, metric: str) -> list[dict[str, Any]]:
    """One row per full retrain the deploy gate decided on (registry ``retrains``), oldest first.

    Each row: ``version``, ``date`` (the retrain's end day, whose held-out users it was judged on),
    ``window_days``, ``candidate`` and ``champion`` (their ``metric``), ``champion_version``, ``blessed``,
    ``reason``, ``eval_users``, ``decided_at``, and ``deployed`` (it was made champion at some point).
    """
    history = reg.get("history", [])
    deployed = {int(h["to"]) for h in history if h.get("action") == registry.DEPLOYED and h.get("to") is not None}
    rows = []
    for key, dec in reg.get("retrains", {}).items():
        version = int(key)
        meta = reg.get("versions", {}).get(key)
        rows.append({
            "version": version,
            "date": dec.get("date") or (meta.get("trained_on") if meta else None),
            "window_days": dec.get("window_days"),
            "candidate": (dec.get("candidate_metrics") or {}).get(metric),
            "champion_version": dec.get("champion_version"),
            "champion": (dec.get("champion_metrics") or {}).get(metric),
            "blessed": bool(dec.get("blessed")),
            "reason": dec.get("reason", ""),
            "eval_users": dec.get("eval_users"),
            "decided_at": dec.get("decided_at"),
            "deployed": version in deployed,
        })
    return sorted(rows, key=lambda r: (r["date"] or "", r["version"]))


def champion_info(reg: registry.Registry) -> dict[str, Any] | None:
    """The serving champion: its version's metadata and the switch that made it champion; None if none yet."""
    champion = reg.get("champion")
    if champion is None:
        return None
    switches = [h for h in reg.get("history", []) if h.get("to") == champion]
    return {
        "version": int(champion),
        "metadata": dict(reg.get("versions", {}).get(str(champion), {})),
        "since": switches[-1] if switches else None,
    }


def validation_rows(store: PartitionStore) -> list[dict[str, Any]]:
    """Every partition date that landed or was validated, newest first, with its validation status.

    ``status`` is ``PASSED``, ``FAILED``, ``ACCEPTED`` (failed, let through by on-call) or ``NOT VALIDATED``
    (landed, no report yet). ``summary`` is the stored ``summary.json`` (None when not validated).
    """
    days = {d.isoformat() for d in store.partitions(layout.RAW_EVENTS)}
    for name in store.list_dir(layout.VALIDATION_REPORTS):
        validated = layout.parse_partition_name(name)
        if validated is not None:
            days.add(validated.isoformat())
    rows = []
    for day in sorted(days, reverse=True):
        summary = _read_optional(store, f"{layout.validation_report(date.fromisoformat(day))}/summary.json")
        if summary is None:
            status = NOT_VALIDATED
        elif summary.get("accepted"):
            status = ACCEPTED
        else:
            status = PASSED if summary.get("success") else FAILED
        rows.append({"date": day, "status": status, "summary": summary})
    return rows
