"""One synthetic partition of 0.1M, 1M and 10M events through generate, validate, features and fine-tune.

Each step of each size runs in its own child process (``python run.py --step STEP ...``), so the
peak resident memory of a step is that process's own ``ru_maxrss`` (imports included), and a thread
samples the RSS every 0.1 s for a timeline of where in the step the memory goes. The steps call the
product's public functions with default settings, on a local store under ``--work``:

* generate: ``recsys.datasets.synthetic.publish_day`` (part files of 1M events of whole sessions)
* validate: ``recsys.validation.validate_partition`` (Great Expectations, report, Data Docs)
* features: ``recsys.features.build_features``
* train: ``recsys.training.fine_tune`` (cold start: the first partition of the store)

    nice -n 10 .venv/bin/python bench/scale/run.py --sizes 100000,1000000,10000000 \\
        --out bench/scale/results.json

A step that fails (for example killed by ``--limit-gb``) is recorded with its error and the
following steps of that size are skipped.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("generate", "validate", "features", "train")
# a step whose RSS passes this is stopped and reported (the machine is shared; the target is 4 GB)
RSS_CAP_GB = float(os.environ.get("BENCH_RSS_CAP_GB", "8"))
# a step still running after this many seconds is stopped and reports its memory so far (0: no limit);
# for a 10M fine-tune on a busy machine, whose memory is flat once model.fit runs
TIME_CAP_S = float(os.environ.get("BENCH_TIME_CAP_S", "0"))
CAPPED_FILE: Path | None = None  # where a stopped step writes its report (set in child mode)
DAY = date(2026, 1, 5)


def machine() -> dict:
    import numpy as np

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": "none",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# --- the child: one step ----------------------------------------------------------------------------
class Sampler(threading.Thread):
    """RSS of this process every ``interval`` seconds, and where the main thread was at that moment.

    ``samples``: (seconds since start, MB). ``places``: for each code location (the innermost frame of the
    main thread in ``recsys/``, or the library call below it: ``recsys/training.py:_train_version:147 >
    tf_keras...fit``), the seconds spent there and the largest RSS seen there. That attributes memory to
    the product's code without instrumenting it.
    """

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.places: dict[str, dict[str, float]] = {}
        self.started = time.perf_counter()
        self._main = threading.main_thread().ident
        self._halt = threading.Event()

    def _where(self) -> str:
        frame = sys._current_frames().get(self._main or 0)
        ours, below = None, None
        while frame is not None:
            name = frame.f_code.co_filename
            if "/recsys/" in name and "/bench/" not in name:
                ours = f"{name.split('/recsys/', 1)[1]}:{frame.f_code.co_name}:{frame.f_lineno}"
                break
            below = f"{Path(name).parent.name}/{Path(name).name}:{frame.f_code.co_name}"
            frame = frame.f_back
        if ours is None:
            return "outside recsys"
        return f"recsys/{ours}" + (f" > {below}" if below else "")

    def run(self) -> None:
        last = time.perf_counter()
        while not self._halt.is_set():
            now = time.perf_counter()
            rss = self.process.memory_info().rss / 2**20
            self.samples.append((now - self.started, rss))
            place = self.places.setdefault(self._where(), {"seconds": 0.0, "max_rss_mb": 0.0})
            place["seconds"] += now - last
            place["max_rss_mb"] = max(place["max_rss_mb"], rss)
            last = now
            if rss > RSS_CAP_GB * 1024:
                self._give_up(rss)
            if TIME_CAP_S and now - self.started > TIME_CAP_S:
                self._give_up(rss, timed_out=True)
            self._halt.wait(self.interval)

    def _give_up(self, rss: float, timed_out: bool = False) -> None:
        """Over the cap: report where the memory went (last line of stderr, and a file), exit 3 at once
        (4 when stopped by ``BENCH_TIME_CAP_S``).

        The machine is shared: a step that would take 25 GB must not push other people's work into swap
        or the OOM killer. The report says where it was when it crossed the cap.
        """
        partial = {
            "capped_at_mb": round(rss, 1),
            "peak_rss_mb": round(max(m for _, m in self.samples), 1),
            "rss_cap_gb": RSS_CAP_GB,
            "time_cap_s": TIME_CAP_S if timed_out else None,
            "seconds": round(time.perf_counter() - self.started, 1),
            "where": self.top_places(15),
        }
        if CAPPED_FILE is not None:
            CAPPED_FILE.write_text(
                json.dumps({**partial, "rss_timeline": _downsample(self.samples, 200)}, indent=1) + "\n"
            )
        print(json.dumps(partial), file=sys.stderr, flush=True)
        os._exit(4 if timed_out else 3)

    def stop(self) -> list[tuple[float, float]]:
        self._halt.set()
        self.join()
        return self.samples

    def top_places(self, n: int = 25) -> list[dict[str, Any]]:
        """The ``n`` places with the most time, largest RSS first."""
        top = sorted(self.places.items(), key=lambda kv: kv[1]["seconds"], reverse=True)[:n]
        rows = [
            {"where": k, "seconds": round(v["seconds"], 1), "max_rss_mb": round(v["max_rss_mb"], 1)} for k, v in top
        ]
        return sorted(rows, key=lambda r: r["max_rss_mb"], reverse=True)


def build_features(store: Any, day: date, settings: Any) -> Any:
    """``recsys.features.build_features`` across its signature changes (holdout fraction; settings; step order)."""
    from recsys.features import build_features as build

    parameters = list(inspect.signature(build).parameters)
    if "holdout_fraction" in parameters:
        return build(store, day, settings.holdout_fraction)
    if parameters[1] == "day":  # before the common step signature (store, settings, day)
        return build(store, day, settings)
    return build(store, settings, day)


def run_step(step: str, events: int, store_root: Path) -> dict:
    sampler = Sampler()
    sampler.start()
    marks: list[tuple[str, float, float]] = []  # (phase, seconds, rss MB) at the phase's start
    cpu: dict[str, float] = {}  # CPU seconds of the process (all threads) at each mark

    def mark(phase: str) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu[phase] = usage.ru_utime + usage.ru_stime
        marks.append(
            (
                phase,
                round(time.perf_counter() - sampler.started, 2),
                round(sampler.process.memory_info().rss / 2**20, 1),
            )
        )

    mark("imports")
    from recsys.config import Settings
    from recsys.storage.local import LocalStore

    settings = Settings.from_env({"RECSYS_STORAGE_ROOT": str(store_root)})
    store = LocalStore(store_root)
    out: dict = {}
    if step == "generate":
        from recsys.datasets import synthetic

        config = synthetic.SyntheticConfig(events=events)
        mark("generate")
        out = synthetic.publish_day(store, config, DAY, overwrite=True).as_dict()
        files = [store_root / p for p in store.data_files(f"raw/events/dt={DAY.isoformat()}")]
        out["parquet_mb"] = round(sum(f.stat().st_size for f in files) / 2**20, 1)
    elif step == "validate":
        from recsys.validation import validate_partition

        mark("validate")
        report = validate_partition(store, settings, DAY)
        out = {
            "success": report.success,
            "rows": report.rows,
            "checks": len(report.checks),
            "failed": [c["check"] for c in report.failed],
        }
    elif step == "features":
        mark("features")
        out = build_features(store, DAY, settings).as_dict()
    elif step == "train":
        import recsys.training  # noqa: F401  (TensorFlow and the model code load here, not in the step time)
        from recsys.training import fine_tune

        mark("fine_tune")
        meta = fine_tune(store, settings, DAY, run_id="bench-scale")
        out = {
            k: meta.get(k)
            for k in (
                "version",
                "train_examples",
                "replay_examples",
                "epochs",
                "batch_size",
                "final_loss",
                "train_seconds",
                "user_rows",
                "item_rows",
            )
        }
    else:
        raise SystemExit(f"unknown step {step!r}; expected one of {STEPS}")
    mark("done")
    samples = sampler.stop()
    step_start = next(s for name, s, _ in marks if name not in ("imports",))
    step_end = marks[-1][1]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "result": out,
        "seconds": round(step_end - step_start, 2),  # the product call itself, without imports
        # CPU seconds of that call (all threads): what other jobs on a shared machine do not stretch
        "cpu_seconds": round(cpu["done"] - next(c for name, c in cpu.items() if name != "imports"), 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),  # whole process, imports included
        "rss_before_step_mb": next(r for name, _, r in marks if name not in ("imports",)),
        "marks": marks,
        "rss_timeline": _downsample(samples, 200),
        "where": sampler.top_places(),
    }


def _downsample(samples: list[tuple[float, float]], n: int) -> list[list[float]]:
    """At most ``n`` points, keeping the maximum of each bucket (so the peak survives)."""
    if len(samples) <= n:
        return [[round(t, 2), round(m, 1)] for t, m in samples]
    size = len(samples) / n
    out = []
    for i in range(n):
        bucket = samples[int(i * size) : int((i + 1) * size)] or samples[-1:]
        t, m = max(bucket, key=lambda s: s[1])
        out.append([round(t, 2), round(m, 1)])
    return out


# --- the parent: every size, every step, one child each ------------------------------------------------
def child(step: str, events: int, store_root: Path, limit_gb: float | None) -> dict:
    command = [sys.executable, __file__, "--step", step, "--events", str(events), "--store", str(store_root)]
    if limit_gb:
        command += ["--limit-gb", str(limit_gb)]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        failed = {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
        failed["wall_seconds"] = round(wall, 1)
        capped = store_root.parent / f"{step}-capped.json"
        if proc.returncode in (3, 4) and capped.exists():
            failed["error"] = (
                f"stopped: RSS passed the cap of {RSS_CAP_GB:g} GB"
                if proc.returncode == 3
                else f"stopped after the time cap of {TIME_CAP_S:g} s (BENCH_TIME_CAP_S)"
            )
            failed["capped"] = json.loads(capped.read_text())
        return failed
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(wall, 1)  # child process start to end, imports included
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000,10000000", help="events per partition, comma-separated")
    p.add_argument("--steps", default=",".join(STEPS))
    p.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "scale")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "scale" / "results.json")
    p.add_argument(
        "--limit-gb",
        type=float,
        default=None,
        help="address-space limit of each child (RLIMIT_AS); off by default (TensorFlow maps "
        "much more virtual memory than it uses)",
    )
    p.add_argument("--keep", action="store_true", help="keep each size's store under --work")
    # child mode
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    p.add_argument("--events", type=int, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.step:
        global CAPPED_FILE
        CAPPED_FILE = args.store.parent / f"{args.step}-capped.json"
        if args.limit_gb:
            limit = int(args.limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_step(args.step, args.events, args.store)))
        return

    from recsys.progress import bar, note

    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s for s in args.steps.split(",") if s]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("runs", {})
    results["machine"] = machine()
    results["command"] = " ".join(["nice -n 10 .venv/bin/python bench/scale/run.py", *sys.argv[1:]])
    # a bar of the steps on a terminal (time left); each step's line is printed above it, and alone in a log
    with bar(len(sizes) * len(steps), "scale", "step") as shown:
        for events in sizes:
            store_root = args.work / f"{events}" / "store"
            if "generate" in steps and store_root.exists():
                shutil.rmtree(store_root)
            run = {
                "events": events,
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "uptime_before": uptime(),
                "steps": {},
            }
            if "generate" not in steps:  # later steps on a kept store (--keep): add to that size's earlier run
                run = results["runs"].get(str(events), run)
                run.setdefault("resumed", []).append(
                    {"steps": steps, "started": datetime.now(UTC).isoformat(timespec="seconds"), "uptime": uptime()}
                )
            for step in steps:
                shown.set_description(f"{events:,} {step}")
                res = child(step, events, store_root, args.limit_gb)
                res["uptime_after"] = uptime()
                run["steps"][step] = res
                shown.update(1)
                if "error" in res:
                    note(f"{events:>10,} {step:<9} FAILED {res['error']}\n{res['stderr_tail'][-1500:]}")
                    break
                note(f"{events:>10,} {step:<9} {res['seconds']:8.1f} s  peak RSS {res['peak_rss_mb']:8.1f} MB  | "
                     f"{res['uptime_after']}")
            run["uptime_after"] = uptime()
            results["runs"][str(events)] = run
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            if not args.keep:
                shutil.rmtree(args.work / f"{events}", ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
