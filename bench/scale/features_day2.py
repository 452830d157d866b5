"""features@day2 at N events (issue 14): the features of a day that reads the snapshot of a day of N events.

One store under WORK/store: two synthetic days of N events, both validated, day 1's features built by the
first tree's code (all through the command line; skipped when WORK/store already has day 1's features, so a
built store is reused, also by a second run of this script beside the first). Then day 2's features by each
tree's code on a copy of that store (``recsys features --date``), kept in WORK/store-<tree's directory name>
to compare the trees' outputs. Each tree is a worktree of a commit (``git worktree add -f /tmp/wt-X COMMIT``);
its commit and dirty flag are recorded. Every step is one process, measured as ``run.py`` measures
(``run.Step``: ``wait4``'s CPU seconds and ``ru_maxrss``, an RSS timeline sampled every 0.2 s, the load average
before and after); a line per step on stdout, and all of them in ``--out`` (rewritten after every step).

    nice -n 15 .venv/bin/python bench/scale/features_day2.py 30000000 /tmp/fd2-30m /tmp/wt-new /tmp/wt-old \\
        --out bench/scale/results/features-day2-30m-COMMIT.json

Results: results/features-day2-10m.json (2026-12-02, an earlier version of this script), features-day2-*.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run.py's measuring

import run  # noqa: E402

D1, D2 = "2026-01-05", "2026-01-06"


def step(name: str, tree: str, root: Path, logs: Path, *args: str) -> dict[str, Any]:
    env = run.child_env({"PYTHONPATH": tree, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(root)})
    measured = run.Step(name, run.cli(*args), env, logs).wait()
    result = {"step": name, "tree": tree, **run.code_state(Path(tree)), **measured}
    print(json.dumps({k: v for k, v in result.items() if k not in ("rss_timeline", "output")}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", type=int, help="events per synthetic day")
    parser.add_argument("work", type=Path, help="working directory (the store, its copies, the logs)")
    parser.add_argument("trees", nargs="+", help="worktrees whose code builds day 2 (the first also builds the store)")
    parser.add_argument("--out", type=Path, help="results JSON (default WORK/day2-results.json)")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    out = args.out or work / "day2-results.json"
    base, logs = work / "store", work / "logs"
    doc: dict[str, Any] = {"benchmark": "bench/scale/features_day2.py", "command": " ".join(sys.argv),
                           "events_per_day": args.events, "days": [D1, D2], "bench_git": run.code_state(HERE),
                           "machine": run.machine(), "started": run.now(), "runs": []}

    def record(result: dict[str, Any]) -> None:
        doc["runs"].append(result)
        out.write_text(json.dumps(doc, indent=1) + "\n")

    new = args.trees[0]
    if not (base / "features" / f"dt={D1}" / "_SUCCESS").exists():
        record(step("generate", new, base, logs, "generate-synthetic", "--from", D1, "--days", "2", "--events",
                    str(args.events)))
        for day in (D1, D2):
            record(step(f"validate@{day}", new, base, logs, "validate", "--date", day))
        record(step(f"features@{D1}", new, base, logs, "features", "--date", D1))
    else:
        doc["store"] = f"{base} reused (built before this run)"
    for tree in args.trees:
        name = Path(tree).name  # two runs of this script with other trees may share WORK
        root = work / f"store-{name}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root)
        record(step(f"features@{D2}-{name}", tree, root, logs, "features", "--date", D2))
    doc["finished"] = run.now()
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
