"""Catchup after an outage, on a real Airflow (tests/airflow_stack.py: api-server, DAG processor and scheduler
with the LocalExecutor on a throwaway PostgreSQL).

The daily schedule starts at 2010-12-01 (``RECSYS_SCHEDULE_START``). The scheduler is down while upstream
lands three days (2010-12-01..03, real Online Retail days); when it comes back, it must create and run every
missed date by itself, oldest first, one at a time, each date trained from the model of the day before, and
stop at the first date without a partition (2010-12-04, a Saturday: its sensor gives up, and the runs after
it would wait for it: no flood of runs). With ``catchup=False`` it would run only the latest interval.
The registry pool went missing too: the recsys plugin's scheduler listener creates it (else every
registry-writing task would stay "scheduled" for ever).
"""

from __future__ import annotations

import itertools
import json
import subprocess

import airflow.sdk  # noqa: F401 - puts plugins/ on sys.path
import pytest
from recsys_airflow.dag_support import REGISTRY_POOL
from recsys_airflow.pool_guard import CREATED_DESCRIPTION

from tests.airflow_stack import BIN, DAG_ID, RUN_TIMEOUT, airflow_stack, ts
from tests.postgres import throwaway_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MISSED = ["2010-12-01", "2010-12-02", "2010-12-03"]
NO_PARTITION = "2010-12-04"
WRITERS = {"validate", "fine_tune", "evaluate", "deploy_if_blessed", "deploy"}


def test_after_an_outage_the_scheduler_runs_every_missed_date_in_order(tmp_path):
    from recsys import registry
    from recsys.storage.local import LocalStore

    store_root = tmp_path / "store"
    store_root.mkdir()
    with throwaway_postgres() as metadata_db, airflow_stack(
        tmp_path / "airflow-home", store_root, metadata_db, schedule_start=MISSED[0]
    ) as stack:
        stack.home.mkdir()
        # the outage: no scheduler while the DAG is deployed and upstream lands the days
        land = subprocess.Popen([str(BIN / "recsys"), "land", "--from", MISSED[0], "--days", str(len(MISSED))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=stack.env)
        stack.init()
        stack.start_servers("api-server", "dag-processor")
        # and the metadata database came back without the registry pool (restored from an older dump):
        # the recsys plugin's listener in the scheduler creates it when the first run starts
        stack.rest("DELETE", f"/api/v2/pools/{REGISTRY_POOL}", ok=(204,))
        out, err = land.communicate(timeout=300)
        assert land.returncode == 0, err[-3000:]
        assert [d["date"] for d in json.loads(out)] == MISSED
        stack.rest("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        stack.start("scheduler", "scheduler")  # back from the outage

        def missed_dates_ran() -> bool:
            runs = stack.runs("scheduled")
            failed = [d for d in MISSED if runs.get(d, {}).get("state") == "failed"]
            if failed:
                pytest.fail(f"scheduled runs failed: {failed}\n{stack.diagnostics('scheduled')}", pytrace=False)
            return all(runs.get(d, {}).get("state") == "success" for d in MISSED)

        stack.wait("the scheduler to run the missed dates", missed_dates_ran, RUN_TIMEOUT * len(MISSED), "scheduled")
        runs = stack.runs("scheduled")
        # nothing but the missed dates and the first date without a partition (one run at a time: no flood)
        assert set(runs) <= {*MISSED, NO_PARTITION}, sorted(runs)
        for before, after in itertools.pairwise(MISSED):  # one at a time, oldest first
            assert ts(runs[after]["start_date"]) >= ts(runs[before]["end_date"]), (before, after)
        tis = stack.task_instances(runs[MISSED[0]]["dag_run_id"])
        assert {t for t, ti in tis.items() if ti["pool"] == REGISTRY_POOL} == WRITERS, tis
        pool = stack.rest("GET", f"/api/v2/pools/{REGISTRY_POOL}")
        assert (pool["slots"], pool["description"]) == (1, CREATED_DESCRIPTION)

    reg = registry.load(LocalStore(store_root))
    assert sorted(reg["decisions"]) == MISSED
    # each date fine-tuned from the model of the day before: version n was trained on the n-th date
    assert sorted((meta["trained_on"], int(v)) for v, meta in reg["versions"].items()) == [
        (day, n) for n, day in enumerate(MISSED, start=1)
    ]
    for day in MISSED:  # decided by that date's scheduled run
        decided = [h["run_id"] for h in reg["history"] if h["action"] in ("blessed", "rejected") and h["date"] == day]
        assert decided == [runs[day]["dag_run_id"]], (day, decided)
