"""How much recall@100 is there to win on the replay window, and where? (no model: counting only)

For each day of the window (the last N days of Online Retail with data), split the day's purchasing
customers into returning (bought before) and new, and measure, averaged over customers then days:

  own_all         returning customers: share of the day's items they had bought before (any number
                  of own items ranked first, so an upper bound of "own items first")
  popular_new     new customers: recall@100 of the trailing-7-day most purchased items
  popular_rest    returning customers: recall@100 of the popular items among the items they had NOT
                  bought before (what a popularity fill adds after own items)
  new_share       share of the day's customers who are new

Usage: .venv/bin/python bench/replay_quality/headroom.py --days 60
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

K = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "headroom-60d.json")
    args = parser.parse_args()

    from recsys import schema
    from recsys.datasets import online_retail

    events, _ = online_retail.to_events(online_retail.load_source())
    pairs = events[[schema.USER_ID, schema.ITEM_ID]].astype(str).assign(day=events[schema.EVENT_TIME].dt.date)
    pairs = pairs.drop_duplicates()
    days = sorted(pairs["day"].unique())
    window = days[-args.days:]
    per_day = []
    for day in window:
        before = pairs[pairs["day"] < day]
        today = pairs[pairs["day"] == day]
        recent = before[before["day"] >= day - timedelta(days=7)]
        popular = recent[schema.ITEM_ID].value_counts().index[:K].tolist()
        owned = {u: set(g) for u, g in before.groupby(schema.USER_ID)[schema.ITEM_ID]}
        own_all, popular_new, popular_rest = [], [], []
        for user, group in today.groupby(schema.USER_ID)[schema.ITEM_ID]:
            bought = set(group)
            mine = owned.get(user)
            if mine is None:
                popular_new.append(len(bought & set(popular)) / len(bought))
                continue
            own_all.append(len(bought & mine) / len(bought))
            fill = [i for i in popular if i not in mine]
            popular_rest.append(len((bought - mine) & set(fill)) / len(bought))
        n = today[schema.USER_ID].nunique()
        per_day.append({
            "date": day.isoformat(), "customers": n, "new_share": len(popular_new) / n,
            "own_all": float(np.mean(own_all)) if own_all else None,
            "popular_new": float(np.mean(popular_new)) if popular_new else None,
            "popular_rest": float(np.mean(popular_rest)) if popular_rest else None,
        })

    def mean(key: str) -> float:
        values = [d[key] for d in per_day if d[key] is not None]
        return round(float(np.mean(values)), 4)

    summary = {k: mean(k) for k in ("new_share", "own_all", "popular_new", "popular_rest")}
    # the ceiling of "own items first (all of them), popular for new customers"
    summary["own_then_popular_ceiling"] = round(
        (1 - summary["new_share"]) * (summary["own_all"] + summary["popular_rest"])
        + summary["new_share"] * summary["popular_new"], 4)
    record = {"command": " ".join(["python", *sys.argv]), "window": [window[0].isoformat(), window[-1].isoformat()],
              "summary": summary, "days": per_day}
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
