"""validate + build_features on pandas and on Spark (``RECSYS_COMPUTE``), on the same synthetic partitions.

For each size, one synthetic day is generated once (``recsys generate-synthetic``) and hard-linked into one
store per engine; then each engine runs the two steps as the deployment runs them, one process per step:

    pandas: python -m recsys.cli validate|features --date D                       (RECSYS_COMPUTE=pandas)
    spark:  spark-submit --master local[N] --driver-memory M recsys/spark/job.py validate|features --date D

Each step records wall seconds, CPU seconds (user + sys of the process and its children, from ``wait4``),
the exit status and the peak resident memory, sampled every 0.2 s with psutil and split by role: for Spark
the driver JVM (in local mode it also hosts the executor threads: "driver+executor"), the Python driver
(the job's own process) and the Python workers (``pyspark.daemon`` and its forks); for pandas the one process.
The results file records the commit and dirty flag of the checkout, the machine, the settings, and is
rewritten after every step.

    nice -n 15 .venv/bin/python bench/scale/spark.py --sizes 1000000,10000000 \\
        --out bench/scale/results/spark-NAME.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: _harness

import _harness  # noqa: E402

ROOT = HERE.parents[1]
DAY = date(2026, 1, 5)
STEPS = ("validate", "features")
TAIL = 3000


class TreeSampler(threading.Thread):
    """Peak resident memory (MB) of a process tree, per role, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[str, float] = {}
        self._done = threading.Event()

    @staticmethod
    def role(proc: psutil.Process, top: int) -> str:
        try:
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.Error:
            return "other"
        if "java" in name:
            return "jvm (driver+executor)"
        if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
            return "python workers"
        if "python" in name:  # the pandas step, or the Spark job's own Python (a child of spark-submit's JVM)
            return "python driver"
        return "other"  # spark-submit's shell wrapper

    def run(self) -> None:
        try:
            top = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            sums: dict[str, float] = {}
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    rss = proc.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                role = self.role(proc, self.pid)
                sums[role] = sums.get(role, 0.0) + rss
            sums["total"] = sum(sums.values())
            for role, value in sums.items():
                self.peaks[role] = max(self.peaks.get(role, 0.0), value)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def run_step(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run one step; wall, CPU, peaks, status."""
    load_before = [round(x, 2) for x in os.getloadavg()]  # a shared machine: what else was running
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "argv": argv, "exit": proc.returncode, "wall_s": round(wall, 2), "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "max_rss_mb_wait4": round(usage.ru_maxrss / 1024, 1),
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(sampler.peaks.items())},
    }
    if proc.returncode != 0:
        result["log_tail"] = log.read_text(errors="replace")[-TAIL:]
    return result


def env_for(engine: str, store: Path, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update({"RECSYS_STORAGE_ROOT": str(store), "RECSYS_COMPUTE": engine, "RECSYS_SPARK_UI": "false",
                "RECSYS_SPARK_MASTER": args.master, "RECSYS_SPARK_DRIVER_MEMORY": args.driver_memory,
                "RECSYS_SPARK_SHUFFLE_PARTITIONS": str(args.shuffle_partitions),
                "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable})
    env.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
    return env


def command(engine: str, step: str, args: argparse.Namespace) -> list[str]:
    if engine == "pandas":
        return [sys.executable, "-m", "recsys.cli", step, "--date", DAY.isoformat()]
    submit = str(Path(sys.executable).with_name("spark-submit"))
    return [submit, "--master", args.master, "--driver-memory", args.driver_memory,
            "--conf", "spark.ui.enabled=false", "--conf", f"spark.sql.shuffle.partitions={args.shuffle_partitions}",
            str(ROOT / "recsys" / "spark" / "job.py"), step, "--date", DAY.isoformat()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--engines", default="pandas,spark")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-spark")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    results: dict[str, Any] = {
        "benchmark": "bench/scale/spark.py", "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": _harness.git_state(ROOT), "machine": {"cpu": _harness.cpu_name(), "cores": os.cpu_count(),
                                                      "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                                                      "python": platform.python_version()},
        "settings": {"master": args.master, "driver_memory": args.driver_memory,
                     "shuffle_partitions": args.shuffle_partitions, "nice": os.nice(0)},
        "sizes": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    for size in [int(s) for s in args.sizes.split(",")]:
        work = args.work / str(size)
        shutil.rmtree(work, ignore_errors=True)
        source = work / "source"
        entry: dict[str, Any] = results["sizes"].setdefault(str(size), {})
        gen = [sys.executable, "-m", "recsys.cli", "generate-synthetic", "--from", DAY.isoformat(),
               "--events", str(size)]
        work.mkdir(parents=True)
        entry["generate"] = run_step(gen, env_for("pandas", source, args), work / "generate.log")
        save()
        if entry["generate"]["exit"] != 0:
            continue
        for engine in args.engines.split(","):
            store = work / engine
            shutil.copytree(source, store, copy_function=os.link)
            for step in STEPS:
                entry.setdefault(engine, {})[step] = run_step(
                    command(engine, step, args), env_for(engine, store, args), work / f"{engine}-{step}.log")
                save()
                if entry[engine][step]["exit"] != 0:
                    break
            if all(entry.get(engine, {}).get(s, {}).get("exit") == 0 for s in STEPS):
                stats = json.loads((store / "features" / f"dt={DAY.isoformat()}" / "stats.json").read_text())
                entry[engine]["examples"] = stats["examples"]
                entry[engine]["totals"] = {
                    k: round(sum(entry[engine][s][k] for s in STEPS), 2) for k in ("wall_s", "cpu_s")}
                save()
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()


if __name__ == "__main__":
    main()
