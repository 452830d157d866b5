"""Human-readable summaries of what the pipeline did, per partition date."""

from __future__ import annotations

from datetime import date
from typing import Any

from recsys import registry
from recsys.storage import PartitionStore, layout


def _read_optional(store: PartitionStore, path: str) -> dict[str, Any] | None:
    """The JSON document at ``path``, or None when that step has not written it."""
    return store.read_json(path) if store.exists(path) else None


def date_lines(store: PartitionStore, day: str, reg: dict[str, Any]) -> list[str]:
    """A few readable lines about one partition date."""
    lines = [f"== {day}"]
    val = _read_optional(store, f"{layout.validation_report(date.fromisoformat(day))}/summary.json")
    if val is None:
        lines.append("   validation : not run")
    else:
        if val["success"]:
            verdict = "passed"
        elif val.get("accepted"):
            verdict = f"failed ({', '.join(val['failed'])}) but ACCEPTED by on-call: {val['accepted']['reason']}"
        else:
            verdict = f"FAILED ({val['problem'] or ', '.join(val['failed'])})"
        lines.append(f"   validation : {verdict}, {val['rows']} events, {len(val['checks'])} checks")
    feats = _read_optional(store, f"{layout.features(date.fromisoformat(day))}/stats.json")
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
    from recsys.validation.partition import read_partition

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
