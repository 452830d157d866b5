"""Replay the last N days of Online Retail one day at a time and compare recommendation strategies.

For each day of the window, every strategy ranks items for that day's purchasing customers using
only what it knew before the day; recall@20, recall@100 and NDCG@100 are averaged over customers,
then over days. Strategies (each runs in its own process, so its peak memory is its own):

  a  stale        a model trained once on all history before the window, never updated
  b  fine_tune    bootstrap as (a), then the production path every day: recsys.cli.run_all
                  (validate, features, fine-tune from the last checkpoint, evaluate, deploy if blessed);
                  the model that ranks day t is the champion after day t-1
  c  retrain      bootstrap as (a), then a full retrain from scratch on all history every day
                  (with --every N: only on the days before the evaluated ones, see below)
  d  popular      the trailing-7-day most purchased items
  e  own_popular  the customer's own past items by purchase count, then (d)

Usage (from the repository root, after `make setup`):

    .venv/bin/python bench/replay_quality/run.py --days 60 --strategies a,b,c,d,e

Results: a JSON file per run in bench/replay_quality/results/ and a markdown table on stdout.

``--every N`` evaluates every N-th day of the window only (the 1st, the N+1-th, ...); the other days
still run (the fine-tune trains on every day, features are built for every day), but the daily full
retrain only trains on the days before an evaluated day, so (c) costs 1/N of its full run. Compare
strategies on the same --every. A daily full retrain over 60 days takes about 3 hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = {"a": "stale", "b": "fine_tune", "c": "retrain", "d": "popular", "e": "own_popular"}
K_SMALL, K = 20, 100


def _metrics(ranked: list[list[str]], relevant: list[set[str]]) -> dict[str, float]:
    from recsys.evaluation import ndcg_at_k, recall_at_k

    return {
        "recall@20": recall_at_k(ranked, relevant, K_SMALL),
        "recall@100": recall_at_k(ranked, relevant, K),
        "ndcg@100": ndcg_at_k(ranked, relevant, K),
    }


def _day_truth(store: Any, day: date) -> tuple[list[str], list[set[str]]]:
    """The day's purchasing customers and the distinct items each bought."""
    from recsys import schema
    from recsys.storage import layout
    from recsys.storage.raw import read_partition

    events = read_partition(store, layout.raw_events(day))
    by_user = {str(u): set(map(str, items)) for u, items in events.groupby(schema.USER_ID)[schema.ITEM_ID]}
    return list(by_user), list(by_user.values())


def _model_ranking(store: Any, version: int, users: list[str], day: date) -> list[list[str]]:
    """Top-K of a stored version over the items it knows that its index (or catalog) allows, with the
    customers' purchases known before ``day`` as the query tower's input (as serving would have them)."""
    from recsys.serving.index import load_scorer

    scorer = load_scorer(store, version, before=day)
    allowed = None
    index_path = f"models/two_tower/versions/{version}/index.parquet"
    if store.exists(index_path):
        import numpy as np

        index = store.read_parquet(index_path)
        allowed = np.zeros(len(scorer.item_ids), dtype=bool)
        allowed[index["row"].to_numpy()] = True
    return scorer.top_k(users, K, allowed)


def _baseline_rankings(history: Any, day: date, users: list[str], own_first: bool) -> list[list[str]]:
    """(d) trailing-7-day popularity, or (e) own past items by count then (d)."""
    from recsys import schema

    recent = history[history["day"] >= day - timedelta(days=7)]
    popular = recent[schema.ITEM_ID].value_counts().index.astype(str).tolist()[: K * 3]
    if not own_first:
        return [popular[:K]] * len(users)
    mine = history[history[schema.USER_ID].isin(users)]
    counts = mine.groupby([schema.USER_ID, schema.ITEM_ID]).size().rename("n").reset_index()
    counts = counts.sort_values([schema.USER_ID, "n", schema.ITEM_ID], ascending=[True, False, True])
    own = counts.groupby(schema.USER_ID)[schema.ITEM_ID].agg(lambda s: [str(x) for x in s]).to_dict()
    ranked = []
    for user in users:
        items = own.get(user, [])[:K]
        seen = set(items)
        ranked.append((items + [i for i in popular if i not in seen])[:K])
    return ranked


