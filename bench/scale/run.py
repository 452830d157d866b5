"""Synthetic days of 1M, 10M and 30M events through every step of the pipeline, one ``recsys`` process each.

For each size, a fresh local store gets two days (the second day's candidate is evaluated against the
first day's champion), each through the real command line, one process per step:

    generate-synthetic, validate, features, train, evaluate, deploy      (day 1, then day 2)
    refresh-index                                                         (the champion, after day 2)
    serve                       (start, wait for /readyz, a burst of requests, SIGTERM)

Each step records its peak resident memory (``ru_maxrss`` of the process from ``wait4``, and the peak
sum over its process tree sampled every 0.2 s with psutil), its CPU seconds (user + sys, from
``wait4``: the process and the children it waited for), its wall seconds, the load average before and
after, its command line and its exit status. The results file records the git commit and dirty flag of
the code that ran (with the product's uncommitted paths when dirty: the checkout is shared), or, with
``--commit REV``, runs a ``git archive`` of ``recsys/`` and ``expectations/`` at REV (first on the steps'
PYTHONPATH), so what ran is exactly a commit whatever the checkout holds.

    nice -n 15 .venv/bin/python bench/scale/run.py --commit HEAD --sizes 1000000,10000000 \\
        --out bench/scale/results/NAME.json
    .venv/bin/python bench/scale/report.py bench/scale/results/NAME.json      # the tables and the targets

Settings: the product's defaults, except what ``--epochs`` (default 1: fine-tune time is linear in
epochs), ``--max-eval-users`` and the open gate (``RECSYS_MIN_RECALL=0``, ``RECSYS_MAX_REGRESSION=1``,
so both days deploy whatever the synthetic recall) set; they are recorded in the results (``env``).
The machine is shared: a step whose process tree passes ``--rss-cap-gb`` (default 8, twice the 10M
target) or runs longer than ``--time-cap`` seconds is killed with its children and marked ``capped``;
the size stops there. The results file is rewritten after every step, so a run stopped early keeps
what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: _harness

import _harness  # noqa: E402

ROOT = HERE.parents[1]
DAY1 = date(2026, 1, 5)
DAY_STEPS = ("generate", "validate", "features", "train", "evaluate", "deploy")
TAIL = 4000  # characters of a failed step's stderr kept in the results
ARCHIVED = ("recsys", "expectations")  # what --commit takes from git: the package and the suites it reads
CAPS = {"rss_mb": 0.0, "seconds": 0.0}  # set from --rss-cap-gb / --time-cap (0: none)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def recsys_source(env: dict[str, str] | None = None) -> Path:
    """The directory of the ``recsys`` package a child process imports (with ``env``'s PYTHONPATH)."""
    out = subprocess.run([sys.executable, "-c", "import recsys; print(recsys.__file__)"],
                         capture_output=True, text=True, check=True, cwd="/", env=env)
    return Path(out.stdout.strip()).resolve().parents[1]


def code_state(source: Path) -> dict[str, Any]:
    """The commit and dirty flag of the code at ``source``, with the changed paths of the product if dirty
    (the checkout is shared: other people's uncommitted edits of ``recsys/`` are what ran)."""
    state = _harness.git_state(source)
    if state.get("dirty"):
        out = subprocess.run(["git", "status", "--porcelain", "--", "recsys"], cwd=source, capture_output=True,
                             text=True)
        state["dirty_recsys"] = out.stdout.split("\n")[:-1] if out.returncode == 0 else None
    return state


def archive(rev: str, work: Path) -> tuple[Path, dict[str, Any]]:
    """``git archive`` of ``rev`` under ``work`` (the product exactly as committed, whatever the shared
    checkout holds uncommitted); its directory and its git state."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    dest = work.resolve() / f"src-{sha[:12]}"
    if not (dest / "recsys").is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        tar = subprocess.run(["git", "archive", sha, *ARCHIVED], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest, {"commit": sha, "dirty": False, "source": f"git archive {sha} {' '.join(ARCHIVED)}"}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu": _harness.cpu_name(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


class TreeSampler(threading.Thread):
    """Peak RSS of a process and of its whole tree (the process plus its descendants), every ``interval`` s.

    The machine is shared: a tree whose RSS passes ``cap_mb``, or still running after ``cap_seconds``
    (0: no limit), is killed (its process group: the step was started in a session of its own) and
    ``capped`` says why; what was measured until then is kept.
    """

    def __init__(self, pid: int, interval: float = 0.2, cap_mb: float = 0.0, cap_seconds: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.cap_mb, self.cap_seconds = cap_mb, cap_seconds
        self.capped: str | None = None
        self.peak_tree_mb = 0.0
        self.peak_children = 0
        self.timeline: list[tuple[float, float]] = []
        self.started = time.perf_counter()
        self._halt = threading.Event()

    def rss_mb(self) -> float:
        total = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        self.peak_children = max(self.peak_children, len(procs) - 1)
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.rss_mb()
            self.peak_tree_mb = max(self.peak_tree_mb, rss)
            elapsed = time.perf_counter() - self.started
            self.timeline.append((elapsed, rss))
            if self.capped is None:
                if self.cap_mb and rss > self.cap_mb:
                    self.kill(f"stopped: RSS {rss:.0f} MB passed the cap of {self.cap_mb:.0f} MB")
                elif self.cap_seconds and elapsed > self.cap_seconds:
                    self.kill(f"stopped: still running after the time cap of {self.cap_seconds:.0f} s")
            self._halt.wait(self.interval)

    def kill(self, why: str) -> None:
        self.capped = why
        try:
            os.killpg(self.root.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self._halt.set()
        self.join()


def downsample(samples: list[tuple[float, float]], n: int = 60) -> list[list[float]]:
    """At most ``n`` points, keeping each bucket's maximum (so the peak survives)."""
    if len(samples) > n:
        size = len(samples) / n
        samples = [max(samples[int(i * size): int((i + 1) * size)] or samples[-1:], key=lambda s: s[1])
                   for i in range(n)]
    return [[round(t, 1), round(m, 1)] for t, m in samples]


class Step:
    """One ``recsys`` process: started, sampled, reaped with ``wait4`` (its own CPU time and ``ru_maxrss``)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.argv = name, argv
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / f"{name}.out", logs / f"{name}.err"
        self.load_before = loadavg()
        self.started = time.perf_counter()
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            # a session of its own: a capped step is killed with its children, and nothing else
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd="/", start_new_session=True)
        self.sampler = TreeSampler(self.proc.pid, cap_mb=CAPS["rss_mb"], cap_seconds=CAPS["seconds"])
        self.sampler.start()

    def alive(self) -> None:
        """:class:`RuntimeError` once the process has exited, without reaping it (``wait4`` does that,
        for its resource usage; ``Popen.poll`` would reap it first)."""
        if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            raise RuntimeError(f"{self.name} exited ({self.sampler.capped or 'see its stderr'})")

    def stop(self, grace: float = 60) -> None:
        """SIGTERM, then SIGKILL of its process group if it has not exited after ``grace`` seconds."""
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
            time.sleep(0.1)
        self.sampler.kill(f"stopped: no exit {grace:.0f} s after SIGTERM")

    def wait(self) -> dict[str, Any]:
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.sampler.stop()
        result: dict[str, Any] = {
            "command": " ".join(self.argv[self.argv.index("recsys.cli") + 1:]),
            "exit": self.proc.returncode,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "user_seconds": round(usage.ru_utime, 1),
            "sys_seconds": round(usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # the process (ru_maxrss, KiB)
            "peak_tree_rss_mb": round(self.sampler.peak_tree_mb, 1),  # sampled sum over its process tree
            "child_processes": self.sampler.peak_children,
            "loadavg_before": self.load_before,
            "loadavg_after": loadavg(),
            "rss_timeline": downsample(self.sampler.timeline),
        }
        if self.sampler.capped:
            result["capped"] = self.sampler.capped
        if self.proc.returncode != 0:
            result["stderr_tail"] = self.stderr_path.read_text(errors="replace")[-TAIL:]
        else:
            result["output"] = summarize(self.name, self.stdout_path.read_text(errors="replace"))
        return result


def summarize(name: str, stdout: str) -> Any:
    """The step's JSON answer, without the bulky parts (per-check lists, long metadata)."""
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError:
        return stdout[-2000:]
    if isinstance(doc, dict):
        keep = {"validate": ("success", "rows", "failed"),
                "train": ("version", "train_examples", "replay_examples", "epochs", "train_seconds", "user_rows",
                          "item_rows"),
                "evaluate": ("candidate_version", "champion_version", "candidate_metrics", "champion_metrics",
                             "eval_users", "eval_sample", "blessed"),
                "deploy": ("version", "champion", "items", "deployed")}
        fields = keep.get(name.split("@")[0])
        if fields:
            return {k: doc[k] for k in fields if k in doc} or {k: v for k, v in list(doc.items())[:12]}
    text = json.dumps(doc)
    return doc if len(text) < 3000 else text[:3000]


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    """This environment without any ``RECSYS_*`` setting of the caller's, plus ``overrides``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | overrides


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsys.cli", *args]


def day_commands(step: str, day: date, events: int) -> list[str]:
    if step == "generate":
        return cli("generate-synthetic", "--from", day.isoformat(), "--days", "1", "--events", str(events))
    return cli(step, "--date", day.isoformat())


def burst(base: str, users: list[str], items: list[str], concurrency: int = 4) -> dict[str, Any]:
    """Recommendations for ``users`` and similar items for ``items``, ``concurrency`` at a time."""
    import httpx

    paths = [f"/recommendations/{u}?k=10" for u in users] + [f"/items/{i}/similar?k=10" for i in items]
    statuses: dict[str, int] = {}
    seconds: list[float] = []

    with httpx.Client(base_url=base, timeout=60) as client:
        def get(path: str) -> tuple[int | str, float]:
            started = time.perf_counter()
            try:
                code: int | str = client.get(path).status_code
            except httpx.HTTPError as err:  # counted (a reset connection: the service failed), not raised
                code = type(err).__name__
            return code, time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for code, took in pool.map(get, paths):
                statuses[str(code)] = statuses.get(str(code), 0) + 1
                seconds.append(took)
        total = time.perf_counter() - started
    seconds.sort()

    def at(q: float) -> float:
        return round(1000 * seconds[min(len(seconds) - 1, int(q * len(seconds)))], 1)

    return {"requests": len(paths), "concurrency": concurrency, "statuses": statuses,
            "seconds": round(total, 2), "p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0)}


def sample_ids(store_root: Path, day: date, n: int) -> tuple[list[str], list[str]]:
    """``n`` distinct users and ``n // 4`` items of the day's first part file (plus 5 unknown users)."""
    import pyarrow.parquet as pq

    first = sorted((store_root / "raw" / "events" / f"dt={day.isoformat()}").glob("*.parquet"))[0]
    table = pq.ParquetFile(first).read_row_group(0, columns=["user_id", "item_id"])
    users = list(dict.fromkeys(table.column("user_id").to_pylist()))[:n]
    items = list(dict.fromkeys(table.column("item_id").to_pylist()))[: n // 4]
    return users + [f"nobody-{i}" for i in range(5)], items


def wait_ready(step: Step, base: str, timeout: float) -> float:
    """Seconds from the process start until ``/readyz`` answers 200 (one client, polled every 0.1 s:
    ``httpx.get`` builds a TLS context per call, 0.3 CPU seconds each on this machine, which slowed
    the very start it measured)."""
    import httpx

    with httpx.Client(base_url=base, timeout=5) as client:
        _harness.wait_until("recsys serve", lambda: client.get(_harness.READY_PATH).status_code == 200, timeout,
                            every=0.1, alive=step.alive)
    return round(time.perf_counter() - step.started, 2)


def load_seconds(stderr: Path) -> float | None:
    """The model holder's own load time (its "serving version N (...) after X s" log line)."""
    found = re.findall(r"serving version \d+ .*? after ([0-9.]+) s", stderr.read_text(errors="replace"))
    return float(found[0]) if found else None


def start_serve(env: dict[str, str], logs: Path) -> tuple[Step, str]:
    port = _harness.free_port()
    step = Step("serve", cli("serve", "--port", str(port), "--log-level", "info"), env, logs)
    return step, f"http://127.0.0.1:{port}"


def serve(env: dict[str, str], logs: Path, store_root: Path, day: date, requests: int) -> dict[str, Any]:
    """``recsys serve``: seconds to ready, RSS once ready, a request burst, RSS after, then SIGTERM."""
    import httpx

    step, base = start_serve(env, logs)
    extra: dict[str, Any] = {}
    try:
        extra["ready_seconds"] = wait_ready(step, base, 1800)
        extra["rss_ready_mb"] = round(step.sampler.rss_mb(), 1)
        users, items = sample_ids(store_root, day, requests)
        extra["burst"] = burst(base, users, items)
        extra["rss_after_burst_mb"] = round(step.sampler.rss_mb(), 1)
        failed = {code: n for code, n in extra["burst"]["statuses"].items() if not code.isdigit() or code >= "500"}
        if failed:
            extra["error"] = f"requests failed: {failed}"
    except (RuntimeError, httpx.HTTPError, OSError) as err:
        extra["error"] = f"{type(err).__name__}: {err}"
    finally:
        step.stop()
    result = step.wait()
    result["command"] += " (ready, burst, SIGTERM)"
    extra["load_seconds"] = load_seconds(step.stderr_path)
    if result["exit"] in (-signal.SIGTERM, 0) and "error" not in extra:
        result["exit"] = 0
        result.pop("stderr_tail", None)
    elif result["exit"] == 0:
        result["exit"] = 1  # it exited cleanly, but not ready or the burst failed
    return {**result, **extra}


class Run:
    """One size: a fresh store, two days through the pipeline, refresh-index, serve."""

    def __init__(self, events: int, work: Path, env: dict[str, str], save: Any, requests: int) -> None:
        self.events = events
        self.store_root = work / str(events) / "store"
        self.logs = work / str(events) / "logs"
        shutil.rmtree(work / str(events), ignore_errors=True)
        self.store_root.mkdir(parents=True)
        self.env = {**env, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(self.store_root)}
        self.save = save
        self.requests = requests
        self.record: dict[str, Any] = {"events": events, "started": now(), "loadavg_before": loadavg(), "steps": {}}

    def step(self, key: str, argv: list[str] | None = None, day: date | None = None) -> bool:
        print(f"{now()} {self.events:>11,} {key} ...", flush=True)
        if argv is None:
            result = serve(self.env, self.logs, self.store_root, day or DAY1, self.requests)
        else:
            result = Step(key, argv, self.env, self.logs).wait()
        self.record["steps"][key] = result
        self.save()
        print(f"{now()} {self.events:>11,} {key:<18} exit {result['exit']:>3}  {result['wall_seconds']:8.1f} s wall "
              f"{result['cpu_seconds']:8.1f} s CPU  peak {result['peak_rss_mb']:8.1f} MB "
              f"(tree {result['peak_tree_rss_mb']:8.1f})  load {result['loadavg_after']}", flush=True)
        return bool(result["exit"] == 0)

    def go(self, until: str | None = None) -> dict[str, Any]:
        """Every step in order; a failed step ends the size, and so does the step named ``until``."""
        planned: list[tuple[str, list[str] | None]] = [
            (f"{name}@day{offset + 1}", day_commands(name, DAY1 + timedelta(days=offset), self.events))
            for offset in (0, 1) for name in DAY_STEPS
        ]
        planned += [("refresh-index", cli("refresh-index")), ("serve", None)]
        for key, argv in planned:
            if not self.step(key, argv, DAY1 + timedelta(days=1)) or key == until:
                break
        self.record["finished"] = now()
        self.record["loadavg_after"] = loadavg()
        return self.record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000,30000000", help="events per day, comma-separated")
    p.add_argument("--out", type=Path, required=True, help="results JSON (rewritten after every step)")
    p.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "scale-cli")
    p.add_argument("--epochs", type=int, default=1, help="RECSYS_EPOCHS of the fine-tunes")
    p.add_argument("--max-eval-users", type=int, default=None, help="RECSYS_MAX_EVAL_USERS (default: the product's)")
    p.add_argument("--requests", type=int, default=200, help="recommendation requests of the serve burst")
    p.add_argument("--until", help="stop each size after this step (e.g. features@day1: the chunked steps alone)")
    p.add_argument("--keep", action="store_true", help="keep each size's store and logs under --work")
    p.add_argument("--commit", help="run the product as committed at this revision (a git archive of recsys/ "
                   "under --work, first on PYTHONPATH) instead of the checkout with its uncommitted edits")
    p.add_argument("--rss-cap-gb", type=float, default=8.0, help="kill a step whose process tree passes this "
                   "(the machine is shared; 0: no cap)")
    p.add_argument("--time-cap", type=float, default=0.0, help="kill a step still running after this many "
                   "seconds (0: no cap)")
    args = p.parse_args()
    CAPS.update(rss_mb=args.rss_cap_gb * 1024, seconds=args.time_cap)

    overrides = {"RECSYS_EPOCHS": str(args.epochs), "RECSYS_MIN_RECALL": "0", "RECSYS_MAX_REGRESSION": "1"}
    if args.max_eval_users:
        overrides["RECSYS_MAX_EVAL_USERS"] = str(args.max_eval_users)
    env = child_env(overrides)
    if args.commit:
        code, git = archive(args.commit, args.work)
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
        source = recsys_source(env)
        if source != code.resolve():
            raise SystemExit(f"the archive at {code} is not what the steps import ({source})")
    else:
        source = recsys_source(env)
        git = code_state(source)
    results: dict[str, Any] = {
        "benchmark": "bench/scale/run.py",
        "command": " ".join([".venv/bin/python", "bench/scale/run.py", *sys.argv[1:]]),
        "git": git,
        "bench_git": _harness.git_state(HERE),
        "caps": {"rss_gb": args.rss_cap_gb, "seconds": args.time_cap},
        "until": args.until,
        "recsys_source": str(source),
        "nice": os.nice(0),
        "machine": machine(),
        "env": overrides,
        "started": now(),
        "loadavg_before": loadavg(),
        "runs": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    for events in (int(s) for s in args.sizes.split(",")):
        run = Run(events, args.work, env, save, args.requests)
        results["runs"][str(events)] = run.record
        run.go(args.until)
        if not args.keep:
            shutil.rmtree(args.work / str(events), ignore_errors=True)
    results["finished"] = now()
    results["loadavg_after"] = loadavg()
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
