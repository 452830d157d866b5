"""Freshness: from a day's partition landing to the service answering with the model trained on it.

Everything runs as `airflow standalone` runs it, not `airflow dags test`: the api-server (the tasks'
Execution API and the REST API), the scheduler with its LocalExecutor, the DAG processor and the
triggerer, on SQLite, each a process of its own, plus `recsys serve`. Per run of this script:

1. seed (cached in ``<workdir>/seed`` until the recsys sources or RECSYS_* settings change): land
   ``--seed-days`` days of Online Retail from ``--seed-from`` and process them with ``recsys run`` (no
   Airflow), so there is a champion to serve;
2. a fresh AIRFLOW_HOME and a copy of the seed store under ``<workdir>/runs/<label>``; ``airflow db migrate``;
3. start api-server, scheduler, dag-processor, triggerer and ``recsys serve`` (all in new process groups);
   wait until the service answers and the DAG is parsed;
4. unpause the incremental DAG and trigger its run for ``--date`` through the REST API (as the daily
   schedule would have created it at midnight; ``[scheduler] use_job_schedule`` is off so that the
   scheduler does not also create today's run, which would take the DAG's only active-run slot);
   ``deploy_mode=force`` with a reason unless ``--gate``, so that the day's candidate is deployed whatever
   the evaluation says and "the new champion" is well defined;
5. wait until the sensor has looked ``--land-after-looks`` times (default 1) and found nothing (it is now
   waiting in reschedule mode), then land the day with ``recsys land --date``; **t0 is the mtime of the
   events ``_SUCCESS`` marker**;
6. poll ``GET /version`` (every 0.1 s) and the registry until the service answers with the new champion,
   then wait for the run to finish; break the time down per task and per scheduling gap from the metadata
   DB (task instances: scheduled / queued / start / end; the sensor's reschedules) and the task logs (when
   each task's process had parsed the DAG file, entered and left the task's own code).

Landing right after a negative look is the sensor's worst case: the next look is one full poke interval
later. Every process started here is stopped at the end, also on failure.

``--mode event`` measures the event-driven path instead (``RECSYS_DAYS_CLOSED_TOPIC``): a Kafka broker
(``RECSYS_KAFKA_BOOTSTRAP``, else ``scripts/kafka.sh start`` with its state under the run directory, stopped
at the end), the Kafka connection made by ``scripts/airflow-init.sh``, the DAG unpaused with no run; once the
watcher's consumer has joined its group, the day is landed and closed the way the sink closes it:
``_sink.json`` and ``_SUCCESS`` (t0, its mtime), then the sink's own announcement (``Sink._announce``: key
the date, value the ``_sink.json``). The scheduler creates the run from the watcher's asset event. Such a
run has no conf, so the evaluation's gate decides: pass ``--set RECSYS_MIN_RECALL=0 --set
RECSYS_MAX_REGRESSION=1`` (Airflow components only; the seed is unchanged) so the candidate is deployed.

    . scripts/env.sh
    python bench/freshness/run.py --label baseline --set RECSYS_SENSOR_POKE_SECONDS=60
    python bench/freshness/run.py --label event --mode event --set RECSYS_MIN_RECALL=0 --set RECSYS_MAX_REGRESSION=1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import _harness  # noqa: E402

DAG_ID = "recsys_incremental_update"
TASK_ORDER = [
    "wait_for_partition",
    "rebuild_catalog",  # event-driven runs only (check_earlier_days runs beside wait_for_partition)
    "validate",
    "build_features",
    "fine_tune",
    "evaluate",
    "deploy_if_blessed",
    "deploy",
    "refresh_serving_index",
    "announce_later_days",  # event-driven runs only
]
TARGET_S = 120.0
EVENT_TARGET_S = 30.0  # issue 17: day closed by the sink -> new champion served, event-driven, quiet machine
CLOSED_GROUP = "recsys-airflow-days-closed"  # the consumer group scripts/airflow-init.sh configures


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def ts(value: str | None) -> float | None:
    """Epoch seconds of an ISO timestamp from the REST API (None stays None)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds") if epoch else None


class Processes:
    """Started processes, each in a process group of its own; ``stop`` ends every group it started."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
        out.close()
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: see {self.logs / (name + '.log')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():  # the group: LocalExecutor workers and task processes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def group_cpu_s(pgids: set[int]) -> float:
    """CPU seconds (user + system, with reaped children: task processes) of every process in these groups."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # pgrp; then utime, stime, cutime, cstime
            total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def run_cli(command: list[str], env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with log.open("ab") as out:
        subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, cwd=ROOT)
    return round(time.monotonic() - started, 2)


