"""A real Airflow for end-to-end tests: ``airflow api-server``, ``dag-processor`` and ``scheduler`` as subprocesses.

They run in an Airflow home of their own, on a throwaway PostgreSQL (tests/postgres.py): with a scheduler, a
DAG processor, an api-server and the CLI writing at once, SQLite answers "database is locked". The executor is
the LocalExecutor, or, given a Redis broker (tests/redis_server.py), the CeleryExecutor of the Celery provider
with ``airflow celery worker`` processes started by :meth:`AirflowStack.start_celery_worker`, one per queue.
The home is initialised by scripts/airflow-init.sh, as a deployment's is (schema and the registry pool).
:class:`AirflowStack` starts and stops the servers and talks to them through the CLI and the REST API; every
wait has a time limit; the servers, the workers and every process they started are killed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW_INIT = REPO_ROOT / "scripts" / "airflow-init.sh"
DAG_ID = "recsys_incremental_update"

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
    # a missing partition fails fast
    "RECSYS_SENSOR_POKE_SECONDS": "5",
    "RECSYS_SENSOR_TIMEOUT_SECONDS": "30",
    "RECSYS_PARTITION_LATE_HOUR": "none",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
SERVERS = ("api-server", "dag-processor", "scheduler")
WORKER_START_TIMEOUT = 120  # s: `airflow celery worker` connected to the broker and consuming its queue

# Celery workers of one stack share this machine, so each names itself: a module in the home's config/ folder
# (on the sys.path of every Airflow process and of the task processes they fork) gives Airflow's
# [core] hostname_callable the worker's name, which Airflow records as the task instance's hostname.
WORKER_NAME_VARIABLE = "AIRFLOW_STACK_WORKER_NAME"
HOSTNAME_MODULE = "airflow_stack_hostname"
HOSTNAME_SOURCE = f'''"""The task instance hostname of a test Celery worker (written by tests/airflow_stack.py)."""
import os


def hostname() -> str:
    return os.environ["{WORKER_NAME_VARIABLE}"]
'''


def ts(value: str | None) -> datetime:
    assert value, "expected a timestamp"
    return datetime.fromisoformat(value)


class AirflowStack:
    """The running servers of one Airflow home and the ways the tests talk to them."""

    def __init__(self, home: Path, store_root: Path, env: dict[str, str], api_url: str) -> None:
        self.home, self.store_root, self.env, self.api_url = home, store_root, env, api_url
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    # --- processes -----------------------------------------------------------------------------------
    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """``airflow args...`` as ``name`` (log: ``<home>/<name>.log``), in the stack's environment plus ``env``."""
        log = open(self.home / f"{name}.log", "w")  # closed below: the child keeps its own copy
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=self.env | (env or {}),
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

    def runs(self, run_type: str) -> dict[str, dict]:
        """The DAG's runs of ``run_type`` (backfill, scheduled, manual) by partition date (of the logical date)."""
        runs = self.rest("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return {r["logical_date"][:10]: r for r in runs if r["run_type"] == run_type}

    def backfill_runs(self) -> dict[str, dict]:
        """The DAG's backfill runs by partition date (``YYYY-MM-DD`` of the logical date)."""
        return self.runs("backfill")

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

    def diagnostics(self, run_type: str = "backfill") -> str:
        """Runs, task states, the failed tasks' log tails and the scheduler's: for a failure message."""
        lines = []
        try:
            for day, run in sorted(self.runs(run_type).items()):
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

    def wait(self, what: str, check: Callable[[], Any], timeout: float, run_type: str = "backfill") -> Any:
        """Poll ``check`` until it returns something truthy; fail after ``timeout`` s with the diagnostics."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f} s\n{self.diagnostics(run_type)}", pytrace=False)
            time.sleep(POLL_SECONDS)


    def init(self) -> None:
        """scripts/airflow-init.sh: the schema and the registry pool (as a deployment's init)."""
        out = subprocess.run([str(AIRFLOW_INIT)], capture_output=True, text=True, timeout=300,
                             env=self.env | {"AIRFLOW": str(BIN / "airflow")})
        assert out.returncode == 0, f"scripts/airflow-init.sh exited {out.returncode}:\n{out.stderr[-5000:]}"

    def start_servers(self, *names: str) -> None:
        """Start ``names`` (default: all three); wait until the API answers, the DAG is parsed and, if it was
        started, the scheduler is healthy."""
        for name in names or SERVERS:
            if name == "api-server":
                port = urllib.parse.urlsplit(self.api_url).port
                self.start(name, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
            else:
                self.start(name, name)

        def ready() -> bool:
            try:
                health = self.rest("GET", "/api/v2/monitor/health")
                self.rest("GET", f"/api/v2/dags/{DAG_ID}")
            except (OSError, AssertionError):
                return False
            return "scheduler" not in self.procs or health["scheduler"]["status"] == "healthy"

        self.wait("the api-server up, the DAG parsed (and the scheduler healthy)", ready, START_TIMEOUT)

    def start_celery_worker(self, queue: str) -> str:
        """Start ``airflow celery worker --queues <queue>`` (one task at a time) named ``<queue>@<this host>``.

        The name is its Celery hostname (``--celery-hostname``) and the hostname Airflow records on the task
        instances it runs. Returns the name; :meth:`wait_for_workers` waits until the workers consume.
        """
        assert self.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", "the stack has no broker: see airflow_stack()"
        config = self.home / "config"
        config.mkdir(exist_ok=True)
        (config / f"{HOSTNAME_MODULE}.py").write_text(HOSTNAME_SOURCE)
        name = f"{queue}@{socket.gethostname()}"
        self.start(
            f"worker-{queue}",
            "celery", "worker",
            "--queues", queue,
            "--celery-hostname", name,
            "--concurrency", "1",  # 2 cores: the runs are one at a time and their tasks in sequence
            "--pid", str(self.home / f"worker-{queue}.pid"),
            "--without-mingle", "--without-gossip",  # no chatter between the workers: a quicker start
            env={
                WORKER_NAME_VARIABLE: name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{HOSTNAME_MODULE}.hostname",
                # each worker serves its task logs on a port of its own
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            },
        )  # fmt: skip
        return name

    def wait_for_workers(self) -> None:
        """Wait until every started Celery worker says it is ready (its log's ``celery@... ready.`` line)."""

        def ready() -> bool:
            workers = [n for n in self.procs if n.startswith("worker-")]
            logs = [(self.home / f"{n}.log").read_text(errors="replace") for n in workers]
            return all(" ready." in text for text in logs)

        self.wait("the Celery workers to be ready", ready, WORKER_START_TIMEOUT)


def executor_env(metadata_db: str, broker_url: str | None) -> dict[str, str]:
    """The LocalExecutor (preloading, as scripts/env.sh sets it), or with a broker the Celery provider's
    CeleryExecutor (results in the metadata DB)."""
    if broker_url is None:
        # the embedded setup's executor (scripts/env.sh): the LocalExecutor with the heavy libraries preloaded
        return {"AIRFLOW__CORE__EXECUTOR": "recsys_airflow.executor.PreloadingLocalExecutor"}
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_db}",
    }


def stack_env(
    home: Path, store_root: Path, metadata_db: str, api_url: str, broker_url: str | None = None, **recsys: str
) -> dict[str, str]:
    """The servers' environment: this process's without AIRFLOW*/RECSYS_*, plus the stack's and ``recsys``."""
    return (
        {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
        | SCHEDULER_ENV
        | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "AIRFLOW__CORE__PARALLELISM": "2",  # the machine has 2 cores; runs are one at a time anyway
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # as scripts/env.sh
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
        | executor_env(metadata_db, broker_url)
        | {f"RECSYS_{k.upper()}": v for k, v in recsys.items()}
    )


@contextlib.contextmanager
def airflow_stack(
    home: Path, store_root: Path, metadata_db: str, broker_url: str | None = None, **recsys: str
) -> Iterator[AirflowStack]:
    """An :class:`AirflowStack` of ``home`` (nothing started yet); every server it started is killed afterwards.

    ``broker_url``: a Redis URL (tests/redis_server.py) for the CeleryExecutor; without it, the LocalExecutor.
    ``recsys``: extra ``RECSYS_*`` settings of all servers and tasks, e.g. ``schedule_start="2010-12-01"``.
    """
    api_url = f"http://127.0.0.1:{free_port()}"
    env = stack_env(home, store_root, metadata_db, api_url, broker_url, **recsys)
    airflow = AirflowStack(home, store_root, env, api_url)
    try:
        yield airflow
    finally:
        airflow.stop()
