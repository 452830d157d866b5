"""Export time and peak memory of the SavedModel (recsys.serving.export) for a synthetic large version.

A random version of ``--users`` customers x ``--items`` items (``--dim``-d float32 tables, the id
tables of the real model plus the item-embedding history table) where every customer has a history
of geometric length (mean ``--mean-history``, at most ``--max-history`` items, as the snapshots
keep), is built in memory, then ``export_saved_model`` writes it to a temporary directory. Recorded:
seconds and peak RSS of building the scorer and of the export (sampled every 0.05 s, and the
process's ``ru_maxrss``), the sizes of ``saved_model.pb`` and ``variables/``, one loaded batch query,
the commit, whether the tree was dirty, and the load average before and after.

    nice -n 10 .venv/bin/python bench/scale/export_scale.py --users 1000000 --items 200000 \\
        --out bench/scale/export-results.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


class PeakRss:
    """The highest RSS seen every ``every`` seconds while the block runs."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.peak, self._stop = every, 0.0, threading.Event()

    def __enter__(self) -> PeakRss:
        self.peak = rss_gb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_gb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gb())


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


def build_scorer(users: int, items: int, dim: int, mean_history: float, max_history: int, seed: int = 0):
    import numpy as np

    from recsys.serving.index import Scorer

    rng = np.random.default_rng(seed)
    ids = np.array([f"c{n}" for n in range(users)], dtype=object)
    lengths = np.minimum(rng.geometric(1.0 / mean_history, size=users), max_history)
    rows = rng.integers(1, items, size=int(lengths.sum())).astype(np.int64)
    days = rng.integers(1, 10, size=len(rows)).astype(np.float32)
    cuts = np.cumsum(lengths)[:-1]
    histories = dict(zip(ids, zip(np.split(rows, cuts), np.split(days, cuts), strict=True), strict=True))
    scorer = Scorer(
        rng.standard_normal((users + 1, dim), dtype=np.float32), rng.standard_normal((items, dim), dtype=np.float32),
        dict(zip(ids, range(1, users + 1), strict=True)), np.array([""] + [f"i{r}" for r in range(1, items)], object),
        item_bias=rng.standard_normal(items, dtype=np.float32), repeat_weight=0.7, history_weight=1.0,
        histories=histories, history_table=rng.standard_normal((items, dim), dtype=np.float32), query_length=50,
    )
    return scorer, int(lengths.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--mean-history", type=float, default=30.0)
    parser.add_argument("--max-history", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    result: dict = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_before": os.getloadavg(),
        "nice": os.nice(0),
        "users": args.users, "items": args.items, "dim": args.dim,
        "mean_history": args.mean_history, "max_history": args.max_history,
    }
    started = time.perf_counter()
    import tensorflow as tf

    from recsys.serving.export import export_saved_model

    result["import_s"] = round(time.perf_counter() - started, 1)
    with PeakRss() as built:
        started = time.perf_counter()
        scorer, entries = build_scorer(args.users, args.items, args.dim, args.mean_history, args.max_history)
    result |= {"history_entries": entries, "build_s": round(time.perf_counter() - started, 1),
               "rss_after_build_gb": round(rss_gb(), 2), "build_peak_rss_gb": round(built.peak, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        with PeakRss() as exported:
            started = time.perf_counter()
            export_saved_model(scorer, list(range(1, args.items)), out, k=10)
        result |= {"export_s": round(time.perf_counter() - started, 1), "export_peak_rss_gb": round(exported.peak, 2),
                   "saved_model_pb_bytes": (out / "saved_model.pb").stat().st_size,
                   "variables_bytes": sum(f.stat().st_size for f in (out / "variables").iterdir())}
        started = time.perf_counter()
        serve = tf.saved_model.load(str(out)).signatures["serving_default"]
        result["load_s"] = round(time.perf_counter() - started, 1)
        users = [f"c{n}" for n in range(0, args.users, max(args.users // 16, 1))][:16]
        started = time.perf_counter()
        found = [[i.decode() for i in row] for row in serve(user_id=tf.constant(users))["item_ids"].numpy()]
        result["query_16_users_s"] = round(time.perf_counter() - started, 2)
        result["matches_scorer"] = found == scorer.top_k(users, 10)
    result |= {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
               "loadavg_after": os.getloadavg(), "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