def wait_for(what: str, check: Any, timeout: float, procs: Processes, every: float = 0.5) -> float:
    """Seconds until ``check()`` is true (a refused connection or a locked database is "not yet")."""
    seconds = _harness.wait_until(
        what, check, timeout, every=every, alive=procs.check, ignore=(httpx.TransportError, sqlite3.OperationalError)
    )
    return round(seconds, 2)


def code_key(start: str, days: int, env: dict[str, str]) -> str:
    """What the seed store depends on: the recsys sources, the seed days and the RECSYS_* settings.

    A seed trained by other code (say, another embedding size) cannot be fine-tuned by this code.
    """
    digest = hashlib.sha256(f"{start} {days}".encode())
    for path in sorted((ROOT / "recsys").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    for name in sorted(k for k in env if k.startswith("RECSYS_") and k != "RECSYS_STORAGE_ROOT"):
        digest.update(f"{name}={env[name]}".encode())
    return digest.hexdigest()[:16]


def seed(workdir: Path, start: str, days: int, env: dict[str, str]) -> dict[str, Any]:
    """A store with ``days`` processed days: the champion the service starts with. Cached in ``<workdir>/seed``
    and rebuilt when :func:`code_key` changes."""
    store = workdir / "seed" / "store"
    done = workdir / "seed" / "seed.json"
    key = code_key(start, days, env)
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    shutil.rmtree(workdir / "seed", ignore_errors=True)
    store.mkdir(parents=True)
    senv = {**env, "RECSYS_STORAGE_ROOT": str(store)}
    log = workdir / "seed" / "seed.log"
    landed = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "land", "--from", start, "--days", str(days)],
        env=senv,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    dates = [x["date"] for x in json.loads(landed)]
    seconds = {d: run_cli([sys.executable, "-m", "recsys.cli", "run", "--date", d], senv, log) for d in dates}
    info = {"key": key, "dates": dates, "recsys_run_s": seconds, "uptime": uptime()}
    done.write_text(json.dumps(info, indent=1) + "\n")
    return info


def read_registry(store: Path) -> dict[str, Any]:
    return json.loads((store / "registry" / "two_tower.json").read_text())


