"""features@day2 at N events (issue 14): the features of a day that reads the snapshot of a day of N events.

Usage: features_day2.py N WORK NEW_TREE [OTHER_TREE ...], each tree a clean worktree of a commit. One store
under WORK/store (two synthetic days of N events, both validated, day 1's features built by NEW_TREE's code),
then day 2's features by each tree's code on a copy of it (``recsys features --date``, ``nice -n 15``); one
JSON line per process: command, exit status, wall and CPU seconds and peak RSS (``ru_maxrss`` from ``wait4``),
load average after. Results of 2026-12-02: results/features-day2-10m.json.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

PY = sys.executable
D1, D2 = "2026-01-05", "2026-01-06"


def run(work: str, src: str, root: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": src, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": root}
    started = time.time()
    with open(f"{work}/{args[0]}-{os.path.basename(src)}.log", "a") as err:
        proc = subprocess.Popen(["nice", "-n", "15", PY, "-m", "recsys.cli", *args], env=env, cwd=src,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    out = {"src": src, "cmd": " ".join(args), "exit": status, "wall_s": round(time.time() - started, 1),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "loadavg": os.getloadavg()}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    events, work, new, others = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    base = f"{work}/store"
    if not os.path.exists(f"{base}/features/dt={D1}/_SUCCESS"):
        run(work, new, base, "generate-synthetic", "--from", D1, "--days", "2", "--events", str(events))
        run(work, new, base, "validate", "--date", D1)
        run(work, new, base, "validate", "--date", D2)
        run(work, new, base, "features", "--date", D1)
    results = []
    for src in [new, *others]:
        root = f"{work}/store-{os.path.basename(src)}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root)
        results.append(run(work, src, root, "features", "--date", D2))
    with open(f"{work}/day2-results.json", "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
