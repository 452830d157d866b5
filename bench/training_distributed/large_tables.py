"""Memory per process for a table larger than one process's share (issue 16): the fine-tune of a parent whose user
table is ``--users`` x 64 float32 (3M users: 732 MiB, and as much again for its Adagrad slot), in one process and as
a chief (coordinator) with 2 workers and 2 parameter servers.

Setup (once): ``--days`` days of Online Retail are landed, validated and featurised in a temporary store and a full
retrain on all but the last day is the parent (as ``run.py`` does). Then the parent is made large: its stored user
table is extended to ``--users`` rows (its real rows first, then synthetic ones, uniform like new rows; written piece
by piece, never whole in this process), and the fine-tuned day's vocabulary grows by its real new users on top, so
the fine-tune grows a ``--users``-row table. For each layout a fresh copy of that store is fine-tuned by
``recsys train --date <last day>`` (``run.run_layout``), and the peak resident memory (VmHWM) of every process is
recorded, with the chief's report of how it warm-started, checked and saved the sharded tables (piece by piece).

    PYTHONPATH=. nice -n 15 python bench/training_distributed/large_tables.py \\
        --out bench/training_distributed/results/large_tables.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (bench/training_distributed/run.py: prepare, run_layout)
from run import ROOT, _harness  # noqa: E402

LAYOUTS = ("single", "parameter_server")
PIECE_ROWS = 1 << 18  # synthetic rows generated and written at a time


def inflate(root: Path, day: date, users: int, seed: int) -> dict[str, Any]:
    """Extend the parent's stored user table to ``users`` rows and ``day``'s user vocabulary by the same number of
    rows (its real new users stay new); returns the sizes."""
    from recsys import registry
    from recsys.features.build import load_stats
    from recsys.model.tables import StreamedArray, load_tables, tables_path, write_tables
    from recsys.model.two_tower import INIT_SCALE
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    store = LocalStore(root)
    parent = registry.parent_for_date(registry.load(store), day)
    if parent is None:
        raise SystemExit(f"no parent version for {day}")
    old = load_tables(store, parent)  # the real parent: a few thousand users
    real = old["user"]
    if users <= len(real):
        raise SystemExit(f"--users {users} is not more than the parent's {len(real)} users")

    def rows() -> Iterator[np.ndarray]:
        yield real
        rng = np.random.default_rng(seed)
        for start in range(len(real), users, PIECE_ROWS):
            n = min(PIECE_ROWS, users - start)
            yield rng.uniform(-INIT_SCALE, INIT_SCALE, size=(n, real.shape[1])).astype(real.dtype)

    path = root / tables_path(parent)
    tmp = path.with_name("tables.tmp.npz")
    write_tables(tmp, {**old, "user": StreamedArray((users, real.shape[1]), real.dtype, rows)})
    tmp.replace(path)
    stats_path = root / layout.features(day) / "stats.json"
    stats = load_stats(store, day)
    added = users - len(real)
    day_users = stats["user_vocab_size"]
    stats["user_vocab_size"] = day_users + added
    stats_path.write_text(json.dumps(stats, indent=2, sort_keys=True))
    return {"parent": parent, "parent_real_users": len(real), "parent_users": users,
            "day_users": day_users + added, "new_users_of_the_day": day_users - len(real), "dim": int(real.shape[1]),
            "user_table_mib": round(users * real.shape[1] * real.dtype.itemsize / 2**20, 1),
            "tables_npz_mib": round(path.stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", type=date.fromisoformat, default=date(2010, 12, 1))
    parser.add_argument("--days", type=int, default=3, help="days landed; the last one is fine-tuned")
    parser.add_argument("--users", type=int, default=3_000_000, help="rows of the parent's user table")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {LAYOUTS}")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    env = {**os.environ, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_EPOCHS": str(args.epochs),
           "RECSYS_BATCH_SIZE": str(args.batch_size), "TF_CPP_MIN_LOG_LEVEL": "2"}
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "training_distributed/large_tables",
        **_harness.git_state(ROOT),
        "machine": {"cpu": _harness.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "loadavg_before": [round(x, 2) for x in load_before],
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        started = time.perf_counter()
        day = run.prepare(base, env, args.first, args.days)
        result["setup"] = {"first": args.first.isoformat(), "days": args.days, "fine_tuned_day": day.isoformat(),
                           "epochs": args.epochs, "batch_size": args.batch_size,
                           **inflate(base, day, args.users, seed=7)}
        result["setup"]["prepare_seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(result["setup"]), file=sys.stderr, flush=True)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        for layout in args.layouts.split(","):
            copy = Path(tmp) / layout
            shutil.copytree(base, copy)
            record = run.run_layout(layout, copy, env, day, logs) | {
                "loadavg": [round(x, 2) for x in os.getloadavg()]}
            print(json.dumps(record), file=sys.stderr, flush=True)
            result["runs"].append(record)
            result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")  # kept if a later layout fails
            shutil.rmtree(copy)
    print(json.dumps({r["layout"]: r["peak_rss_mib"] for r in result["runs"]}, indent=2))


if __name__ == "__main__":
    main()