def db_rows(db: Path, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def db_time(value: Any) -> float | None:
    """Epoch seconds of a timestamp as Airflow stores it in SQLite (UTC, naive text)."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


def log_marks(home: Path, run_id: str, task_id: str) -> dict[str, float]:
    """When the task's (last) process started, had parsed the DAG file, entered and left the task's own code.

    Airflow 3 writes each try's log as JSON lines under ``<AIRFLOW_HOME>/logs``; a sensor in reschedule mode
    appends every look to the same file, so the marks are taken after the last ``Pre Execute`` group (the
    process that found the partition).
    """
    folder = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    files = sorted(folder.glob("attempt=*.log"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    events: list[tuple[float, str]] = []
    for line in files[-1].read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            when = ts(event.get("timestamp"))
            if when is not None:
                events.append((when, str(event.get("event", ""))))
    starts = [i for i, (_, text) in enumerate(events) if text == "::group::Pre Execute"]
    if not starts:
        return {}
    marks: dict[str, float] = {"process_start": events[starts[-1]][0]}
    for n, (first, nxt) in enumerate(zip(starts, [*starts[1:], len(events)], strict=True)):
        # each process of the task (a sensor's looks): its first and its last log line
        marks[f"process_{n + 1}_first"] = events[first][0]
        marks[f"process_{n + 1}_last"] = events[nxt - 1][0]
    for when, text in events[starts[-1] :]:
        if text == "Worker startup parse complete":
            marks.setdefault("dag_parsed", when)
        elif text == "::endgroup::":
            marks.setdefault("task_code_start", when)
        elif text == "::group::Post Execute":
            marks.setdefault("task_code_end", when)
    return marks


def breakdown(db: Path, home: Path, run_id: str, t0: float) -> dict[str, Any]:
    """Per task, from the metadata DB: when the scheduler made it scheduled and queued it, when its process
    reported running (start) and when it ended; the gaps between those and the upstream task's end."""
    tis = {
        r["task_id"]: r
        for r in db_rows(
            db,
            "SELECT task_id, state, try_number, scheduled_dttm, queued_dttm, start_date, end_date FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        )
    }
    reschedules = [
        {
            "start": db_time(r["start_date"]),
            "end": db_time(r["end_date"]),
            "reschedule_date": db_time(r["reschedule_date"]),
        }
        for r in db_rows(
            db,
            "SELECT tr.start_date, tr.end_date, tr.reschedule_date FROM task_reschedule tr "
            "JOIN task_instance ti ON ti.id = tr.ti_id WHERE ti.dag_id = ? AND ti.run_id = ? "
            "AND ti.task_id = 'wait_for_partition' ORDER BY tr.start_date",
            (DAG_ID, run_id),
        )
    ]
    tasks: dict[str, Any] = {}
    previous_end = None
    for task_id in TASK_ORDER:
        ti = tis.get(task_id)
        if ti is None:
            continue
        start, end = db_time(ti["start_date"]), db_time(ti["end_date"])
        scheduled, queued = db_time(ti["scheduled_dttm"]), db_time(ti["queued_dttm"])
        marks = log_marks(home, run_id, task_id)
        entry: dict[str, Any] = {"state": ti["state"], "try_number": ti["try_number"]}
        if task_id == "wait_for_partition":
            # the TI keeps the first look's start date; the look that found the partition is the process
            # that started last (its first log line)
            start = marks.get("process_start", start)
            entry["negative_looks"] = len(reschedules)
            # each look's process (first to last log line; the last one found the partition), and the time from
            # one look's end to the next one's start: the poke interval plus the scheduler's and executor's delay
            n_looks = len([k for k in marks if k.endswith("_first")])
            looks = [(marks[f"process_{n}_first"], marks[f"process_{n}_last"]) for n in range(1, n_looks + 1)]
            entry["look_process_s"] = [_d(a, b) for a, b in looks]
            entry["look_end_to_next_look_start_s"] = [_d(a[1], b[0]) for a, b in itertools.pairwise(looks)]
            entry["t0_to_next_look_start_s"] = _d(t0, start)
            if reschedules:
                entry["t0_to_reschedule_date_s"] = _d(t0, reschedules[-1]["reschedule_date"])
        entry.update(
            {
                "scheduled": iso(scheduled),
                "queued": iso(queued),
                "start": iso(start),
                "end": iso(end),
                "upstream_end_to_scheduled_s": _d(previous_end, scheduled),
                "scheduled_to_queued_s": _d(scheduled, queued),
                "queued_to_start_s": _d(queued, start),
                "start_to_task_code_s": _d(start, marks.get("task_code_start")),
                "task_code_s": _d(marks.get("task_code_start"), marks.get("task_code_end")),
                "task_code_end_to_end_s": _d(marks.get("task_code_end"), end),
                "run_s": _d(start, end),
                "log_marks": {k: iso(v) for k, v in marks.items() if not k.startswith("process_")},
            }
        )
        tasks[task_id] = entry
        if ti["state"] in ("success", "skipped") and end:
            previous_end = end
    return tasks


def _d(a: float | None, b: float | None) -> float | None:
    return round(b - a, 2) if a is not None and b is not None else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", required=True, help="name of this measurement (results-<label>.json)")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "freshness")
    p.add_argument("--seed-from", default="2010-12-01")
    p.add_argument("--seed-days", type=int, default=3)
    p.add_argument("--date", default="2010-12-05", help="the day landed and measured (after the seed days)")
    p.add_argument("--gate", action="store_true", help="let the evaluation decide (default: deploy_mode=force)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of every Airflow component (e.g. RECSYS_SENSOR_POKE_SECONDS=60)",
    )
    p.add_argument("--serve-poll-seconds", type=float, default=2.0, help="recsys serve --poll-seconds (default 2)")
    p.add_argument(
        "--land-after-looks",
        type=int,
        default=1,
        help="land once the sensor has looked this many times in vain (default 1)",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=30,
        help="measure the idle CPU of the Airflow processes this long before triggering",
    )
    p.add_argument("--timeout", type=float, default=1200, help="seconds from t0 before giving up")
    p.add_argument("--warm-up", action="store_true",
                   help="event mode: before t0, rerun the newest seed date by hand (every step a no-op) so the "
                        "executor's worker has run a task already, as in a running deployment (the sensor mode's looks "
                        "do that)")
    p.add_argument("--mode", choices=["sensor", "event"], default="sensor",
                   help="sensor: a run created before the day lands waits at the sensor (default); event: the "
                        "sink's announcement of the closed day schedules the run (RECSYS_DAYS_CLOSED_TOPIC)")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--analyse",
        action="store_true",
        help="only recompute the breakdown of the results file from its run directory (no new run)",
    )
    return p.parse_args(argv)


AIRFLOW_COMPONENTS = ["api-server", "scheduler", "dag-processor", "triggerer"]


@dataclass
class Run:
    """One measurement: its directories, the components' environment, the started processes, the clients of
    the REST API and of the service, and the results so far."""

    args: argparse.Namespace
    env: dict[str, str]
    home: Path  # AIRFLOW_HOME
    store: Path
    logs: Path
    serve_port: int
    procs: Processes
    api: httpx.Client
    serve: httpx.Client
    result: dict[str, Any]

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def airflow_groups(self) -> set[int]:
        return {self.procs.procs[n].pid for n in AIRFLOW_COMPONENTS}


def header(args: argparse.Namespace, overrides: dict[str, str]) -> dict[str, Any]:
    """The results' first keys: the command, the machine, the load, the measured date and the settings."""
    return {
        "command": "python bench/freshness/run.py " + " ".join(sys.argv[1:]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _harness.cpu_name(),
            "python": platform.python_version(),
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip(),
            # uncommitted changes to tracked files (run from a worktree of the commit to keep this false)
            "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                         capture_output=True, text=True, cwd=ROOT).stdout.strip()),
        },
        "uptime_before": uptime(),
        "loadavg_before": os.getloadavg(),
        "mode": args.mode,
        "date": args.date,
        "settings": overrides,
        "target_s": EVENT_TARGET_S if args.mode == "event" else TARGET_S,
    }


def prepare(args: argparse.Namespace, env: dict[str, str], overrides: dict[str, str], result: dict[str, Any]) -> Run:
    """A fresh run directory (AIRFLOW_HOME, a copy of the seed store, logs), the components' environment on
    free ports, and a migrated metadata DB (event mode: ``scripts/airflow-init.sh``, which also makes the Kafka
    connection of the watcher)."""
    run_dir = args.workdir / "runs" / args.label
    shutil.rmtree(run_dir, ignore_errors=True)
    home, store, logs = run_dir / "airflow", run_dir / "store", run_dir / "logs"
    logs.mkdir(parents=True)
    home.mkdir()
    shutil.copytree(args.workdir / "seed" / "store", store)
    api_port, serve_port = _harness.free_port(), _harness.free_port()
    env = env | {
        "AIRFLOW_HOME": str(home),
        "RECSYS_STORAGE_BACKEND": "local",
        "RECSYS_STORAGE_ROOT": str(store),
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_harness.free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_harness.free_port()),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **overrides,
    }
    if args.mode == "event":  # asset-triggered runs are created by the scheduler's job-schedule step
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "True"
    result["environment"] = {
        k: env.get(k) for k in ["RECSYS_SENSOR_POKE_SECONDS", "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__PARALLELISM",
                                "RECSYS_DAYS_CLOSED_TOPIC", "RECSYS_KAFKA_BOOTSTRAP"]
    }
    if args.mode == "event":
        airflow = shutil.which("airflow", path=env.get("PATH"))
        result["airflow_init_s"] = run_cli(["bash", str(ROOT / "scripts" / "airflow-init.sh")],
                                           env | {"AIRFLOW": str(airflow)}, logs / "airflow-init.log")
    else:
        result["airflow_db_migrate_s"] = run_cli(["airflow", "db", "migrate"], env, logs / "db-migrate.log")
    return Run(
        args, env, home, store, logs, serve_port, Processes(logs),
        httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30),
        httpx.Client(base_url=f"http://127.0.0.1:{serve_port}", timeout=10),
        result,
    )


