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
API (tests/airflow_stack.py). Every wait has a time limit; the servers and every process they started are
killed afterwards.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest

from tests.airflow_stack import BIN, DAG_ID, RUN_TIMEOUT, AirflowStack, airflow_stack, ts
from tests.postgres import throwaway_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

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


LOCKS = "registry/locks/"  # lease files of the store locks (recsys.storage.lock): bookkeeping, a few kept per lock


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest), the locks' lease files left out."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(LOCKS)
    }


@pytest.fixture(scope="module")
def metadata_db():
    """Airflow's metadata database: a throwaway PostgreSQL server's ``airflow`` database (its URL)."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def stack(metadata_db, tmp_path_factory):
    """Landed days, an initialised Airflow home, the three servers running and the DAG parsed (paused, as new
    DAGs are).

    The scheduler's catchup is off (RECSYS_SCHEDULE_CATCHUP): the dates are the operator's backfills, and
    unpausing creates only the latest interval's scheduled run (no partition: its sensor fails after
    RECSYS_SENSOR_TIMEOUT_SECONDS). tests/e2e/test_catchup_scheduler.py has the scheduler's own catchup.
    """
    home = tmp_path_factory.mktemp("airflow-home")
    store_root = tmp_path_factory.mktemp("store")
    with airflow_stack(home, store_root, metadata_db, schedule_catchup="false") as airflow:
        land = subprocess.Popen(  # upstream publishes the days while Airflow's schema is created
            [str(BIN / "recsys"), "land", "--from", FIRST_DAYS[0], "--days", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=airflow.env,
        )
        airflow.init()
        out, err = land.communicate(timeout=300)
        assert land.returncode == 0, err[-3000:]
        assert [d["date"] for d in json.loads(out)] == [*FIRST_DAYS, BAD_DAY, LATER_DAY]
        airflow.start_servers()
        yield airflow


def _fail_fast(stack: AirflowStack, runs: dict[str, dict], days: list[str]) -> None:
    failed = [d for d in days if d in runs and runs[d]["state"] == "failed"]
    if failed:
        pytest.fail(f"backfill runs failed: {failed}\n{stack.diagnostics()}", pytrace=False)


def _first_start_last_end(tis: dict[str, dict]) -> tuple[datetime, datetime]:
    ran = [ti for ti in tis.values() if ti["start_date"] and ti["end_date"]]
    return min(ts(ti["start_date"]) for ti in ran), max(ts(ti["end_date"]) for ti in ran)


def _held_run_not_started(stack: AirflowStack, runs: dict[str, dict]) -> None:
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
        assert ts(runs[after]["start_date"]) >= ts(runs[before]["end_date"]), (before, after, runs)
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

    def failed_and_next_waiting() -> bool:
        runs = stack.backfill_runs()
        if BAD_DAY in runs and runs[BAD_DAY]["state"] == "success":
            pytest.fail(f"the broken {BAD_DAY} passed\n{stack.diagnostics()}", pytrace=False)
        _held_run_not_started(stack, runs)
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
    stack.hold(lambda: _held_run_not_started(stack, stack.backfill_runs()))
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
        _held_run_not_started(stack, runs)

    stack.hold(deadlocked)
    assert any("queued" in r for r in stack.waiting_reasons(bad_run, "validate"))
    # the way out: put the waiting later run back in the queue too (REST; the UI offers only success/failed);
    # the backfill then starts its queued runs in date order, one at a time
    stack.rest("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(later_run, safe='')}", {"state": "queued"})

    def both_succeeded() -> bool:
        runs = stack.backfill_runs()
        _fail_fast(stack, runs, [BAD_DAY, LATER_DAY])
        if runs[BAD_DAY]["state"] != "success":
            _held_run_not_started(stack, runs)
        return runs[BAD_DAY]["state"] == runs[LATER_DAY]["state"] == "success"

    stack.wait(f"{BAD_DAY} and then {LATER_DAY} to succeed", both_succeeded, 2 * RUN_TIMEOUT)
    bad_tis, later_tis = stack.task_instances(bad_run), stack.task_instances(later_run)
    assert ts(later_tis["validate"]["start_date"]) >= _first_start_last_end(bad_tis)[1]
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