def _cpu() -> float:
    """CPU seconds of this process so far (all threads): less exposed to other jobs on the machine than
    wall time, which they stretch."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(strategy: str, days: int, workdir: Path, every: int = 1) -> dict[str, Any]:
    """Run one strategy over the window in this process; returns per-day metrics and costs."""
    import pandas as pd

    from recsys import registry
    from recsys.cli import run_all
    from recsys.config import Settings
    from recsys.datasets import online_retail
    from recsys.features import build_features, load_examples
    from recsys.progress import note, progress
    from recsys.serving.deploy import deploy
    from recsys.storage.local import LocalStore
    from recsys.training import train_from_scratch

    root = workdir / strategy
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(workdir / "landed" / "raw", root / "raw")  # every day, landed once by main()
    # ... and validated once by main(): features are built only from a delivery that passed (or was accepted)
    shutil.copytree(workdir / "landed" / "reports", root / "reports")
    store = LocalStore(root)
    settings = Settings.from_env().replace(storage_root=str(root))
    all_days = online_retail.source_days(online_retail.load_source())
    window = all_days[-days:]
    before = all_days[: -days]

    started = time.perf_counter()
    for day in progress(before, f"[{strategy}] features before the window", "day"):
        build_features(store, settings, day)
    prep_seconds = time.perf_counter() - started

    bootstrap_seconds = bootstrap_cpu = 0.0
    version = None
    if strategy in ("stale", "fine_tune", "retrain"):
        t0, c0 = time.perf_counter(), _cpu()
        version = train_from_scratch(store, settings, before[-1], run_id="bench-bootstrap")["version"]
        if strategy == "fine_tune":  # the bootstrap is the first champion
            registry.record_decision(store, before[-1], {
                "date": before[-1].isoformat(), "candidate_version": version, "champion_version": None,
                "candidate_metrics": {}, "champion_metrics": None, "eval_users": 0, "eval_examples": 0,
                "blessed": True, "reason": "bootstrap: trained on all history before the window",
                "decided_at": registry.now(),
            }, run_id="bench-bootstrap")
            deploy(store, settings, before[-1], run_id="bench-bootstrap")
        bootstrap_seconds = time.perf_counter() - t0
        bootstrap_cpu = _cpu() - c0

    per_day = []
    daily_seconds = daily_cpu = 0.0
    for n, day in enumerate(progress(window, f"[{strategy}] window", "day")):
        evaluated = n % every == 0
        next_evaluated = (n + 1) % every == 0
        users, relevant = _day_truth(store, day)
        if strategy in ("popular", "own_popular"):
            t0, c0 = time.perf_counter(), _cpu()
            history = pd.concat(
                [load_examples(store, d).assign(day=d) for d in store.partitions("features") if d < day],
                ignore_index=True,
            )
            ranked = _baseline_rankings(history, day, users, own_first=strategy == "own_popular") if evaluated else []
            build_features(store, settings, day)
            daily_seconds += time.perf_counter() - t0
            daily_cpu += _cpu() - c0
        else:
            serving = registry.load(store)["champion"] if strategy == "fine_tune" else version
            assert serving is not None
            ranked = _model_ranking(store, serving, users, day) if evaluated else []
            t0, c0 = time.perf_counter(), _cpu()
            if strategy == "fine_tune":
                run_all(store, settings, day)
            else:
                build_features(store, settings, day)
                if strategy == "retrain" and next_evaluated:
                    version = train_from_scratch(store, settings, day, run_id="bench-retrain")["version"]
            daily_seconds += time.perf_counter() - t0
            daily_cpu += _cpu() - c0
        if not evaluated:
            continue
        metrics = _metrics(ranked, relevant)
        per_day.append({"date": day.isoformat(), "customers": len(users), **metrics})
        note(f"[{strategy}] {day} customers={len(users)} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
             stream=sys.stderr)

    reg = registry.load(store)
    return {
        "strategy": strategy,
        "window": [window[0].isoformat(), window[-1].isoformat()],
        "every": every,
        "days": per_day,
        "mean": {m: sum(d[m] for d in per_day) / len(per_day) for m in ("recall@20", "recall@100", "ndcg@100")},
        "prep_seconds": round(prep_seconds, 1),
        "bootstrap_seconds": round(bootstrap_seconds, 1),
        "daily_seconds": round(daily_seconds, 1),
        "bootstrap_cpu_seconds": round(bootstrap_cpu, 1),
        "daily_cpu_seconds": round(daily_cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "deploys": sum(1 for h in reg["history"] if h["action"] == registry.DEPLOYED),
        # the training step alone (model.fit), summed over the window's versions
        "window_train_seconds": round(sum(
            v.get("train_seconds", 0.0) for v in reg["versions"].values() if v["trained_on"] >= window[0].isoformat()
        ), 1),
        "settings": {k: v for k, v in settings.public().items() if k != "storage_root"},  # no secrets
    }


def _write(args: argparse.Namespace, results: list[dict[str, Any]]) -> Path:
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import _harness

    record = {
        "command": " ".join(["python", *sys.argv]),
        "git": _harness.git_state(REPO_ROOT),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.started}-{args.days}d{'' if args.every == 1 else f'-every{args.every}'}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _validate_all(landed: Any) -> None:
    """Validate every landed day once, in date order (idempotent: a delivery validated before is skipped).

    Features are built only from a validated delivery. A day that fails its expectations is accepted, as on-call
    would for a benchmark, so every strategy trains on exactly the days it trained on before validation was
    required; the strategies copy these reports with the raw data.
    """
    from recsys.config import Settings
    from recsys.progress import progress
    from recsys.storage import layout
    from recsys.validation import validate_partition

    settings = Settings.from_env().replace(storage_root=str(landed.root))
    for day in progress(landed.partitions(layout.RAW_EVENTS), "validate", "day"):
        validate_partition(landed, settings, day, run_id="bench-validate", accept_invalid=True,
                           accept_reason="replay benchmark: every source day is used as landed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60, help="window length in days with data")
    parser.add_argument("--strategies", default="a,b,c,d,e", help="comma-separated letters of the strategies")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "bench" / "replay_quality")
    parser.add_argument("--every", type=int, default=1, help="evaluate every N-th window day only (see above)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.started = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    if args.worker:
        print(json.dumps(worker(args.worker, args.days, args.workdir, args.every)))
        return 0
    letters = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in letters if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {STRATEGIES}")
    from recsys.datasets import online_retail
    from recsys.datasets.landing import land_days
    from recsys.storage.local import LocalStore

    landed = LocalStore(args.workdir / "landed")
    first = online_retail.source_days(online_retail.load_source())[0]
    t0 = time.perf_counter()
    land_days(landed, first, days=400)  # idempotent: days already landed are kept
    print(f"landed every day in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t0 = time.perf_counter()
    _validate_all(landed)
    print(f"validated every day in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results = []
    for letter in letters:
        name = STRATEGIES[letter]
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--days", str(args.days), "--workdir", str(args.workdir),
             "--every", str(args.every)],
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(), check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results.append(result)
        path = _write(args, results)  # after every strategy, so a long run keeps what it measured
    print("| strategy | recall@20 | recall@100 | NDCG@100 | bootstrap s | daily s | daily CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["mean"]
        print(f"| {r['strategy']} | {m['recall@20']:.3f} | {m['recall@100']:.3f} | {m['ndcg@100']:.3f} "
              f"| {r['bootstrap_seconds']} | {r['daily_seconds']} | {r['daily_cpu_seconds']} | {r['peak_rss_mb']} |")
    print(f"\nwritten to {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