def start(run: Run) -> None:
    """Start the Airflow components and ``recsys serve``; wait until the service answers and the DAG is parsed."""
    started = time.monotonic()
    for name in AIRFLOW_COMPONENTS:
        run.procs.start(name, ["airflow", name], run.env)
    options = ("--poll-seconds", str(run.args.serve_poll_seconds), "--log-level", "warning")
    run.procs.start("serve", _harness.serve_command(run.serve_port, *options), run.env)
    wait_for("recsys serve", lambda: run.serve.get(_harness.READY_PATH).status_code == 200, 600, run.procs)
    wait_for("the api-server", lambda: run.api.get("/api/v2/monitor/health").status_code == 200, 600, run.procs)
    wait_for("the DAG to be parsed", lambda: run.api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 600, run.procs)
    run.result["startup_s"] = round(time.monotonic() - started, 1)


def measure_idle_cpu(run: Run) -> None:
    """CPU per second of the Airflow processes while nothing runs, over ``--idle-seconds``."""
    groups = run.airflow_groups()
    cpu, t_cpu = group_cpu_s(groups), time.time()
    time.sleep(run.args.idle_seconds)
    idle = (group_cpu_s(groups) - cpu) / (time.time() - t_cpu)
    run.result["airflow_cpu_idle"] = {"seconds": round(time.time() - t_cpu, 1), "cpu_per_s": round(idle, 3)}


