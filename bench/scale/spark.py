"""validate + build_features on pandas and on Spark (``RECSYS_COMPUTE``), on the same synthetic partitions.

For each size, one synthetic day is generated once (``recsys generate-synthetic``) and hard-linked into one
store per engine; then each engine runs the two steps as the deployment runs them, one process per step:

    pandas: python -m recsys.cli validate|features --date D                       (RECSYS_COMPUTE=pandas)
    spark:  spark-submit --master local[N] --driver-memory M recsys/spark/job.py validate|features --date D

Each step records wall seconds, CPU seconds (user + sys of the process and its children, from ``wait4``),
the exit status and the peak resident memory, sampled every 0.2 s with psutil and split by role: for Spark
the driver JVM (in local mode it also hosts the executor threads: "driver+executor"), the Python driver
(the job's own process) and the Python workers (``pyspark.daemon`` and its forks); for pandas the one process.

``--standalone`` runs Spark on a standalone master and worker on loopback (scripts/spark.sh, started for the
run and stopped after it, ``--master`` ignored): the executors are then JVMs of their own, children of the
worker daemon, and are sampled as the roles "executor jvm" (the largest one: "executor jvm (largest)") and
"executor python workers"; their CPU seconds are not in the step's ``wait4`` figure (``executor_cpu_s`` is
their user + sys at the last sample). ``--executor-memory`` is each executor's heap (spark.executor.memory).
The results file records the commit and dirty flag of the checkout, the machine, the settings, and is
rewritten after every step. ``--repeats N`` runs each engine N times per size (pandas, spark, pandas, spark, ...:
a shared machine's speed drifts by tens of percent within minutes, and alternating spreads that over both) and
adds each engine's medians and the ratio of the median totals.

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

    def __init__(self, pid: int, interval: float = 0.2, executors: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.executors = pid, interval, executors
        self.peaks: dict[str, float] = {}
        self.executor_cpu: dict[int, float] = {}
        self._done = threading.Event()

    @staticmethod
    def executor_jvms() -> list[psutil.Process]:
        """The standalone executors' JVMs running now (any application's: run one benchmark at a time)."""
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if "java" in (proc.info.get("name") or "") and any("CoarseGrainedExecutorBackend" in c for c in cmd):
                found.append(proc)
        return found

    def sample_executors(self, sums: dict[str, float]) -> None:
        for jvm in self.executor_jvms():
            try:
                rss = jvm.memory_info().rss / 2**20
                times = jvm.cpu_times()
                workers = jvm.children(recursive=True)
            except psutil.Error:
                continue
            self.executor_cpu[jvm.pid] = times.user + times.system
            sums["executor jvm"] = sums.get("executor jvm", 0.0) + rss
            sums["executor jvm (largest)"] = max(sums.get("executor jvm (largest)", 0.0), rss)
            for worker in workers:
                try:
                    sums["executor python workers"] = (sums.get("executor python workers", 0.0)
                                                       + worker.memory_info().rss / 2**20)
                    self.executor_cpu[worker.pid] = sum(worker.cpu_times()[:2])
                except psutil.Error:
                    continue

    def role(self, proc: psutil.Process, top: int) -> str:
        try:
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.Error:
            return "other"
        if "java" in name:  # local mode: the executor threads are in the driver's JVM
            return "driver jvm" if self.executors else "jvm (driver+executor)"
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
            if self.executors:
                self.sample_executors(sums)
            sums["total"] = sum(v for k, v in sums.items() if k != "executor jvm (largest)")
            for role, value in sums.items():
                self.peaks[role] = max(self.peaks.get(role, 0.0), value)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def run_step(argv: list[str], env: dict[str, str], log: Path, executors: bool = False) -> dict[str, Any]:
    """Run one step; wall, CPU, peaks, status (``executors``: also the standalone executors' JVMs)."""
    load_before = [round(x, 2) for x in os.getloadavg()]  # a shared machine: what else was running
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = TreeSampler(proc.pid, executors=executors)
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
    if executors:
        result["executor_cpu_s"] = round(sum(sampler.executor_cpu.values()), 2)
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
    from recsys.config import Settings
    from recsys.spark.session import submit_conf

    submit = str(Path(sys.executable).with_name("spark-submit"))
    argv = [submit, "--master", args.master, "--driver-memory", args.driver_memory,
            "--conf", "spark.ui.enabled=false", "--conf", f"spark.sql.shuffle.partitions={args.shuffle_partitions}"]
    if args.executor_memory:
        argv += ["--executor-memory", args.executor_memory]
    if args.executor_memory_overhead:
        argv += ["--conf", f"spark.executor.memoryOverhead={args.executor_memory_overhead}"]
    # what the deployment's spark-submit is given: the step's driver JVM options, the class archive if any
    conf = submit_conf(step, Settings(spark_class_archive=args.class_archive))
    if args.driver_java_options is not None:
        conf["spark.driver.extraJavaOptions"] = args.driver_java_options
    for key, value in conf.items():
        if value:
            argv += ["--conf", f"{key}={value}"]
    return [*argv, str(ROOT / "recsys" / "spark" / "job.py"), step, "--date", DAY.isoformat()]


def start_standalone(work: Path) -> dict[str, Any]:
    """Start scripts/spark.sh's master and worker (state under ``work``); its ready file."""
    env = {"SPARK_STANDALONE_TIMEOUT": "600"} | os.environ | {"SPARK_STANDALONE_HOME": str(work / "spark-standalone")}
    subprocess.run([str(ROOT / "scripts" / "spark.sh"), "start"], env=env, check=True, cwd=ROOT)
    return json.loads((work / "spark-standalone" / "ready.json").read_text())


def stop_standalone(work: Path) -> None:
    env = os.environ | {"SPARK_STANDALONE_HOME": str(work / "spark-standalone")}
    subprocess.run([str(ROOT / "scripts" / "spark.sh"), "stop"], env=env, check=False, cwd=ROOT)


def main() -> None:
    from recsys.spark.session import submit_conf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--engines", default="pandas,spark")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--executor-memory", default=None, help="spark.executor.memory (standalone executors)")
    parser.add_argument("--executor-memory-overhead", default=None,
                        help="spark.executor.memoryOverhead: what an executor may use beyond its heap (on YARN and "
                             "Kubernetes its container is heap + overhead)")
    parser.add_argument("--validated", type=Path, default=None,
                        help="a store (a kept --work copy) whose day of one --sizes size passed validation: run the "
                             "features step only, on a hard-linked copy (no generate, no validate)")
    parser.add_argument("--standalone", action="store_true",
                        help="a standalone master + worker on loopback (scripts/spark.sh) instead of --master")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-java-options", default=None,
                        help="the driver JVM's options instead of recsys.spark.session.submit_conf()'s ('' for none)")
    parser.add_argument("--class-archive", default=None,
                        help="RECSYS_SPARK_CLASS_ARCHIVE: built first (python -m recsys.spark.archive) if missing")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each engine per size, alternating engines; with more than one, each engine's "
                             "runs are kept and their medians (and the ratio of the medians' totals) added")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-spark")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    results: dict[str, Any] = {
        "benchmark": "bench/scale/spark.py", "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": _harness.git_state(ROOT), "machine": {"cpu": _harness.cpu_name(), "cores": os.cpu_count(),
                                                      "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                                                      "python": platform.python_version()},
        "settings": {"master": args.master, "driver_memory": args.driver_memory,
                     "executor_memory": args.executor_memory,
                     "executor_memory_overhead": args.executor_memory_overhead,
                     "shuffle_partitions": args.shuffle_partitions,
                     "driver_java_options": (args.driver_java_options if args.driver_java_options is not None
                                             else {s: submit_conf(s)["spark.driver.extraJavaOptions"]
                                                   for s in STEPS}),
                     "class_archive": args.class_archive, "repeats": args.repeats,
                     "nice": os.nice(0)},
        "sizes": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.class_archive and not Path(args.class_archive).is_file():
        from recsys.spark.archive import build

        started = time.monotonic()
        build(Path(args.class_archive))
        results["settings"]["class_archive_built_s"] = round(time.monotonic() - started, 1)
    if args.standalone:
        args.work.mkdir(parents=True, exist_ok=True)
        ready = start_standalone(args.work)
        args.master = ready["master"]
        results["settings"].update(master=args.master, standalone={k: ready.get(k) for k in ("cores", "memory")})
    try:
        run_sizes(args, results, args.out)
    finally:
        if args.standalone:
            stop_standalone(args.work)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def run_sizes(args: argparse.Namespace, results: dict[str, Any], out: Path) -> None:
    """Generate each size's day once and run every engine's steps on it; ``results`` saved after each step."""

    def save() -> None:
        out.write_text(json.dumps(results, indent=2) + "\n")

    for size in [int(s) for s in args.sizes.split(",")]:
        work = args.work / str(size)
        shutil.rmtree(work, ignore_errors=True)
        source = work / "source"
        entry: dict[str, Any] = results["sizes"].setdefault(str(size), {})
        work.mkdir(parents=True)
        if args.validated:  # a kept store whose day passed validation: features only, on a hard-linked copy
            source = args.validated
            entry["validated_store"] = str(source)
        gen = [sys.executable, "-m", "recsys.cli", "generate-synthetic", "--from", DAY.isoformat(),
               "--events", str(size)]
        if not args.validated:
            entry["generate"] = run_step(gen, env_for("pandas", source, args), work / "generate.log")
            save()
            if entry["generate"]["exit"] != 0:
                continue
        engines = args.engines.split(",")
        for repeat in range(args.repeats):  # engines alternate, so a drift of the machine's speed hits both
            for engine in engines:
                run: dict[str, Any] = {}
                if args.repeats == 1:
                    entry[engine] = run
                else:
                    entry.setdefault(engine, {}).setdefault("runs", []).append(run)
                store = work / f"{engine}-{repeat}"
                shutil.copytree(source, store, copy_function=os.link)
                run_engine(engine, store, run, args, save)
                shutil.rmtree(store, ignore_errors=True)
        if args.repeats > 1:
            summarise_repeats(entry, engines)
            save()
        shutil.rmtree(work, ignore_errors=True)


def run_engine(engine: str, store: Path, run: dict[str, Any], args: argparse.Namespace, save: Any) -> None:
    """Both steps of ``engine`` on ``store`` into ``run`` (each step's figures, the examples, the totals); features
    only with ``--validated``."""
    steps = ("features",) if args.validated else STEPS
    for step in steps:
        run[step] = run_step(command(engine, step, args), env_for(engine, store, args),
                             store.parent / f"{store.name}-{step}.log", executors=engine == "spark" and args.standalone)
        save()
        if run[step]["exit"] != 0:
            return
    stats = json.loads((store / "features" / f"dt={DAY.isoformat()}" / "stats.json").read_text())
    run["examples"] = stats["examples"]
    run["totals"] = {k: round(sum(run[s][k] for s in steps), 2) for k in ("wall_s", "cpu_s")}
    save()


def summarise_repeats(entry: dict[str, Any], engines: list[str]) -> None:
    """Each engine's median wall and CPU seconds per step and in total over its repeats (all must have passed),
    and each engine's median total wall over the first engine's (``wall_ratio``)."""
    import statistics

    for engine in engines:
        runs = entry[engine]["runs"]
        if not all("totals" in run for run in runs):
            entry[engine]["median"] = None
            continue
        entry[engine]["median"] = {
            part: {k: round(statistics.median(run[part][k] for run in runs), 2) for k in ("wall_s", "cpu_s")}
            for part in (*STEPS, "totals")}
    base = entry[engines[0]].get("median")
    for engine in engines[1:]:
        median = entry[engine].get("median")
        if base and median:
            entry[engine]["wall_ratio"] = round(median["totals"]["wall_s"] / base["totals"]["wall_s"], 2)


if __name__ == "__main__":
    main()
