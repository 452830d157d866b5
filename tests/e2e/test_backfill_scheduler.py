"""Backfills of the incremental DAG on a real Airflow: ``airflow scheduler``, ``airflow dag-processor`` and
``airflow api-server`` (the tasks' Execution API and the REST API) run as subprocesses with the
LocalExecutor, in an Airflow home of their own, over real Online Retail days landed with ``recsys land``
into a store of their own.

The metadata database is a throwaway PostgreSQL (tests/postgres.py), as in production. Airflow 3 removed
the SequentialExecutor and runs the LocalExecutor on SQLite too (``airflow standalone`` does), but with a
scheduler, a DAG processor, an api-server and the CLI writing at once SQLite answers "database is locked":
``airflow backfill create`` failed that way here while the scheduler was busy.

The two tests are consecutive chapters of one deployment's history (they share the stack; the second
starts where the first ended, and also passes on its own):

1. a backfill of 2010-12-01..03 stays queued while the DAG is paused; once unpaused, it runs the dates in
   order, one at a time, and each date gets one decision;
2. a backfill of 2010-12-05..06 whose first date fails validation (a corrupt delivery): 2010-12-06 finds
   its partition and then waits at ``validate`` (``depends_on_past``). Once the delivery is fixed,
   clearing the failed date alone is not enough in Airflow 3.3: the cleared run is queued behind the
   waiting run, which holds the backfill's only slot (``--max-active-runs 1``), so neither moves. Putting
   the waiting run back in the queue (REST) lets the backfill run both dates, in order. Clearing the
   fixed date once more reprocesses it without changing a byte of the store or touching the later date.

Operator actions go through the commands the README documents (``airflow dags unpause``, ``airflow
backfill create``, ``airflow tasks clear``); states and the reasons a task waits are read from the REST
API. Every wait has a time limit; the servers and every process they started are killed afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import free_port, throwaway_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "recsys_incremental_update"
FIRST_DAYS = ["2010-12-01", "2010-12-02", "2010-12-03"]
BAD_DAY, LATER_DAY = "2010-12-05", "2010-12-06"  # Online Retail has no Saturdays: 2010-12-04 is skipped
AFTER_SENSOR = [
    "validate",
    "build_features",
    "fine_tune",
    "evaluate",
    "deploy_if_blessed",
    "deploy",
    "refresh_serving_index",
]

START_TIMEOUT = 240  # s: migrate is separate; the three servers up and the DAG parsed
CLI_TIMEOUT = 180  # s: one `airflow ...` command (about 5 s on a quiet machine, 25 s on a busy one)
RUN_TIMEOUT = 420  # s: one date through all its tasks (about 1 min quiet, 2-3 min on 2 busy cores)
HOLD_SECONDS = 15  # s: how long a held run is watched for tasks that should not start (the loop is ~1 s)
POLL_SECONDS = 2.0

SCHEDULER_ENV = {
    # small and quick: one epoch, small towers and replay sample
    "RECSYS_EPOCHS": "1",
    "RECSYS_EMBEDDING_DIM": "16",
    "RECSYS_REPLAY_EXAMPLES": "2000",
    # a missing partition fails fast (today's scheduled run, created when the DAG is unpaused, has none)
    "RECSYS_SENSOR_POKE_SECONDS": "5",
    "RECSYS_SENSOR_TIMEOUT_SECONDS": "30",
    "RECSYS_PARTITION_LATE_HOUR": "none",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def _ts(value: str | None) -> datetime:
    assert value, "expected a timestamp"
    return datetime.fromisoformat(value)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class AirflowStack:
    """The running servers of one Airflow home and the ways the tests talk to them."""

    def __init__(self, home: Path, store_root: Path, env: dict[str, str], api_url: str) -> None:
        self.home, self.store_root, self.env, self.api_url = home, store_root, env, api_url
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    # --- processes -----------------------------------------------------------------------------------
    def start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "w")  # closed below: the child keeps its own copy
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one in stop()
        )
        log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"airflow {name} exited with {proc.returncode}\n{self.log_tail(name)}", pytrace=False)

    def stop(self) -> None:
        """SIGTERM every server's process group, then SIGKILL whatever is left of them and their tasks.

        Task processes run in process groups of their own (the task supervisor starts a new session), so
        the descendants are collected first and their groups killed too.
        """
        import psutil

        pids: set[int] = set()
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                pids |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            pids.add(proc.pid)
        groups = set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.home / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        return f"--- last {lines} lines of {path} ---\n" + "\n".join(text)

    # --- the CLI ---------------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: int = CLI_TIMEOUT) -> str:
        out = subprocess.run(
            [str(BIN / "airflow"), *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        assert out.returncode == 0, (
            f"airflow {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        )
        return out.stdout

    # --- the REST API --------------------------------------------------------------------------------
    def rest(self, method: str, path: str, body: dict | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        """``method path`` on the REST API as the (all-admins) simple auth manager's user; the JSON answer.

        A status outside ``ok`` fails the test; one inside it with an error body returns ``{"status", "detail"}``.
        """
        if self._token is None:
            with urllib.request.urlopen(f"{self.api_url}/auth/token", timeout=30) as resp:
                self._token = json.load(resp)["access_token"]
        request = urllib.request.Request(
            f"{self.api_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        assert status in ok, f"{method} {path}: HTTP {status}: {payload[:2000]!r}"
        answer = json.loads(payload) if payload else {}
        return answer if status < 400 else {"status": status, "detail": answer.get("detail")}

    def backfill_runs(self) -> dict[str, dict]:
        """The DAG's backfill runs by partition date (``YYYY-MM-DD`` of the logical date)."""
        runs = self.rest("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return {r["logical_date"][:10]: r for r in runs if r["run_type"] == "backfill"}

    def task_instances(self, run_id: str) -> dict[str, dict]:
        quoted = urllib.parse.quote(run_id, safe="")
        tis = self.rest("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances?limit=100")["task_instances"]
        return {ti["task_id"]: ti for ti in tis}

    def waiting_reasons(self, run_id: str, task_id: str) -> list[str]:
        """Why the scheduler does not start ``task_id`` of ``run_id`` (its unmet dependencies)."""
        quoted = urllib.parse.quote(run_id, safe="")
        deps = self.rest("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/{task_id}/dependencies")
        return [d["reason"] for d in deps["dependencies"]]

    def open_backfills(self) -> list[dict]:
        backfills = self.rest("GET", f"/api/v2/backfills?dag_id={DAG_ID}&limit=100")["backfills"]
        return [b for b in backfills if b["completed_at"] is None]

    def diagnostics(self) -> str:
        """Runs, task states, the failed tasks' log tails and the scheduler's: for a failure message."""
        lines = []
        try:
            for day, run in sorted(self.backfill_runs().items()):
                tis = self.task_instances(run["dag_run_id"])
                lines.append(
                    f"{day} {run['dag_run_id']} {run['state']} start={run['start_date']} end={run['end_date']}"
                )
                lines += [f"    {t}: {ti['state']} try={ti['try_number']}" for t, ti in tis.items()]
                for t, ti in tis.items():
                    if ti["state"] == "failed":
                        log = (
                            self.home
                            / "logs"
                            / f"dag_id={DAG_ID}"
                            / f"run_id={run['dag_run_id']}"
                            / f"task_id={t}"
                            / f"attempt={ti['try_number']}.log"
                        )
                        if log.exists():
                            lines.append(f"    --- tail of {log} ---")
                            lines += ["    " + x[-400:] for x in log.read_text(errors="replace").splitlines()[-15:]]
        except Exception as err:  # noqa: BLE001 - diagnostics must not hide the original failure
            lines.append(f"(REST API not answering: {err})")
        return "\n".join(lines) + "\n" + self.log_tail("scheduler", 25)

    def hold(self, check: Callable[[], None], seconds: float = HOLD_SECONDS) -> None:
        """Call ``check`` (which asserts) again and again for ``seconds``: something stays as it is."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            check()
            time.sleep(POLL_SECONDS)

    def backfill(self, first: str, last: str) -> None:
        """The README's backfill command for ``first``..``last``."""
        self.cli(
            "backfill",
            "create",
            "--dag-id",
            DAG_ID,
            "--from-date",
            first,
            "--to-date",
            last,
            "--reprocess-behavior",
            "failed",
            "--max-active-runs",
            "1",
        )

    def unpause(self) -> None:
        if self.rest("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"]:
            self.cli("dags", "unpause", DAG_ID)
        assert self.rest("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"] is False

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` until it returns something truthy; fail after ``timeout`` s with the diagnostics."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f} s\n{self.diagnostics()}", pytrace=False)
            time.sleep(POLL_SECONDS)


@pytest.fixture(scope="module")
def metadata_db():
    """Airflow's metadata database: a throwaway PostgreSQL server's ``airflow`` database (its URL)."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def stack(metadata_db, tmp_path_factory):
    """Landed days, a migrated Airflow home, the three servers running and the DAG parsed (paused, as new DAGs are)."""
    home = tmp_path_factory.mktemp("airflow-home")
    store_root = tmp_path_factory.mktemp("store")
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
        | SCHEDULER_ENV
        | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",  # the machine has 2 cores; runs are one at a time anyway
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # as scripts/env.sh: the backfill must unpause
            # tasks talk to the api-server's Execution API with tokens the scheduler signs: one shared secret
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # REST calls without a login
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # never the default 8793 of another
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # parse once; the files do not change
            "RECSYS_STORAGE_ROOT": str(store_root),
        }
    )
    land = subprocess.Popen(  # upstream publishes the days while Airflow's schema is created
        [str(BIN / "recsys"), "land", "--from", FIRST_DAYS[0], "--days", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    airflow = AirflowStack(home, store_root, env, api_url)
    airflow.cli("db", "migrate", timeout=300)
    out, err = land.communicate(timeout=300)
    assert land.returncode == 0, err[-3000:]
    assert [d["date"] for d in json.loads(out)] == [*FIRST_DAYS, BAD_DAY, LATER_DAY]

    try:
        airflow.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1")
        airflow.start("dag-processor", "dag-processor")
        airflow.start("scheduler", "scheduler")

        def ready() -> bool:
            try:
                health = airflow.rest("GET", "/api/v2/monitor/health")
                airflow.rest("GET", f"/api/v2/dags/{DAG_ID}")
            except (OSError, AssertionError):
                return False
            return health["scheduler"]["status"] == "healthy"

        airflow.wait("the api-server up, the scheduler healthy and the DAG parsed", ready, START_TIMEOUT)
        yield airflow
    finally:
        airflow.stop()


def _fail_fast(stack: AirflowStack, runs: dict[str, dict], days: list[str]) -> None:
    failed = [d for d in days if d in runs and runs[d]["state"] == "failed"]
    if failed:
        pytest.fail(f"backfill runs failed: {failed}\n{stack.diagnostics()}", pytrace=False)


def _first_start_last_end(tis: dict[str, dict]) -> tuple[datetime, datetime]:
    ran = [ti for ti in tis.values() if ti["start_date"] and ti["end_date"]]
    return min(_ts(ti["start_date"]) for ti in ran), max(_ts(ti["end_date"]) for ti in ran)


def test_backfill_runs_the_dates_in_order_one_at_a_time(stack):
    from recsys import registry
    from recsys.storage.local import LocalStore

    assert stack.rest("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"] is True  # DAGS_ARE_PAUSED_AT_CREATION
    stack.backfill(FIRST_DAYS[0], FIRST_DAYS[-1])
    # the runs of a paused DAG's backfill are created but stay queued: nothing starts until it is unpaused

    def all_queued() -> None:
        runs = stack.backfill_runs()
        assert sorted(runs) == FIRST_DAYS and {r["state"] for r in runs.values()} == {"queued"}, runs

    stack.hold(all_queued)
    # unpausing also creates the run of the latest day (catchup is off): it has no partition, and its
    # sensor fails after RECSYS_SENSOR_TIMEOUT_SECONDS; it is not part of the backfill
    stack.unpause()
    concurrent: list[list[str]] = []

    def all_succeeded() -> bool:
        runs = stack.backfill_runs()
        _fail_fast(stack, runs, FIRST_DAYS)
        running = [d for d in FIRST_DAYS if d in runs and runs[d]["state"] == "running"]
        if len(running) > 1:
            concurrent.append(running)
        return all(d in runs and runs[d]["state"] == "success" for d in FIRST_DAYS)

    stack.wait(
        f"the backfill of {FIRST_DAYS[0]}..{FIRST_DAYS[-1]} to succeed", all_succeeded, RUN_TIMEOUT * len(FIRST_DAYS)
    )
    assert concurrent == [], f"runs of one backfill ran at the same time: {concurrent}"

    runs = stack.backfill_runs()
    assert sorted(runs) == FIRST_DAYS
    tis = {day: stack.task_instances(runs[day]["dag_run_id"]) for day in FIRST_DAYS}
    for day in FIRST_DAYS:
        states = {t: ti["state"] for t, ti in tis[day].items()}
        assert all(
            states[t] == "success"
            for t in ("wait_for_partition", "validate", "build_features", "fine_tune", "evaluate", "deploy_if_blessed")
        ), (day, states)
        assert states["deploy"] in ("success", "skipped") and states["refresh_serving_index"] == "success", states
    # strictly in date order: each run (and each of its tasks) starts after the previous date's run ended
    for before, after in itertools.pairwise(FIRST_DAYS):
        assert _ts(runs[after]["start_date"]) >= _ts(runs[before]["end_date"]), (before, after, runs)
        assert _first_start_last_end(tis[after])[0] >= _first_start_last_end(tis[before])[1], (before, after)
    # the backfill is marked complete by the scheduler once its last run finished
    stack.wait("the backfill to be marked complete", lambda: stack.open_backfills() == [], 60)

    reg = registry.load(LocalStore(stack.store_root))
    assert sorted(reg["decisions"]) == FIRST_DAYS
    # the fine-tunes happened in date order: version n was trained on the n-th date
    assert sorted((meta["trained_on"], int(v)) for v, meta in reg["versions"].items()) == [
        (day, n) for n, day in enumerate(FIRST_DAYS, start=1)
    ]
    for day in FIRST_DAYS:  # one decision per date, made by that date's backfill run
        decided = [h for h in reg["history"] if h["action"] in ("blessed", "rejected") and h["date"] == day]
        assert [h["run_id"] for h in decided] == [runs[day]["dag_run_id"]], (day, decided)


def test_a_failed_date_holds_the_later_dates_until_it_is_fixed_and_cleared(stack):
    from recsys import registry
    from recsys.storage.local import LocalStore

    store = LocalStore(stack.store_root)
    assert stack.open_backfills() == [], "an earlier backfill is still running (see the first test's failure)"
    stack.unpause()  # done by the first test; run on its own, this test unpauses
    # the README: Airflow refuses to backfill a depends_on_past DAG without a reprocess behaviour
    refused = stack.rest(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": DAG_ID,
            "from_date": f"{BAD_DAY}T00:00:00Z",
            "to_date": f"{LATER_DAY}T00:00:00Z",
            "reprocess_behavior": "none",
            "max_active_runs": 1,
        },
        ok=(422,),
    )
    assert "depends_on_past" in json.dumps(refused["detail"]), refused

    # upstream delivers a broken BAD_DAY: three refunds booked as negative prices
    data_file = f"raw/events/dt={BAD_DAY}/part-00000.parquet"
    delivered = store.read_bytes(data_file)
    events = store.read_parquet(data_file)
    events.loc[events.index[:3], "price"] = -1.0
    store.write_parquet(data_file, events)
    registry_before = registry.load(store)

    stack.backfill(BAD_DAY, LATER_DAY)

    def held_run_not_started(runs: dict[str, dict]) -> None:
        """The later date has not gone past its sensor (and its run has not ended)."""
        later = runs.get(LATER_DAY)
        if later is None:
            return
        if later["state"] not in ("queued", "running"):
            pytest.fail(
                f"the run of {LATER_DAY} ended ({later['state']}) while {BAD_DAY} was not done\n{stack.diagnostics()}",
                pytrace=False,
            )
        started = {
            t: ti["state"]
            for t, ti in stack.task_instances(later["dag_run_id"]).items()
            if t in AFTER_SENSOR and ti["state"] not in (None, "scheduled")
        }
        assert started == {}, f"{LATER_DAY} went past its sensor while {BAD_DAY} was not done: {started}"

    def failed_and_next_waiting() -> bool:
        runs = stack.backfill_runs()
        if BAD_DAY in runs and runs[BAD_DAY]["state"] == "success":
            pytest.fail(f"the broken {BAD_DAY} passed\n{stack.diagnostics()}", pytrace=False)
        held_run_not_started(runs)
        if runs.get(BAD_DAY, {}).get("state") != "failed" or runs.get(LATER_DAY, {}).get("state") != "running":
            return False
        return stack.task_instances(runs[LATER_DAY]["dag_run_id"])["wait_for_partition"]["state"] == "success"

    stack.wait(f"{BAD_DAY} to fail and {LATER_DAY} to find its partition", failed_and_next_waiting, RUN_TIMEOUT)
    runs = stack.backfill_runs()
    bad_run, later_run = runs[BAD_DAY]["dag_run_id"], runs[LATER_DAY]["dag_run_id"]
    bad_states = {t: ti["state"] for t, ti in stack.task_instances(bad_run).items()}
    assert bad_states["validate"] == "failed", bad_states
    assert all(bad_states[t] == "upstream_failed" for t in AFTER_SENSOR[1:]), bad_states

    # the later date waits at validate, for as long as we look, because the failed date's validate failed
    stack.hold(lambda: held_run_not_started(stack.backfill_runs()))
    reasons = stack.waiting_reasons(later_run, "validate")
    assert any("depends_on_past" in r and "not in a successful state" in r for r in reasons), reasons
    assert registry.load(store) == registry_before  # nothing trained, decided or deployed
    assert not store.exists(f"features/dt={BAD_DAY}") and not store.exists(f"features/dt={LATER_DAY}")
    assert store.exists(f"quarantine/events/dt={BAD_DAY}/reason.json")

    # upstream republishes the corrected delivery; the operator clears the failed date's failed tasks
    store.write_bytes(data_file, delivered)
    stack.cli("tasks", "clear", DAG_ID, "--start-date", BAD_DAY, "--end-date", BAD_DAY, "--only-failed", "--yes")
    # Airflow 3.3: the cleared run goes back to *queued*, and the backfill's only slot
    # (--max-active-runs 1) is held by the later date's run, which waits for it: neither moves
    stack.wait(f"the cleared {BAD_DAY} to be queued", lambda: stack.backfill_runs()[BAD_DAY]["state"] == "queued", 60)

    def deadlocked() -> None:
        runs = stack.backfill_runs()
        assert (runs[BAD_DAY]["state"], runs[LATER_DAY]["state"]) == ("queued", "running"), stack.diagnostics()
        held_run_not_started(runs)

    stack.hold(deadlocked)
    assert any("queued" in r for r in stack.waiting_reasons(bad_run, "validate"))
    # the way out: put the waiting later run back in the queue too (REST; the UI offers only success/failed);
    # the backfill then starts its queued runs in date order, one at a time
    stack.rest("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(later_run, safe='')}", {"state": "queued"})

    def both_succeeded() -> bool:
        runs = stack.backfill_runs()
        _fail_fast(stack, runs, [BAD_DAY, LATER_DAY])
        if runs[BAD_DAY]["state"] != "success":
            held_run_not_started(runs)
        return runs[BAD_DAY]["state"] == runs[LATER_DAY]["state"] == "success"

    stack.wait(f"{BAD_DAY} and then {LATER_DAY} to succeed", both_succeeded, 2 * RUN_TIMEOUT)
    bad_tis, later_tis = stack.task_instances(bad_run), stack.task_instances(later_run)
    assert _ts(later_tis["validate"]["start_date"]) >= _first_start_last_end(bad_tis)[1]
    stack.wait("the backfill to be marked complete", lambda: stack.open_backfills() == [], 60)

    reg = registry.load(store)
    assert {BAD_DAY, LATER_DAY} <= set(reg["decisions"])
    bad_version = reg["decisions"][BAD_DAY]["candidate_version"]
    later_version = reg["decisions"][LATER_DAY]["candidate_version"]
    assert later_version > bad_version > max((int(v) for v in registry_before["versions"]), default=0)
    assert reg["versions"][str(later_version)]["trained_on"] == LATER_DAY

    # clearing a processed date reprocesses it idempotently, and the later date is not touched
    before = tree_digest(stack.store_root)
    tries = bad_tis["validate"]["try_number"]
    stack.cli("tasks", "clear", DAG_ID, "--start-date", BAD_DAY, "--end-date", BAD_DAY, "--yes")

    def rerun_succeeded() -> bool:
        runs = stack.backfill_runs()
        _fail_fast(stack, runs, [BAD_DAY])
        validate = stack.task_instances(bad_run)["validate"]
        return runs[BAD_DAY]["state"] == "success" and validate["try_number"] > tries

    stack.wait(f"the cleared {BAD_DAY} to run again", rerun_succeeded, RUN_TIMEOUT)
    after = tree_digest(stack.store_root)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert changed == [], f"rerunning {BAD_DAY} changed the store: {changed}"
    assert {
        t: (ti["state"], ti["try_number"], ti["end_date"]) for t, ti in stack.task_instances(later_run).items()
    } == {t: (ti["state"], ti["try_number"], ti["end_date"]) for t, ti in later_tis.items()}