def trigger(run: Run) -> tuple[str, float]:
    """Unpause the DAG and trigger its run of ``--date`` (forced deploy unless ``--gate``); its run id and when."""
    api, args = run.api, run.args
    api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    conf = {} if args.gate else {"deploy_mode": "force", "deploy_reason": "bench/freshness: time to serve"}
    t_trigger = time.time()
    dag_run = (
        api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": f"{args.date}T00:00:00Z", "conf": conf})
        .raise_for_status()
        .json()
    )
    run_id = dag_run["dag_run_id"]
    run.result["run_id"] = run_id
    run.result["trigger_request_s"] = round(time.time() - t_trigger, 3)
    return run_id, t_trigger


def negative_looks(run: Run, run_id: str) -> int:
    """Looks that found nothing, once the sensor is waiting again (up_for_reschedule) after the last."""
    r = run.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/wait_for_partition")
    if r.status_code != 200 or r.json().get("state") != "up_for_reschedule":
        return 0
    return len(
        db_rows(
            run.db,
            "SELECT tr.id FROM task_reschedule tr JOIN task_instance ti ON ti.id = tr.ti_id "
            "WHERE ti.dag_id = ? AND ti.run_id = ?",
            (DAG_ID, run_id),
        )
    )


def wait_for_sensor(run: Run, run_id: str) -> None:
    """Until the sensor has looked ``--land-after-looks`` times in vain (with the CPU of the later looks)."""
    args = run.args
    wait_for("the sensor's first look", lambda: negative_looks(run, run_id) >= 1, 900, run.procs, 0.2)
    groups = run.airflow_groups()
    cpu, t_cpu = group_cpu_s(groups), time.time()
    wait_for(
        f"{args.land_after_looks} negative look(s) of the sensor",
        lambda: negative_looks(run, run_id) >= args.land_after_looks,
        900,
        run.procs,
        0.2,
    )
    if args.land_after_looks > 1:  # the looks after the first (cold) one, with the scheduler's own loop
        run.result["airflow_cpu_while_waiting"] = {
            "seconds": round(time.time() - t_cpu, 1),
            "looks": args.land_after_looks - 1,
            "cpu_per_s": round((group_cpu_s(groups) - cpu) / (time.time() - t_cpu), 3),
        }


def land(run: Run, t_trigger: float) -> float:
    """Land ``--date`` with ``recsys land``; t0, the mtime of its events ``_SUCCESS`` marker."""
    args = run.args
    run.result["trigger_to_landing_s"] = round(time.time() - t_trigger, 1)
    print(f"sensor waiting after {run.result['trigger_to_landing_s']} s; landing {args.date}", flush=True)
    land_started = time.time()
    run_cli([sys.executable, "-m", "recsys.cli", "land", "--date", args.date], run.env, run.logs / "land.log")
    marker = run.store / "raw" / "events" / f"dt={args.date}" / "_SUCCESS"
    t0 = marker.stat().st_mtime
    run.result["land_command_s"] = round(time.time() - land_started, 2)
    run.result["t0"] = iso(t0)
    return t0


@dataclass
class Watched:
    """What :func:`watch` saw: when the champion switched (and to which version), when the service answered
    with it, when the run ended and in which state."""

    switched: float | None = None
    new_version: int | None = None
    served: float | None = None
    run_end: float | None = None
    state: str = "running"


