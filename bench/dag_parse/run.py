"""Parse time of each DAG file, as Airflow 3's DAG processor sees it, in a fresh interpreter per repeat.

The DAG processor parses every file in a child process of its own that starts with Airflow imported and
the file's ``airflow.*`` imports pre-imported (``[dag_processor] parsing_pre_import_modules``, on by
default), then builds a DagBag of the one file and serialises its DAGs. That child's work is the
"parse time" of a file, and the number the <= 0.5 s target is about. For each file and each repeat this
script starts a new interpreter that

1. imports Airflow and pre-imports the file's Airflow modules as the processor does (``pre_import_s``,
   paid once per processor, not per parse; reported for context),
2. times ``DagBag(dag_folder=<file>)`` plus ``DagSerialization.to_dict`` of every DAG found (``parse_s``):
   the file's own imports that are not Airflow's (pendulum, recsys.config, ...) and its top-level code,
3. and records the DagBag's own ``FileLoadStat.duration`` (``dagbag_s``, what ``airflow dags report`` shows).

Repeats are interleaved over the files (file A, B, C, A, B, C, ...) so a burst of load from other work on
the machine hits every file alike; the median of the repeats is the result.

    . scripts/env.sh
    python bench/dag_parse/run.py --repeats 7 --out bench/dag_parse/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 0.5

LIST = r"""
import sys
from airflow.configuration import conf
from airflow.dag_processing.importers import get_importer_registry
safe = conf.getboolean("core", "DAG_DISCOVERY_SAFE_MODE")
print("\n".join(sorted(get_importer_registry().list_dag_files(sys.argv[1], safe_mode=safe))))
"""

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.configuration import conf  # noqa: F401  (Airflow and its settings, as the processor has them)
from airflow.dag_processing.processor import _pre_import_airflow_modules
import structlog
path = sys.argv[1]
_pre_import_airflow_modules(path, structlog.get_logger())
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
t1 = time.perf_counter()
bag = DagBag(dag_folder=path, load_op_links=False)
t_bag = time.perf_counter()
serialized = [DagSerialization.to_dict(dag) for dag in bag.dags.values()]
t2 = time.perf_counter()
stat = bag.dagbag_stats[0] if bag.dagbag_stats else None
print(json.dumps({
    "pre_import_s": t1 - t0,
    "parse_s": t2 - t1,
    "dagbag_s": stat.duration.total_seconds() if stat else None,
    "serialize_s": t2 - t_bag,
    "dags": sorted(bag.dag_ids),
    "tasks": stat.task_num if stat else 0,
    "import_errors": {k: v[-500:] for k, v in bag.import_errors.items()},
    "serialized_bytes": len(json.dumps(serialized, default=str)),
}))
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def dag_files(folder: Path) -> list[Path]:
    """The files the DAG processor would parse: Airflow's own listing (``.airflowignore``, safe mode)."""
    proc = subprocess.run(
        [sys.executable, "-c", LIST, str(folder)], capture_output=True, text=True, cwd=ROOT, env=os.environ.copy()
    )
    if proc.returncode != 0:
        raise SystemExit(f"listing {folder} with Airflow failed:\n{proc.stderr[-2000:]}")
    return [Path(line) for line in proc.stdout.split("\n") if line.endswith(".py")]


def one(path: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, cwd=ROOT, env=os.environ.copy()
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"parsing {path} failed in the child interpreter:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dags", type=Path, default=ROOT / "dags")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "dag_parse" / "results.json")
    args = p.parse_args()
    if "AIRFLOW_HOME" not in os.environ:
        raise SystemExit(
            "AIRFLOW_HOME is not set: run `. scripts/env.sh` first (the DAGs read the project's Airflow configuration)"
        )
    files = dag_files(args.dags)
    if not files:
        raise SystemExit(f"no DAG files in {args.dags}")
    runs: dict[str, list[dict]] = {f.name: [] for f in files}
    before = uptime()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    for _ in range(args.repeats):
        for f in files:
            runs[f.name].append(one(f))
    after = uptime()

    results = {}
    for name, rs in runs.items():
        med = {
            k: round(statistics.median(r[k] for r in rs), 3)
            for k in ("parse_s", "dagbag_s", "serialize_s", "pre_import_s", "process_s")
        }
        results[name] = {
            **{f"median_{k}": v for k, v in med.items()},
            "max_parse_s": round(max(r["parse_s"] for r in rs), 3),
            "min_parse_s": round(min(r["parse_s"] for r in rs), 3),
            "meets_target": med["parse_s"] <= TARGET_S,
            "dags": rs[0]["dags"],
            "tasks": rs[0]["tasks"],
            "import_errors": rs[0]["import_errors"],
            "serialized_bytes": rs[0]["serialized_bytes"],
            "repeats": len(rs),
        }
    doc = {
        "started": started,
        "command": "python bench/dag_parse/run.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
        },
        "uptime_before": before,
        "uptime_after": after,
        "target_parse_s": TARGET_S,
        "files": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    width = max(len(n) for n in results)
    print(f"{'file':<{width}}  parse s median (min..max)  DagBag s  serialise s  pre-import s  process s  dags/tasks")
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r['median_parse_s']:6.3f} ({r['min_parse_s']:.3f}..{r['max_parse_s']:.3f})"
            f"     {r['median_dagbag_s']:6.3f}    {r['median_serialize_s']:6.3f}      {r['median_pre_import_s']:6.3f}"
            f"     {r['median_process_s']:6.2f}   {len(r['dags'])}/{r['tasks']}"
            f"{'  IMPORT ERRORS' if r['import_errors'] else ''}"
        )
    print(f"load: before {before}\n      after  {after}\nwrote {args.out}")


if __name__ == "__main__":
    main()
