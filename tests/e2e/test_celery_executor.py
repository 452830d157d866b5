"""The incremental DAG on a real CeleryExecutor: two dates run by two Celery workers listening on two queues.

Everything production has, on loopback: Debian's ``redis-server`` as the broker (tests/redis_server.py, a free
port, no persistence), the metadata database (and Celery's results) on a throwaway PostgreSQL
(tests/postgres.py), ``airflow scheduler``, ``dag-processor`` and ``api-server``, and two workers of the
Airflow Celery provider: ``airflow celery worker --queues default`` and ``--queues training``, each with its
own ``--celery-hostname`` (tests/airflow_stack.py). The DAG is parsed with ``RECSYS_TRAINING_QUEUE=training``,
so ``fine_tune`` goes to the training worker and every other task to the default one
(``[operators] default_queue``).

The operator backfills two Online Retail days (REST, as ``airflow backfill create`` does); the tests check
that every task ran and succeeded, on the worker of its queue (the task instance's ``queue`` and
``hostname``, and the workers' own logs), in order: within a date in the order of its dependencies, and
the second date only after the first one ended. Unpausing also creates the run of the latest day, whose
partition never lands: its sensor fails at its first look after ``RECSYS_SENSOR_TIMEOUT_SECONDS=1``.

One stack for the module (about a minute to start, a minute per date on a quiet 2-core machine); every wait
has a time limit, and the servers, the workers, Redis and PostgreSQL are stopped afterwards.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import pytest

from tests.airflow_stack import BIN, DAG_ID, RUN_TIMEOUT, AirflowStack, airflow_stack, ts
from tests.postgres import throwaway_postgres
from tests.redis_server import throwaway_redis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAYS = ["2010-12-01", "2010-12-02"]
DEFAULT_QUEUE, TRAINING_QUEUE = "default", "training"
TRAINING_TASKS = {"fine_tune"}  # the incremental DAG's training task (the full retrain's is in another DAG)
# a Celery worker's log line for each task instance it runs (the provider's execute_workload)
WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='([^']+)', dag_id='[^']+', run_id='([^']+)'")
# the tasks of a date in the order of their dependencies (a straight line)
CHAIN = [
    "wait_for_partition",
    "validate",
    "build_features",
    "fine_tune",
    "evaluate",
    "deploy_if_blessed",
    "deploy",
    "refresh_serving_index",
]


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    """Landed days, an initialised Airflow home, the three servers and two Celery workers (one per queue) up.

    Yields the stack and the workers' names by queue.
    """
    home = tmp_path_factory.mktemp("airflow-home")
    store_root = tmp_path_factory.mktemp("store")
    with (
        throwaway_postgres() as metadata_db,
        throwaway_redis() as broker_url,
        airflow_stack(
            home,
            store_root,
            metadata_db,
            broker_url,
            schedule_catchup="false",
            training_queue=TRAINING_QUEUE,
            sensor_timeout_seconds="1",  # the latest day's run (created by unpausing) fails at its first look
        ) as airflow,
    ):
        land = subprocess.Popen(  # upstream publishes the days while Airflow's schema is created
            [str(BIN / "recsys"), "land", "--from", DAYS[0], "--days", str(len(DAYS))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=airflow.env,
        )
        airflow.init()
        out, err = land.communicate(timeout=300)
        assert land.returncode == 0, err[-3000:]
        assert [d["date"] for d in json.loads(out)] == DAYS
        workers = {queue: airflow.start_celery_worker(queue) for queue in (DEFAULT_QUEUE, TRAINING_QUEUE)}
        airflow.start_servers()
        airflow.wait_for_workers()
        yield airflow, workers


@pytest.fixture(scope="module")
def ran(celery_stack):
    """Backfill both days and wait until they succeeded; the runs and their task instances by date."""
    stack, _ = celery_stack
    stack.rest(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": DAG_ID,
            "from_date": f"{DAYS[0]}T00:00:00Z",
            "to_date": f"{DAYS[-1]}T00:00:00Z",
            "reprocess_behavior": "failed",
            "max_active_runs": 1,
        },
    )
    stack.rest("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})

    def both_succeeded() -> bool:
        runs = stack.backfill_runs()
        failed = [d for d in DAYS if d in runs and runs[d]["state"] == "failed"]
        if failed:
            pytest.fail(f"backfill runs failed: {failed}\n{_diagnostics(stack)}", pytrace=False)
        return all(d in runs and runs[d]["state"] == "success" for d in DAYS)

    stack.wait(f"the backfill of {DAYS[0]}..{DAYS[-1]} to succeed", both_succeeded, RUN_TIMEOUT * len(DAYS))
    runs = stack.backfill_runs()
    return runs, {day: stack.task_instances(runs[day]["dag_run_id"]) for day in DAYS}


def _diagnostics(stack: AirflowStack) -> str:
    return stack.diagnostics() + "\n" + "\n".join(stack.log_tail(n, 15) for n in stack.procs if n.startswith("worker-"))


def test_every_task_of_both_dates_ran_and_succeeded(ran):
    runs, tis = ran
    assert sorted(runs) == DAYS
    for day in DAYS:
        states = {t: ti["state"] for t, ti in tis[day].items()}
        assert sorted(states) == sorted(CHAIN), (day, states)
        # deploy is skipped (never queued) when the evaluation did not bless the candidate; all else succeeds
        assert all(s == "success" for t, s in states.items() if t != "deploy"), (day, states)
        assert states["deploy"] in ("success", "skipped"), (day, states)
    assert tis[DAYS[0]]["deploy"]["state"] == "success"  # the first candidate is blessed: there is no champion


def test_each_task_ran_on_the_worker_of_its_queue(celery_stack, ran):
    stack, workers = celery_stack
    runs, tis = ran
    executed: dict[str, set[tuple[str, str]]] = {queue: set() for queue in workers}
    for day in DAYS:
        for task_id, ti in tis[day].items():
            if ti["state"] == "skipped":  # a short-circuited deploy is never queued
                continue
            queue = TRAINING_QUEUE if task_id in TRAINING_TASKS else DEFAULT_QUEUE
            assert (ti["queue"], ti["hostname"]) == (queue, workers[queue]), (day, task_id, ti)
            executed[queue].add((ti["dag_run_id"], task_id))
    assert {t for _, t in executed[TRAINING_QUEUE]} == TRAINING_TASKS
    # the workers' own logs agree: each received the task instances of its queue, and only those
    backfill_runs = {run["dag_run_id"] for run in runs.values()}
    for queue in workers:
        received = _received(stack, queue)
        assert {r for r in received if r[0] in backfill_runs} == executed[queue], queue


def _received(stack: AirflowStack, queue: str) -> set[tuple[str, str]]:
    """(run id, task id) of every workload the worker of ``queue`` logged as executing."""
    log = (stack.home / f"worker-{queue}.log").read_text(errors="replace")
    return {(run_id, task_id) for task_id, run_id in WORKLOAD.findall(log)}


def test_the_dates_ran_in_order_and_each_date_in_the_order_of_its_tasks(ran):
    runs, tis = ran
    for day in DAYS:
        done = [t for t in CHAIN if tis[day][t]["state"] == "success"]
        for before, after in itertools.pairwise(done):
            assert ts(tis[day][after]["start_date"]) >= ts(tis[day][before]["end_date"]), (day, before, after)
    first, second = DAYS
    assert ts(runs[second]["start_date"]) >= ts(runs[first]["end_date"]), runs
    first_end = max(ts(ti["end_date"]) for ti in tis[first].values() if ti["end_date"])
    assert min(ts(ti["start_date"]) for ti in tis[second].values() if ti["start_date"]) >= first_end


def test_the_registry_has_one_version_and_one_decision_per_date_in_date_order(celery_stack, ran):
    from recsys import registry
    from recsys.storage.local import LocalStore

    stack, _ = celery_stack
    runs, _ = ran
    reg = registry.load(LocalStore(stack.store_root))
    assert sorted((meta["trained_on"], int(v)) for v, meta in reg["versions"].items()) == [
        (day, n) for n, day in enumerate(DAYS, start=1)
    ]
    for day in DAYS:
        decided = [h for h in reg["history"] if h["action"] in ("blessed", "rejected") and h["date"] == day]
        assert [h["run_id"] for h in decided] == [runs[day]["dag_run_id"]], (day, decided)