def watch(run: Run, run_id: str, old: int, t0: float) -> Watched:
    """Poll the registry and ``GET /version`` (every 0.1 s) and the run's state (every second) until the run
    ended and the service answers with the new champion (or the run failed, or ``--gate``), or ``--timeout``."""
    seen = Watched()
    deadline = time.time() + run.args.timeout
    last_run_check = 0.0
    while time.time() < deadline:
        if seen.switched is None:
            with contextlib.suppress(ValueError, OSError):
                champion = read_registry(run.store)["champion"]
                if champion is not None and champion != old:
                    seen.switched, seen.new_version = time.time(), champion
        if seen.served is None:
            with contextlib.suppress(httpx.TransportError):
                version = run.serve.get("/version").json()["version"]
                if version != old:
                    seen.served = time.time()
                    print(f"serving v{version} {seen.served - t0:.1f} s after t0", flush=True)
        if time.time() - last_run_check > 1:
            last_run_check = time.time()
            seen.state = run.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
            if seen.state in ("success", "failed") and seen.run_end is None:
                seen.run_end = time.time()
        if seen.run_end is not None and (seen.served is not None or seen.state == "failed" or run.args.gate):
            break
        run.procs.check()
        time.sleep(0.1)
    return seen


def record(run: Run, run_id: str, t0: float, seen: Watched) -> None:
    """The run's outcome, its per-task breakdown, the timeline from t0 and the summary."""
    result = run.result
    result["run_state"] = seen.state
    result["champion_after"] = run.serve.get("/version").json()["version"]
    result["new_champion"] = seen.new_version
    result["tasks"] = breakdown(run.db, run.home, run_id, t0)
    result["timeline_s"] = {
        "t0_to_champion_switch": _d(t0, seen.switched),
        "champion_switch_to_served": _d(seen.switched, seen.served),
        "t0_to_served": _d(t0, seen.served),
        "t0_to_run_end": _d(t0, seen.run_end),
    }
    result["summary"] = summarise(result, t0, seen.switched, seen.served)
    result["meets_target"] = seen.served is not None and seen.served - t0 <= result["target_s"]


