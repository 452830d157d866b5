"""Peak RSS and CPU seconds of the steps after training that hold per-customer state, at 10M / 30M-event scale.

``build`` writes a synthetic local store sized like one day of ``--events`` events of bench/scale/run.py
(users = events / 8, items = events / 50, all with their own embedding row): the user and item
vocabularies, one version's ``tables.npz`` with every table the model stores (64-d id tables, title words,
price bands, bias, repeat and trend weights), two feature partitions (the history snapshot, every customer
with a geometric number of distinct items, mean ``--mean-history``, at most ``--max-history``, the product's
bound ``max(history_length, repeat_length)``; ``examples.parquet`` with the item rows the trend term counts),
a catalog, and the version's serving index as deploy writes it (champion). It is written without Python
objects per customer (numpy/pyarrow), so 30M fits in about 3 GB.

``measure --step S`` runs one step in this process and prints a JSON line:

* ``scorer``: ``load_scorer(store, version, before=day)``, what ``recsys evaluate`` loads per model, plus
  ranking 256 customers (one evaluation block) to show it works;
* ``export``: what ``recsys deploy`` does in memory: ``load_scorer``, ``build_index`` and
  ``export_saved_model`` into a temporary directory;
* ``holder``: ``load_version`` (the service's model holder; exact search) and 200 recommendations.

``run`` builds the store if it is not there, then runs each step ``measure`` in its own child process
(``nice`` inherited), and writes all results with the commit, the dirty flag and the load average::

    nice -n 10 .venv/bin/python bench/scale/serving_state.py run --events 10000000 --root /tmp/ss-10m \\
        --out bench/scale/results/serving-state-10m-COMMIT.json

``cpu_s`` and ``peak_rss_mb`` are the child's own (``getrusage``: user + system seconds, ``ru_maxrss``, imports
included); ``step_cpu_s`` the step alone; ``rss_after_imports_mb`` the RSS before the step's own work
(TensorFlow imported for ``export``). A step whose RSS passes ``--rss-cap-mb`` (default 7,500) is killed
(``capped``: its peak is then at least that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DAY = date(2011, 1, 4)  # the newest feature partition; the snapshot before the evaluated day
VERSION = 1
STEPS = ("scorer", "export", "holder")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _ids(prefix: str, numbers):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def build(root: Path, events: int, dim: int, mean_history: float, max_history: int, seed: int = 7) -> dict:
    """Write the synthetic store (see the module docstring); returns its sizes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys import registry, schema
    from recsys.features import history, vocab
    from recsys.features.items import PRICE_BANDS, TITLE_WORDS, WORD_BUCKETS
    from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_bytes, index_metadata
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    users, items = events // 8, events // 50
    rng = np.random.default_rng(seed)
    store = LocalStore(root)

    def parquet(path: str, table: pa.Table) -> None:
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, full)

    user_ids, item_ids = _ids("u", np.arange(1, users + 1)), _ids("i", np.arange(1, items + 1))
    for name, ids in ((vocab.USERS, user_ids), (vocab.ITEMS, item_ids)):
        n = len(ids)
        stamp = pa.array([DAY.isoformat()]).take(pa.array(np.zeros(n, np.int64)))
        parquet(layout.vocab_table(name), pa.table({
            vocab.ID: ids, vocab.ROW: np.arange(1, n + 1, dtype=np.int64), vocab.FIRST_SEEN: stamp,
            vocab.COUNT: np.ones(n, np.int64), vocab.QUALIFIED: stamp, vocab.LAST_DAY: stamp}))

    vdir = root / layout.model_version(VERSION)
    vdir.mkdir(parents=True, exist_ok=True)
    item_words = rng.integers(0, WORD_BUCKETS, size=(items + 1, TITLE_WORDS), dtype=np.int32)
    item_words[:, TITLE_WORDS // 2:] = 0
    np.savez(vdir / layout.TABLES_FILE,
             user=rng.standard_normal((users + 1, dim), dtype=np.float32),
             item=rng.standard_normal((items + 1, dim), dtype=np.float32),
             word=rng.standard_normal((WORD_BUCKETS, dim), dtype=np.float32) * np.float32(0.3),
             price=rng.standard_normal((PRICE_BANDS, dim), dtype=np.float32) * np.float32(0.3),
             item_bias=rng.standard_normal(items + 1, dtype=np.float32),
             repeat_weight=np.asarray(0.7, np.float32), trend_weight=np.asarray(0.4, np.float32),
             item_words=item_words, item_price=rng.integers(0, PRICE_BANDS, size=items + 1, dtype=np.int32))
    del item_words
    meta = {"version": VERSION, "trained_on": DAY.isoformat(), "user_rows": users + 1, "item_rows": items + 1,
            "history_length": 50, "repeat_length": max_history, "repeat_scale": 1.0, "trend_days": 7}
    (vdir / layout.METADATA_FILE).write_text(json.dumps(meta))
    registry.add_version(store, VERSION, meta, run_id="bench")  # type: ignore[arg-type]

    # the snapshot: distinct (user, item) pairs, Zipf-like items
    lengths = np.minimum(rng.geometric(1.0 / mean_history, size=users), max_history)
    owner = np.repeat(np.arange(users, dtype=np.int64), lengths)
    item = (rng.zipf(1.2, size=len(owner)) - 1) % items
    key = np.unique(owner * items + item)
    del owner, item
    owner, item = np.divmod(key, items)
    del key
    days_back = rng.integers(0, 30, size=len(owner))
    last_days = pa.array([(DAY - timedelta(days=d)).isoformat() for d in range(30)])
    snapshot = pa.table({
        schema.USER_ID: user_ids.take(owner), schema.ITEM_ID: item_ids.take(item),
        history.DAYS: rng.integers(1, 6, size=len(owner)).astype(np.int64),
        history.LAST_DAY: last_days.take(days_back)})
    rows = len(owner)
    examples = pa.table({schema.ITEM_ROW: (item[: max(rows // 4, 1)] + 1).astype(np.int64)})
    del owner, item, days_back
    for day in (DAY - timedelta(days=1), DAY):
        parquet(f"{layout.features(day)}/{layout.HISTORY_FILE}", snapshot)
        parquet(f"{layout.features(day)}/{layout.EXAMPLES_FILE}", examples)
        store.mark_success(layout.features(day))
    del snapshot, examples

    catalog = pa.table({schema.ITEM_ID: item_ids, schema.TITLE: _ids("item ", np.arange(1, items + 1)),
                        schema.CATEGORY: pa.nulls(items, pa.string()),
                        schema.PRICE: np.round(rng.lognormal(1.0, 0.8, size=items), 2),
                        schema.AVAILABLE: rng.random(items) > 0.05})
    parquet(f"{layout.raw_catalog(DAY)}/part-00000.parquet", catalog)
    store.mark_success(layout.raw_catalog(DAY))
    index = build_index(store, VERSION, DAY)
    data = index_bytes(index, DAY, "bench")
    store.write_bytes(f"{layout.model_version(VERSION)}/{INDEX_FILE}", data)
    store.write_json(f"{layout.model_version(VERSION)}/{INDEX_META_FILE}", index_metadata(data, index, DAY, "bench"))
    registry.set_champion(store, VERSION, registry.DEPLOYED, "benchmark", "bench")
    return {"events": events, "users": users, "items": items, "dim": dim, "snapshot_rows": rows,
            "mean_history": mean_history, "max_history": max_history, "served_items": len(index)}


def measure(root: Path, step: str) -> dict:
    """Run ``step`` once in this process: seconds, RSS before and after, and a check that it works."""
    from recsys.storage.local import LocalStore

    store = LocalStore(root)
    out: dict = {"step": step}
    started = time.perf_counter()
    if step == "export":
        import tensorflow  # noqa: F401 - imported before the step, as deploy imports it with export
    from recsys.serving.index import load_scorer
    out["import_s"] = round(time.perf_counter() - started, 2)
    out["rss_after_imports_mb"] = round(_rss_mb())
    started = time.perf_counter()
    cpu = time.process_time()
    if step == "scorer":
        scorer = load_scorer(store, VERSION, before=DAY + timedelta(days=1))
        out["load_s"] = round(time.perf_counter() - started, 2)
        users = [f"u{n}" for n in range(1, 257)]
        ranked = scorer.top_k(users, 100)
        out["ranked_users"] = sum(1 for r in ranked if len(r) == 100)
    elif step == "export":
        from recsys.serving.deploy import build_index
        from recsys.serving.export import export_saved_model

        scorer = load_scorer(store, VERSION)
        out["load_s"] = round(time.perf_counter() - started, 2)
        index = build_index(store, VERSION, DAY)
        with tempfile.TemporaryDirectory() as tmp:
            export_saved_model(scorer, [int(r) for r in index["row"]], Path(tmp) / "model", 100)
            out["saved_model_mb"] = round(sum(f.stat().st_size for f in (Path(tmp) / "model").rglob("*")
                                              if f.is_file()) / 1e6, 1)
    elif step == "holder":
        from recsys.serving.model_holder import load_version

        loaded = load_version(store, VERSION)
        out["load_s"] = round(time.perf_counter() - started, 2)
        out["rss_loaded_mb"] = round(_rss_mb())
        answers = [loaded.recommend(f"u{n}", 20, exclude_purchased=n % 2 == 0) for n in range(1, 201)]
        out["personal_answers"] = sum(1 for a in answers if a.fallback is None and len(a.item_ids) == 20)
    else:
        raise SystemExit(f"unknown step {step!r}; one of {', '.join(STEPS)}")
    out["step_s"] = round(time.perf_counter() - started, 2)
    out["step_cpu_s"] = round(time.process_time() - cpu, 2)
    out["rss_end_mb"] = round(_rss_mb())
    return out


def _tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` (MB), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return 0.0


def _child(args: list[str], cap_mb: float) -> dict:
    """Run this script with ``args`` in a child process; its JSON result plus wall seconds, exit and load.

    A child whose RSS passes ``cap_mb`` (sampled every 0.2 s) is killed and marked ``capped``."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        capped, sampled = False, 0.0
        while proc.poll() is None:
            rss = _tree_rss_mb(proc.pid)
            sampled = max(sampled, rss)
            if rss > cap_mb:
                proc.kill()
                capped = True
            time.sleep(0.2)
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}) | {
        "exit": proc.returncode, "capped": capped, "sampled_peak_rss_mb": round(sampled),
        "wall_s": round(time.perf_counter() - started, 1),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def _self_usage() -> dict:
    """CPU seconds (user + system) and peak RSS of this whole process, imports included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1e3)}


def run(args: argparse.Namespace) -> dict:
    from _harness import cpu_name, git_state

    result: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), **git_state(ROOT),
                    "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
                    "nice": os.nice(0), "root": str(args.root), "steps": {}}
    if not (args.root / "store.json").exists():
        result["build"] = _child(["build", "--root", str(args.root), "--events", str(args.events),
                                  "--dim", str(args.dim), "--mean-history", str(args.mean_history),
                                  "--max-history", str(args.max_history)], args.rss_cap_mb)
    else:
        result["build"] = {"reused": True}
    result["store"] = json.loads((args.root / "store.json").read_text())
    for step in args.steps.split(","):
        result["steps"][step] = _child(["measure", "--root", str(args.root), "--step", step], args.rss_cap_mb)
        print(json.dumps({step: result["steps"][step]}), flush=True)
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "measure", "run"))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--mean-history", type=float, default=6.0,
                        help="mean distinct items per customer in the snapshot (a 10M-event day: 7.45M pairs, "
                             "1.25M users: about 6)")
    parser.add_argument("--max-history", type=int, default=200, help="the snapshot's bound per customer")
    parser.add_argument("--step", choices=STEPS)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rss-cap-mb", type=float, default=7500, help="kill a step whose RSS passes this")
    args = parser.parse_args()
    if args.command == "build":
        args.root.mkdir(parents=True, exist_ok=True)
        sizes = build(args.root, args.events, args.dim, args.mean_history, args.max_history)
        (args.root / "store.json").write_text(json.dumps(sizes))
        print(json.dumps(sizes | _self_usage()))
    elif args.command == "measure":
        print(json.dumps(measure(args.root, args.step) | _self_usage()))
    else:
        result = run(args)
        text = json.dumps(result, indent=2)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
