"""The service's load time and memory against the number of processed days: 30 vs 300 days of history.

``recsys serve`` reads purchases and recent items from the newest ``features/dt=*/history.parquet``
snapshot only (``recsys/serving/model_holder.py``), so a store with 300 processed days should load as
fast and in as much memory as one with 30. This builds, for each day count, a local store of that many
Online Retail-sized days (4,373 customers, 4,070 items, 1,800 purchase lines a day with Zipf-popular
items and log-normal customer activity: about the shipped bundle's 540k lines over 305 days), each day
a feature partition with its examples and the history snapshot grown by ``recsys.features.history.update``
(the features step's own function, default length 200), plus one deployed version of 64-d embeddings
(``bench/synthetic_store.py``). Then it starts ``recsys serve`` ``--repeats`` times per store (each a
fresh process measured like bench/scale/run.py: ``wait4`` CPU and ``ru_maxrss``, sampled tree RSS) and
records the seconds until ``/readyz`` answers 200, the RSS then, and a short request burst.

For contrast it also times reading every partition's ``examples.parquet`` (user and item columns: what
the service did before it read snapshots), which does grow with the days. The snapshot itself grows
with the days until each customer's history reaches its length (Online Retail-sized days: far from it
after 300 days), so as a control each store is served again with all but its newest ``--trim``
partitions deleted: the same snapshot and version, 8 partitions instead of 31 or 301.

    nice -n 15 .venv/bin/python bench/scale/serving_days.py --commit HEAD --days 30,300 \\
        --out bench/scale/results/serving-days.json

``--commit REV`` builds the stores and runs the service with a ``git archive`` of REV (as run.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: _harness, synthetic_store
sys.path.insert(0, str(HERE))  # run.py's measuring

import run  # noqa: E402

USERS, ITEMS = 4373, 4070  # synthetic_store.ONLINE_RETAIL_USERS / _ITEMS: the shipped bundle's customers and items
LINES_PER_DAY = 1800
HISTORY_LENGTH = 200  # max(history_length, repeat_length) of the default settings


def build_store(root: Path, days: int, seed: int = 11) -> dict[str, Any]:
    """A deployed version and ``days`` feature partitions after ``synthetic_store.DAY``; what was written."""
    import synthetic_store  # imports recsys: after main() put --commit's archive first on sys.path

    from recsys import schema
    from recsys.features import history
    from recsys.storage import layout

    shutil.rmtree(root, ignore_errors=True)
    store = synthetic_store.build(root, USERS, ITEMS, dim=64, purchases=LINES_PER_DAY)
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.2, USERS)
    activity /= activity.sum()
    users, items = synthetic_store.user_ids(USERS), synthetic_store.item_ids(ITEMS)
    snapshot = history.load(store, synthetic_store.DAY)
    started = time.perf_counter()
    for n in range(1, days + 1):
        day = synthetic_store.DAY + timedelta(days=n)
        who = rng.choice(USERS, size=LINES_PER_DAY, p=activity)
        what = (rng.zipf(1.3, size=LINES_PER_DAY) - 1) % ITEMS
        bought = pd.DataFrame({
            schema.USER_ID: [users[i] for i in who], schema.ITEM_ID: [items[i] for i in what],
            schema.USER_ROW: who + 1, schema.ITEM_ROW: what + 1, schema.SPLIT: "train",
        })
        snapshot = history.update(snapshot, bought.drop_duplicates([schema.USER_ID, schema.ITEM_ID]), day,
                                  HISTORY_LENGTH)
        store.write_parquet(f"{layout.features(day)}/examples.parquet", bought)
        store.write_parquet(f"{layout.features(day)}/{layout.HISTORY_FILE}", snapshot)
        store.mark_success(layout.features(day))
    features = root / layout.FEATURES
    return {
        "days": days,
        "feature_partitions": len(store.partitions(layout.FEATURES)),
        "purchase_lines": days * LINES_PER_DAY,
        "snapshot_rows": len(snapshot),
        "snapshot_users": int(snapshot[schema.USER_ID].nunique()),
        "features_mb_on_disk": round(sum(f.stat().st_size for f in features.rglob("*") if f.is_file()) / 2**20, 1),
        "build_seconds": round(time.perf_counter() - started, 1),
    }


def read_every_partition(root: Path) -> dict[str, Any]:
    """Seconds and rows of reading every partition's examples (the service's way before snapshots)."""
    started = time.perf_counter()
    frames = [pd.read_parquet(p, columns=["user_id", "item_id"])
              for p in sorted((root / "features").glob("dt=*/examples.parquet"))]
    rows = sum(len(f) for f in frames)
    return {"seconds": round(time.perf_counter() - started, 2), "rows": rows, "partitions": len(frames)}


def serve_once(root: Path, logs: Path, pythonpath: str | None) -> dict[str, Any]:
    import synthetic_store

    env = run.child_env({"RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(root)})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    step, base = run.start_serve(env, logs)
    out: dict[str, Any] = {}
    try:
        out["ready_seconds"] = run.wait_ready(step, base, 600)
        out["rss_ready_mb"] = round(step.sampler.rss_mb(), 1)
        users = synthetic_store.user_ids(USERS)[:100]
        out["burst"] = run.burst(base, users, synthetic_store.item_ids(ITEMS)[:25])
        out["rss_after_burst_mb"] = round(step.sampler.rss_mb(), 1)
    finally:
        step.stop()
    result = step.wait()
    out["load_seconds"] = run.load_seconds(step.stderr_path)
    result.pop("rss_timeline", None)
    result.pop("stderr_tail", None)
    return {**result, **out}


def measure(starts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "serve": starts,
        "median_ready_seconds": statistics.median(s["ready_seconds"] for s in starts),
        "median_load_seconds": statistics.median(s["load_seconds"] or 0.0 for s in starts),
        "median_rss_ready_mb": statistics.median(s["rss_ready_mb"] for s in starts),
        "max_peak_rss_mb": max(s["peak_rss_mb"] for s in starts),
    }


def trim(root: Path, keep: int) -> int:
    """Delete all but the newest ``keep`` feature partitions; how many were deleted."""
    old = sorted((root / "features").glob("dt=*"))[:-keep]
    for path in old:
        shutil.rmtree(path)
    return len(old)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", default="30,300", help="day counts, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="service starts per store")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=run.ROOT / "var" / "bench" / "serving-days")
    p.add_argument("--trim", type=int, default=8, help="then serve the same store with only its newest TRIM "
                   "feature partitions (the snapshot's and the trend window's: 0 skips this control)")
    p.add_argument("--commit", help="build the stores and serve with the product as committed at this revision "
                   "(a git archive, first on sys.path and the service's PYTHONPATH), not the checkout's edits")
    args = p.parse_args()
    pythonpath = None
    if args.commit:
        code, git = run.archive(args.commit, args.work)
        sys.path.insert(0, str(code))
        pythonpath = os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])
        source = run.recsys_source({**os.environ, "PYTHONPATH": pythonpath})
        import recsys  # the store is built in this process: with the same code

        if source != code.resolve() or Path(recsys.__file__).resolve().parents[1] != source:
            raise SystemExit(f"the archive at {code} is not what the service imports ({source})")
    else:
        source = run.recsys_source()
        git = run.code_state(source)
    results: dict[str, Any] = {
        "benchmark": "bench/scale/serving_days.py",
        "command": " ".join([".venv/bin/python", "bench/scale/serving_days.py", *sys.argv[1:]]),
        "git": git,
        "bench_git": run._harness.git_state(HERE),
        "recsys_source": str(source),
        "machine": run.machine(),
        "started": run.now(),
        "loadavg_before": run.loadavg(),
        "stores": {},
    }
    for days in (int(d) for d in args.days.split(",")):
        root = args.work / f"days-{days}"
        record = {"store": build_store(root / "store", days), "every_partition": read_every_partition(root / "store")}
        record |= measure([serve_once(root / "store", root / "logs", pythonpath) for _ in range(args.repeats)])
        if args.trim:
            # the control: the same store (same snapshot, same version) with only the newest partitions
            record["trimmed"] = {"feature_partitions_removed": trim(root / "store", args.trim)}
            record["trimmed"] |= measure([serve_once(root / "store", root / "logs", pythonpath)
                                          for _ in range(args.repeats)])
        results["stores"][str(days)] = record
        brief = {k: v for k, v in record.items() if k not in ("serve", "trimmed")}
        brief["trimmed"] = {k: v for k, v in record.get("trimmed", {}).items() if k != "serve"}
        print(json.dumps({days: brief}), flush=True)
        shutil.rmtree(root, ignore_errors=True)
    results["finished"] = run.now()
    results["loadavg_after"] = run.loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