def watcher_joined(bootstrap: str) -> bool:
    """The watcher's consumer (the triggerer running the DAG's AssetWatcher trigger) is in its group, stable."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        description = admin.describe_consumer_groups([CLOSED_GROUP], request_timeout=10)[CLOSED_GROUP].result(10)
    except KafkaException:  # no such group yet (NOT_COORDINATOR, GROUP_ID_NOT_FOUND): not joined
        return False
    return "STABLE" in str(description.state) and len(description.members) >= 1


def close_day(run: Run) -> float:
    """Land ``--date`` (``recsys land``: the events, the catalog, ``_SUCCESS``: t0, its mtime) and close it as the
    sink does: its ``_sink.json``, then the sink's own announcement on the closed-days topic (``Sink._announce``).

    Online Retail's days are from 2010; the sink's consumer refuses events older than 7 days, so the events
    come through ``recsys land``; what Airflow sees (the partition, ``_SUCCESS``, the message) is what the sink
    makes.
    """
    from recsys.storage.local import LocalStore
    from recsys.streaming.sink import SINK_MARKER, Sink, SinkConfig

    args, env = run.args, run.env
    store = LocalStore(run.store)
    sink = Sink(store, SinkConfig(bootstrap=env["RECSYS_KAFKA_BOOTSTRAP"], topic="bench-unused",
                                  group="bench-freshness", closed_topic=env["RECSYS_DAYS_CLOSED_TOPIC"]))
    land_started = time.time()
    print(f"watcher in its group; landing and closing {args.date}", flush=True)
    run_cli([sys.executable, "-m", "recsys.cli", "land", "--date", args.date], env, run.logs / "land.log")
    folder = f"raw/events/dt={args.date}"
    t0 = (run.store / folder / "_SUCCESS").stat().st_mtime
    marker = {"date": args.date, "partition": folder, "closed_at": iso(t0), "watermark": iso(t0),
              "allowed_lateness_seconds": 0.0, "files": len(store.data_files(folder)), "topic": "bench-unused"}
    store.write_json(f"{folder}/{SINK_MARKER}", marker)
    sink._announce(marker)  # the sink's code: produce (key: the date; value: _sink.json), flush, announced_at
    announced = time.time()
    sink.consumer.close()
    run.result["land_command_s"] = round(announced - land_started, 2)
    run.result["t0"] = iso(t0)
    run.result["t0_to_announced_s"] = round(announced - t0, 3)
    return t0


def wait_for_event_run(run: Run, t0: float) -> str:
    """The run the scheduler created from the watcher's asset event (the DAG's only asset-triggered run)."""
    found: list[str] = []

    def created() -> bool:
        runs = run.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        found[:] = [r["dag_run_id"] for r in runs if r["run_type"] == "asset_triggered"]
        return bool(found)

    wait_for("the event-driven run", created, run.args.timeout, run.procs, 0.2)
    run.result["run_id"] = found[0]
    print(f"run {found[0]} created {time.time() - t0:.1f} s after t0", flush=True)
    return found[0]


def event_parts(run: Run, run_id: str, t0: float) -> dict[str, Any]:
    """From the metadata DB: when the watcher's asset event was recorded, when the run was created (queued)
    and started, and the day it announced."""
    (event,) = db_rows(run.db, "SELECT ae.timestamp, ae.extra FROM asset_event ae JOIN asset a ON a.id = ae.asset_id "
                               "WHERE a.name = 'recsys_raw_events' ORDER BY ae.timestamp")[:1]
    (dag_run,) = db_rows(run.db, "SELECT queued_at, start_date, run_type FROM dag_run WHERE dag_id = ? AND run_id = ?",
                         (DAG_ID, run_id))
    fired, queued = db_time(event["timestamp"]), db_time(dag_run["queued_at"])
    return {"asset_event": iso(fired), "payload": json.loads(event["extra"]).get("payload"),
            "run_type": dag_run["run_type"], "run_queued": iso(queued),
            "run_start": iso(db_time(dag_run["start_date"])),
            "t0_to_asset_event_s": _d(t0, fired), "asset_event_to_run_queued_s": _d(fired, queued)}


def warm_up(run: Run) -> None:
    """A manual rerun of the newest seed date (every step finds its work done): the executor's first task
    process is slow (its worker starts), which a deployment that has run before does not pay at t0."""
    day = run.result["seed"]["dates"][-1]
    started = time.time()
    dag_run = run.api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={
        "logical_date": None, "conf": {"partition_date": day}}).raise_for_status().json()
    url = f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run['dag_run_id']}"
    wait_for("the warm-up run", lambda: run.api.get(url).json()["state"] in ("success", "failed"), 1200, run.procs, 1)
    run.result["warm_up"] = {"date": day, "run_id": dag_run["dag_run_id"], "state": run.api.get(url).json()["state"],
                             "seconds": round(time.time() - started, 1)}


def measure_event(run: Run) -> None:
    """Event mode: start, unpause (no run), wait until the watcher listens, close the day, watch, record."""
    start(run)
    run.api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    run.result["watcher_ready_s"] = wait_for("the watcher's consumer in its group",
                                             lambda: watcher_joined(run.env["RECSYS_KAFKA_BOOTSTRAP"]), 600, run.procs)
    measure_idle_cpu(run)  # with the watcher polling the topic
    if run.args.warm_up:
        warm_up(run)
    old = run.serve.get("/version").json()["version"]
    run.result["champion_before"] = old
    t0 = close_day(run)
    run_id = wait_for_event_run(run, t0)
    seen = watch(run, run_id, old, t0)
    run.result["event"] = event_parts(run, run_id, t0)
    record(run, run_id, t0, seen)


def measure(run: Run) -> None:
    """Steps 3 to 6 of the module docstring: start, trigger, land, watch, record."""
    if run.args.mode == "event":
        measure_event(run)
        return
    start(run)
    measure_idle_cpu(run)
    old = run.serve.get("/version").json()["version"]
    run.result["champion_before"] = old
    run_id, t_trigger = trigger(run)
    wait_for_sensor(run, run_id)
    t0 = land(run, t_trigger)
    seen = watch(run, run_id, old, t0)
    record(run, run_id, t0, seen)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(__file__).with_name(f"results-{args.label}.json")
    if args.analyse:
        analyse(out, args.workdir / "runs" / args.label)
        return 0

    env = dict(os.environ)
    if "AIRFLOW__CORE__DAGS_FOLDER" not in env:
        raise SystemExit("source scripts/env.sh first (it sets the DAG folder and the virtual environment)")
    overrides = dict(item.split("=", 1) for item in args.set)
    result = header(args, overrides)
    print(result["uptime_before"], flush=True)
    result["seed"] = seed(args.workdir, args.seed_from, args.seed_days, env)
    kafka_home = None
    if args.mode == "event":
        kafka_home, overrides = kafka(args, env, overrides, result)
    try:
        run = prepare(args, env, overrides, result)
        try:
            measure(run)
        finally:
            run.procs.stop()
            run.api.close()
            run.serve.close()
    finally:
        if kafka_home is not None:
            subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "stop"], env=env | {"KAFKA_HOME": str(kafka_home)},
                           cwd=ROOT, capture_output=True)
        result["uptime_after"] = uptime()
        result["loadavg_after"] = os.getloadavg()
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}", flush=True)
    print(json.dumps(result.get("summary"), indent=1))
    return 0 if result.get("meets_target") else 1


def kafka(args: argparse.Namespace, env: dict[str, str], overrides: dict[str, str],
          result: dict[str, Any]) -> tuple[Path | None, dict[str, str]]:
    """Event mode: the broker (``RECSYS_KAFKA_BOOTSTRAP``, else ``scripts/kafka.sh start`` with its state in
    ``<workdir>/kafka``; its state dir is returned to stop it) and a fresh closed-days topic, as settings."""
    from recsys.streaming.topics import ensure_topic

    home = None
    bootstrap = env.get("RECSYS_KAFKA_BOOTSTRAP")
    if not bootstrap:
        home = args.workdir / "kafka"
        started = time.monotonic()
        subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start"], env=env | {"KAFKA_HOME": str(home)}, cwd=ROOT,
                       check=True, capture_output=True)
        result["kafka_start_s"] = round(time.monotonic() - started, 1)
        bootstrap = json.loads((home / "ready.json").read_text())["bootstrap"]
    topic = f"recsys.days-closed.bench-{secrets.token_hex(4)}"
    ensure_topic(bootstrap, topic, 1)
    return home, overrides | {"RECSYS_KAFKA_BOOTSTRAP": bootstrap, "RECSYS_DAYS_CLOSED_TOPIC": topic}


def analyse(out: Path, run_dir: Path) -> None:
    """Recompute ``tasks`` and ``summary`` of a results file from the metadata DB and logs it left behind."""
    result = json.loads(out.read_text())
    t0 = ts(result["t0"])
    assert t0 is not None
    timeline = result["timeline_s"]
    switched = t0 + timeline["t0_to_champion_switch"] if timeline["t0_to_champion_switch"] is not None else None
    served = t0 + timeline["t0_to_served"] if timeline["t0_to_served"] is not None else None
    result["tasks"] = breakdown(run_dir / "airflow" / "airflow.db", run_dir / "airflow", result["run_id"], t0)
    result["summary"] = summarise(result, t0, switched, served)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


def summarise(result: dict[str, Any], t0: float, switched: float | None, served: float | None) -> dict[str, Any]:
    """t0 -> served as consecutive, non-overlapping parts: sensor wait, per task its scheduling gap (upstream
    end -> start: scheduler loop, executor, task process start) and its run (start -> end), then the service."""
    tasks = result["tasks"]
    parts: dict[str, float | None] = {}
    sensor = tasks.get("wait_for_partition", {})
    event = result.get("event")
    if event:  # event mode: the watcher's asset event, the run it created, the sensor's first (finding) look
        parts["event: t0 -> asset event (announced, watcher fired)"] = event["t0_to_asset_event_s"]
        parts["event: asset event -> run created (queued)"] = event["asset_event_to_run_queued_s"]
        parts["event: run queued -> wait_for_partition starts"] = _d(ts(event["run_queued"]), ts(sensor.get("start")))
    else:
        parts["sensor: t0 -> look that finds the partition starts"] = sensor.get("t0_to_next_look_start_s")
    parts["sensor: that look (process start + poke)"] = sensor.get("run_s")
    previous = "wait_for_partition"
    for task_id in TASK_ORDER[1:]:
        entry = tasks.get(task_id)
        if not entry or entry["start"] is None or entry["state"] not in ("success", "skipped", "failed"):
            continue
        prev_end = ts(tasks[previous]["end"])
        parts[f"gap: {previous} end -> {task_id} start"] = _d(prev_end, ts(entry["start"]))
        if task_id == "deploy" and switched is not None:
            parts["deploy: start -> champion switch"] = _d(ts(entry["start"]), switched)
            break
        parts[f"task: {task_id}"] = entry["run_s"]
        previous = task_id
    parts["service: champion switch -> answers with it"] = _d(switched, served)
    known = [v for v in parts.values() if v is not None]
    gaps = sum(v for k, v in parts.items() if k.startswith("gap") and v is not None)
    return {
        "parts_s": parts,
        "sum_of_parts_s": round(sum(known), 1),
        "t0_to_served_s": _d(t0, served),
        "scheduling_gaps_total_s": round(gaps, 1),
        "task_runs_total_s": round(sum(v for k, v in parts.items() if k.startswith("task") and v), 1),
    }


if __name__ == "__main__":
    sys.exit(main())
