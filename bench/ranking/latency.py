"""What the ranking stage adds to one request: candidates, features and the ranker's scores for one customer.

Reads the store a replay run of strategy (r) left behind (``bench/replay_quality/run.py --strategies r``:
``<workdir>/ranked``): its champion, the newest ranker checkpoint and the inputs of the day after its last
feature partition (what a serving process would rank). For ``--requests`` customers (returning and new, in a
seeded order) it times, per request:

- ``retrieval``: the champion's scores of every item for the customer (what serving does already; for scale)
- ``added`` (wall, and the thread's CPU time): the ranking stage on top of that: candidates (top
  ``--n-retrieval`` by those scores, own items,
  ``--n-trending`` trending), the feature rows and the ranker's scores, and the final top-100 order

and once per day the :class:`recsys.ranking.DayInputs` (trend, popularity, price bands, co-purchases,
own-item table), which a serving process builds when its day changes, not per request.

    .venv/bin/python bench/ranking/latency.py --store var/bench/replay_quality/ranked

Writes ``bench/ranking/results/<time>.json`` (git commit, dirty flag, load average) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "mean_ms": round(float(ms.mean()), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO_ROOT / "var/bench/replay_quality/ranked")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--n-retrieval", type=int, default=200)
    parser.add_argument("--n-trending", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    import _harness

    from recsys import registry
    from recsys.features import history
    from recsys.ranking import build, day_inputs, generate
    from recsys.ranking.model import RankerWeights
    from recsys.ranking.stage import order
    from recsys.serving.index import load_scorer
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    store = LocalStore(args.store)
    champion = registry.load(store)["champion"]
    checkpoints = sorted(p for p in store.list_dir("models/ranker") if p.startswith("dt="))
    if champion is None or not checkpoints:
        raise SystemExit(f"{args.store}: no champion or no ranker checkpoint; run bench/replay_quality --strategies r")
    weights = RankerWeights.from_bytes(store.read_bytes(f"models/ranker/{checkpoints[-1]}/weights.npz"))
    last = store.partitions(layout.FEATURES)[-1]
    day = layout.shift_day(last, 1)
    scorer = load_scorer(store, champion, before=day)
    index_path = f"{layout.model_version(champion)}/{layout.INDEX_FILE}"
    allowed = None
    if store.exists(index_path):
        allowed = np.zeros(len(scorer.item_ids), bool)
        allowed[store.read_parquet(index_path)["row"].to_numpy()] = True
    t0 = time.perf_counter()
    snapshot = history.load_before(store, day)
    inputs = day_inputs(store, scorer.item_ids, allowed, day, snapshot=snapshot)
    inputs_seconds = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    known = np.unique(inputs.own["user_id"].to_numpy(object))
    users = [str(u) for u in rng.choice(known, args.requests, replace=len(known) < args.requests)]
    users[:: 10] = [f"new-{n}" for n in range(len(users[:: 10]))]  # one in ten is a new customer
    for user in users[:20]:  # warm caches and the allocator
        generate(scorer.scores([user]), [user], inputs)
    retrieval, added, added_cpu, sizes = [], [], [], []
    for user in users:
        t0 = time.perf_counter()
        scores = scorer.scores([user])
        t1, c1 = time.perf_counter(), time.thread_time()
        cands = generate(scores, [user], inputs, n_retrieval=args.n_retrieval, n_trending=args.n_trending)
        x = build(cands, [user], inputs)
        ranked = scorer.item_ids[order(cands, weights.score(x), 1, 100)[0]].tolist()
        t2, c2 = time.perf_counter(), time.thread_time()
        assert len(ranked) == min(100, len(cands))
        retrieval.append(t1 - t0)
        added.append(t2 - t1)
        added_cpu.append(c2 - c1)
        sizes.append(len(cands))
    record = {
        "command": " ".join(["python", *sys.argv]),
        "git": _harness.git_state(REPO_ROOT),
        "store": str(args.store), "champion": champion, "ranker_checkpoint": checkpoints[-1], "day": day.isoformat(),
        "items": len(scorer.item_ids), "customers_with_history": len(known), "requests": len(users),
        "n_retrieval": args.n_retrieval, "n_trending": args.n_trending,
        "candidates": {"p50": int(np.percentile(sizes, 50)), "p99": int(np.percentile(sizes, 99)), "max": max(sizes)},
        "retrieval_scores": _percentiles(retrieval),
        "ranking_stage_added": _percentiles(added),
        # CPU time of the request's thread: what the other jobs of a loaded machine do not stretch (the wall
        # time's tail there is mostly waiting for a core)
        "ranking_stage_added_thread_cpu": _percentiles(added_cpu),
        "day_inputs_seconds": round(inputs_seconds, 3),
        "machine": {"platform": platform.platform(), "cpu": _harness.cpu_name(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg()},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("candidates", "retrieval_scores", "ranking_stage_added",
                                             "ranking_stage_added_thread_cpu", "day_inputs_seconds")}, indent=2))
    print(f"written to {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
