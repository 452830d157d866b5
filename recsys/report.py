"""Human-readable summaries of what the pipeline did, per partition date."""

from __future__ import annotations

from typing import Any

from recsys import registry
from recsys.storage import PartitionStore, layout


def _validation(store: PartitionStore, day: str) -> dict[str, Any] | None:
    path = f"{layout.VALIDATION_REPORTS}/dt={day}/summary.json"
    return store.read_json(path) if store.exists(path) else None


def _features(store: PartitionStore, day: str) -> dict[str, Any] | None:
    path = f"{layout.FEATURES}/dt={day}/stats.json"
    return store.read_json(path) if store.exists(path) else None


def date_lines(store: PartitionStore, day: str, reg: dict[str, Any]) -> list[str]:
    """A few readable lines about one partition date."""
    lines = [f"== {day}"]
    val = _validation(store, day)
    if val is None:
        lines.append("   validation : not run")
    else:
        verdict = "passed" if val["success"] else f"FAILED ({val['problem'] or ', '.join(val['failed'])})"
        lines.append(f"   validation : {verdict}, {val['rows']} events, {len(val['checks'])} checks")
    feats = _features(store, day)
    if feats:
        lines.append(
            f"   examples   : {feats['examples']} ({feats['train_examples']} train, "
            f"{feats['holdout_examples']} held out from {feats['holdout_users']} users); "
            f"+{feats['new_users']} users, +{feats['new_items']} items"
        )
    decision = reg["decisions"].get(day)
    if decision:
        cand = decision["candidate_metrics"]
        champ = decision["champion_metrics"]
        metric = next(iter(cand), None)
        champ_text = f"champion v{decision['champion_version']} {champ[metric]:.4f}" if champ else "no champion"
        cand_text = f"{cand[metric]:.4f}" if metric else "n/a"
        lines.append(
            f"   {metric or 'metric'} : candidate v{decision['candidate_version']} {cand_text} vs {champ_text}"
        )
        lines.append(f"   decision   : {'DEPLOY' if decision['blessed'] else 'REJECT'} - {decision['reason']}")
    return lines


def summary_text(store: PartitionStore) -> str:
    """Every processed date, then the champion and its lineage."""
    reg = registry.load(store)
    days = sorted({*reg["decisions"], *(d.isoformat() for d in store.partitions(layout.RAW_EVENTS))})
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
