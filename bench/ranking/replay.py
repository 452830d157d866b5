"""Replay the ranking stage over the store a replay run of strategy (r) left behind, for several ranker settings.

Strategy (r) of ``bench/replay_quality/run.py`` runs the whole daily pipeline (validation, features, fine-tune,
evaluation, deploy) and one ranker. The retrieval side of that run is fixed once it is done: every day's
champion is in the registry's decisions and every day's inputs in its feature partitions. This script ranks the
same days again with those champions and inputs, and trains a ranker per setting the way (r) does (warm-up
days before the window, then after each day on its candidate lists, from the previous weights), so ranker
settings can be compared in minutes instead of a pipeline run each. Each window day also records the champion's
own top-K (``retrieval``); it should equal (r)'s recorded ``retrieval`` metrics (a check that the replay sees
what the run saw).

    .venv/bin/python bench/ranking/replay.py --store var/bench/replay_quality/ranked --days 20 \\
        --settings epochs=2,replay=20 epochs=5,replay=20

Writes ``bench/ranking/results/replay-<time>-<N>d.json`` (git commit, dirty flag, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))
sys.path.insert(0, str(REPO_ROOT / "bench" / "replay_quality"))

# holdout=1: also learn from the holdout customers' lists once the day is over (the gate has decided by then);
# ease_lambda: EASE^R's regularisation in the day's inputs (recsys.ranking.ease), n_ease its candidates per customer
DEFAULTS = {"epochs": 2, "replay": 20, "lr": 3e-3, "n_retrieval": 200, "n_trending": 50, "n_ease": 100,
            "ease_lambda": 2500.0, "holdout": 0}


def _setting(text: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(DEFAULTS)
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown setting {key}; choose from {list(DEFAULTS)}")
        out[key] = type(DEFAULTS[key])(value)
    return out


def champion_before(store: Any, day: date) -> int:
    """The version serving when ``day`` was ranked: the candidate of the last blessed decision before ``day``."""
    from recsys import registry

    decisions = registry.load(store)["decisions"]
    blessed = [d for d in decisions.values() if d["blessed"] and date.fromisoformat(d["date"]) < day]
    if not blessed:
        raise SystemExit(f"no blessed decision before {day}")
    return int(max(blessed, key=lambda d: d["date"])["candidate_version"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="<workdir>/ranked of a replay run with r")
    parser.add_argument("--days", type=int, required=True, help="the run's window (--days)")
    parser.add_argument("--warm-up", type=int, default=10, help="days before the window the ranker learns on")
    keys = ", ".join(f"{k} ({v})" for k, v in DEFAULTS.items())
    parser.add_argument("--settings", nargs="+", default=[""], help=f"ranker settings, each key=value,... of {keys}")
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    import _harness
    from run import K, _allowed, _day_truth, _means, _metrics

    from recsys import schema
    from recsys.features import load_examples
    from recsys.ranking import Lists, day_inputs, ease, labels, to_lists
    from recsys.ranking.model import fit
    from recsys.ranking.stage import rank
    from recsys.serving.index import load_scorer
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    store = LocalStore(args.store)
    all_days = store.partitions(layout.RAW_EVENTS)
    window = all_days[-args.days:]
    days = all_days[-args.days - args.warm_up:]
    settings = [_setting(s) for s in args.settings]
    state = [{"ranker": None, "lists": [], "per_day": [], "fit_cpu": 0.0} for _ in settings]
    retrieval_days, inputs_cpu, ease_cpu = [], [], []
    for day in days:
        users, relevant = _day_truth(store, day)
        if not users:
            continue
        version = champion_before(store, day)
        scorer = load_scorer(store, version, before=day)
        allowed = _allowed(store, version, len(scorer.item_ids))
        by_lambda: dict[float, Any] = {}
        for lam in sorted({s["ease_lambda"] for s in settings}):
            c0 = time.process_time()
            by_lambda[lam] = day_inputs(store, scorer.item_ids, allowed, day, ease_lambda=lam)
            inputs_cpu.append(time.process_time() - c0)
        own = next(iter(by_lambda.values())).own
        c0 = time.process_time()  # EASE^R's share of the day's inputs, measured on its own
        ease.fit(own["user_id"].to_numpy(object), own["row"].to_numpy(), len(scorer.item_ids),
                 settings[0]["ease_lambda"])
        ease_cpu.append(time.process_time() - c0)
        examples = load_examples(store, day, columns=[schema.USER_ID, schema.ITEM_ID, schema.SPLIT])
        train = examples[examples[schema.SPLIT] == "train"]
        bought = list(zip(train[schema.USER_ID].astype(str), train[schema.ITEM_ID].astype(str), strict=True))
        every = list(zip(examples[schema.USER_ID].astype(str), examples[schema.ITEM_ID].astype(str), strict=True))
        if day in window:
            retrieval_days.append({"date": day.isoformat(), "customers": len(users), "version": version,
                                   **_metrics(scorer.top_k(users, K, allowed), relevant)})
        for setting, st in zip(settings, state, strict=True):
            ranked = rank(scorer, users, by_lambda[setting["ease_lambda"]], st["ranker"], K,
                          n_retrieval=setting["n_retrieval"], n_trending=setting["n_trending"],
                          n_ease=setting["n_ease"])
            if day in window:
                st["per_day"].append({"date": day.isoformat(), "customers": len(users),
                                      **_metrics(ranked.ranked, relevant)})
            c0 = time.process_time()
            lists = to_lists(ranked.candidates, ranked.features,
                             labels(ranked.candidates, ranked.users, scorer.item_ids,
                                    every if setting["holdout"] else bought))
            st["lists"] = [*st["lists"], lists][-setting["replay"]:]
            everything = Lists.concat(st["lists"])
            if len(everything):
                st["ranker"] = fit(everything, st["ranker"], epochs=setting["epochs"], learning_rate=setting["lr"],
                                   seed=42 + day.toordinal())
            st["fit_cpu"] += time.process_time() - c0
        print(f"{day} v{version} customers={len(users)} " + " ".join(
            f"{st['per_day'][-1]['recall@100']:.4f}" for st in state if st["per_day"] and day in window),
            file=sys.stderr)
    mean, micro = _means(retrieval_days)
    results = []
    for setting, st in zip(settings, state, strict=True):
        m, u = _means(st["per_day"])
        results.append({"setting": setting, "mean": m, "micro_mean": u, "days": st["per_day"],
                        "fit_cpu_seconds": round(st["fit_cpu"], 1)})
    record = {
        "command": " ".join(["python", *sys.argv]),
        "git": _harness.git_state(REPO_ROOT),
        "store": str(args.store), "window": [window[0].isoformat(), window[-1].isoformat()],
        "retrieval": {"mean": mean, "micro_mean": micro, "days": retrieval_days},
        "rankers": results,
        "day_inputs_cpu_seconds_per_day": round(sum(inputs_cpu) / max(len(inputs_cpu), 1), 2),
        "ease_fit_cpu_seconds_per_day": round(sum(ease_cpu) / max(len(ease_cpu), 1), 2),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"replay-{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%S')}-{args.days}d.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print("| ranking | recall@20 | recall@100 | NDCG@100 | micro recall@100 | micro NDCG@100 |")
    print("|---|---|---|---|---|---|")
    print(f"| champion alone | {mean['recall@20']:.3f} | {mean['recall@100']:.3f} | {mean['ndcg@100']:.3f} "
          f"| {micro['recall@100']:.3f} | {micro['ndcg@100']:.3f} |")
    for r in results:
        m, u = r["mean"], r["micro_mean"]
        name = ",".join(f"{k}={v}" for k, v in r["setting"].items() if DEFAULTS[k] != v) or "defaults"
        print(f"| ranker {name} | {m['recall@20']:.3f} | {m['recall@100']:.3f} | {m['ndcg@100']:.3f} "
              f"| {u['recall@100']:.3f} | {u['ndcg@100']:.3f} |")
    print(f"day inputs {record['day_inputs_cpu_seconds_per_day']} CPU s a day, of which EASE^R's fit about "
          f"{record['ease_fit_cpu_seconds_per_day']} (loaded machine)")
    print(f"written to {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
