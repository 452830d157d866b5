"""Examples per second and memory per process of the fine-tune as 1 process, as 2 mirrored workers, and as a
chief with 2 workers and 2 parameter servers (issue 16), on the same real Online Retail day.

Setup (once): ``--days`` days of Online Retail from ``--first`` are landed, validated and featurised in a temporary
store, and a full retrain on all but the last day is the parent; the last day is the one fine-tuned. Then, for
each layout and each of ``--repeats`` rounds (layouts interleaved, so a burst of load from other work does not
land on one layout only), a fresh copy of that store is fine-tuned by ``recsys train --date <last day>``:

* ``single``: one process, no ``TF_CONFIG`` (Keras ``fit``, the product's default path);
* ``mirrored``: 2 workers, MultiWorkerMirroredStrategy (``recsys/training_distributed.py``);
* ``parameter_server``: a chief (coordinator), 2 workers and 2 parameter servers, tables split by rows.

Every task is a separate process on loopback (free ports). Reported per run: the training loop's seconds and
examples per second as the version's metadata says (examples x epochs / seconds of the loop, from the chief's
point of view: the whole job), the wall time of the whole command (process start, TensorFlow import, reading,
training, writing, exit), and the peak resident memory (VmHWM) of every process. Medians over the rounds.

    . scripts/env.sh
    nice -n 15 python bench/training_distributed/run.py --out bench/training_distributed/results/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import _harness  # noqa: E402

LAYOUTS = ("single", "mirrored", "parameter_server")


def cluster(layout: str) -> dict[str, list[str]] | None:
    def ports(n: int) -> list[str]:
        return [f"127.0.0.1:{_harness.free_port()}" for _ in range(n)]

    if layout == "single":
        return None
    if layout == "mirrored":
        return {"worker": ports(2)}
    return {"chief": ports(1), "worker": ports(2), "ps": ports(2)}


def peak_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_layout(layout: str, store_root: Path, env: dict[str, str], day: date, logs: Path) -> dict[str, Any]:
    """``recsys train`` in every task of ``layout`` on ``store_root``; the chief's result, wall time and the
    peak memory of every task."""
    spec = cluster(layout)
    tasks = [("single", 0)] if spec is None else [(job, i) for job, hosts in spec.items() for i in range(len(hosts))]
    procs = []
    started = time.perf_counter()
    for job, index in tasks:
        task_env = {**env, "RECSYS_STORAGE_ROOT": str(store_root)}
        if spec is not None:
            task_env["TF_CONFIG"] = json.dumps({"cluster": spec, "task": {"type": job, "index": index}})
        out, err = logs / f"{layout}-{job}-{index}.out", logs / f"{layout}-{job}-{index}.err"
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen([sys.executable, "-m", "recsys.cli", "train", "--date", day.isoformat()],
                                    env=task_env, stdout=o, stderr=e)
        procs.append(((job, index), proc, out, err))
    peaks: dict[str, int] = {}
    while any(p.poll() is None for _, p, _, _ in procs):
        for (job, index), proc, _, _ in procs:
            kib = peak_kib(proc.pid) if proc.poll() is None else None
            if kib is not None:
                peaks[f"{job}-{index}"] = max(kib, peaks.get(f"{job}-{index}", 0))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    for (job, index), proc, _, err in procs:
        if proc.returncode != 0:
            raise RuntimeError(f"{layout}: {job} {index} exited with {proc.returncode}:\n{err.read_text()[-3000:]}")
    chief_key = ("single", 0) if spec is None else (("chief", 0) if "chief" in spec else ("worker", 0))
    chief = next(json.loads(out.read_text()) for key, _, out, _ in procs if key == chief_key)
    loop_seconds = chief["train_seconds"]
    examples = (chief["train_examples"] + chief["replay_examples"]) * chief["epochs"]
    return {
        "layout": layout, "version": chief["version"], "examples": examples, "loop_seconds": loop_seconds,
        "examples_per_second": round(examples / loop_seconds, 1), "wall_seconds": round(wall, 1),
        "wall_examples_per_second": round(examples / wall, 1),
        "steps": chief.get("distributed", {}).get("steps"), "final_loss": chief["final_loss"],
        "peak_rss_mib": {k: round(v / 1024, 1) for k, v in sorted(peaks.items())},
        "shards": chief.get("distributed", {}).get("shards"),
        # the parameter-server coordinator: how it warm-started, checked and saved the sharded tables (by rows)
        "warm_start": chief.get("distributed", {}).get("warm_start"),
        "saved": chief.get("distributed", {}).get("saved"),
        "user_rows": chief["user_rows"], "table_megabytes": chief["table_megabytes"],
    }


def prepare(root: Path, env: dict[str, str], first: date, days: int) -> date:
    """Land, validate and featurise ``days`` days from ``first``; a full retrain up to the one before the last.
    Returns the last day (the one fine-tuned)."""
    from recsys.config import Settings
    from recsys.datasets.landing import land_days
    from recsys.features import build_features
    from recsys.storage.local import LocalStore
    from recsys.training import train_from_scratch
    from recsys.validation import validate_partition

    store = LocalStore(root)
    settings = Settings.from_env({**env, "RECSYS_STORAGE_ROOT": str(root)})
    landed = [date.fromisoformat(str(x.as_dict()["date"])) for x in land_days(store, first, days)]
    for day in landed:
        validate_partition(store, settings, day, accept_invalid=True, accept_reason="benchmark")
        build_features(store, settings, day)
    train_from_scratch(store, settings, landed[-2])
    return landed[-1]


def write_results(args: argparse.Namespace, runs: list[dict[str, Any]], day: date, prepare_seconds: float,
                  load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Medians per layout over ``runs`` (so far), written to ``args.out`` with the commit, dirty flag and load."""
    def median(layout: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs if r["layout"] == layout), 1)

    summary: dict[str, dict[str, Any]] = {}
    for layout in LAYOUTS:
        mine = [r for r in runs if r["layout"] == layout]
        if not mine:
            continue
        tasks = sorted({task for r in mine for task in r["peak_rss_mib"]})
        summary[layout] = {
            "examples_per_second": median(layout, "examples_per_second"),
            "loop_seconds": median(layout, "loop_seconds"),
            "wall_seconds": median(layout, "wall_seconds"),
            "wall_examples_per_second": median(layout, "wall_examples_per_second"),
            "peak_rss_mib_per_process": {t: round(statistics.median(r["peak_rss_mib"][t] for r in mine
                                                                    if t in r["peak_rss_mib"]), 1) for t in tasks},
            "peak_rss_mib_total": round(statistics.median(sum(r["peak_rss_mib"].values()) for r in mine), 1),
        }
    single = summary["single"]["examples_per_second"]
    for layout in summary:
        summary[layout]["speed_vs_single"] = round(summary[layout]["examples_per_second"] / single, 3)
    result = {
        "benchmark": "training_distributed",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **_harness.git_state(ROOT),
        "machine": {"cpu": _harness.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "setup": {"first": args.first.isoformat(), "days": args.days, "fine_tuned_day": day.isoformat(),
                  "epochs": args.epochs, "batch_size": args.batch_size, "repeats": args.repeats,
                  "prepare_seconds": round(prepare_seconds, 1)},
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", type=date.fromisoformat, default=date(2010, 12, 1))
    parser.add_argument("--days", type=int, default=6, help="days landed; the last one is fine-tuned")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    env = {**os.environ, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_EPOCHS": str(args.epochs),
           "RECSYS_BATCH_SIZE": str(args.batch_size), "TF_CPP_MIN_LOG_LEVEL": "2"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        t = time.perf_counter()
        day = prepare(base, env, args.first, args.days)
        prepare_seconds = time.perf_counter() - t
        logs = Path(tmp) / "logs"
        logs.mkdir()
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            for layout in LAYOUTS:
                copy = Path(tmp) / f"{layout}-{repeat}"
                shutil.copytree(base, copy)
                run = run_layout(layout, copy, env, day, logs) | {"repeat": repeat,
                                                                   "loadavg": [round(x, 2) for x in os.getloadavg()]}
                print(json.dumps(run), file=sys.stderr, flush=True)
                runs.append(run)
                write_results(args, runs, day, prepare_seconds, load_before)  # kept if a later run fails
                shutil.rmtree(copy)

    print(json.dumps(write_results(args, runs, day, prepare_seconds, load_before), indent=2))


if __name__ == "__main__":
    main()
