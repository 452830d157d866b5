"""
# Full retrain of the two-tower recommender

Weekly (Sundays 03:00 UTC) and on demand. Daily fine-tunes start from yesterday's weights; a retrain
from scratch resets any drift that accumulates. It goes through the same evaluation and deploy gate
as a daily candidate (`recsys.retrain`, also `recsys retrain` on the command line):

1. **train_from_scratch**: a fresh model on the feature partitions of the last **Window (days)** days
   (default `RECSYS_RETRAIN_WINDOW_DAYS`, 90) ending at **End date** (default: the newest processed
   date); the end date's held-out users are left out.
2. **evaluate**: the retrained version and the champion on the end date's held-out users, with the
   thresholds of the daily gate (`RECSYS_MIN_RECALL`, `RECSYS_MAX_REGRESSION`, `RECSYS_MIN_EVAL_USERS`).
   The decision is recorded in the registry under `retrains` and in its history, blessed or not.
3. **deploy_if_blessed** / **deploy**: only a blessed retrain becomes champion (exported, indexed,
   pointer switched). A rejected retrain is not used as the starting point of later fine-tunes.

Retrains are independent of each other (no `depends_on_past`); a retry of the same run reuses the
version it trained. Do not end a retrain before the champion's training day (refused: later fine-tunes
replay older days, held-out users included, so the comparison would be unfair).

Failures alert through `RECSYS_NOTIFY_BACKEND` like every recsys task.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

if str(Path(__file__).resolve().parent) not in sys.path:  # the shared glue next to this file
    sys.path.append(str(Path(__file__).resolve().parent))
import recsys_dag_support as support

DAG_ID = "recsys_full_retrain"


def _step(step: str, version: int | None = None) -> dict[str, Any]:
    """Run one ``recsys.retrain`` step; domain errors fail the task without retry."""
    from datetime import date

    from recsys import retrain
    from recsys.errors import DOMAIN_ERRORS
    from recsys.storage import open_store

    context = get_current_context()
    params, run_id = context["params"], context["run_id"]
    try:
        settings = support.settings()
        store = open_store(settings)
        if step == "train":
            end = date.fromisoformat(params["end_date"]) if params.get("end_date") else None
            window = params.get("window_days")
            return retrain.train(store, settings, end, int(window) if window else None, run_id=run_id)
        if step == "evaluate" and version is not None:
            return retrain.evaluate(store, settings, version, run_id=run_id)
        if step == "deploy" and version is not None:
            return retrain.deploy(store, settings, version, run_id=run_id)
    except DOMAIN_ERRORS as err:
        raise AirflowFailException(f"full retrain {step} failed: {err}") from err
    raise AirflowFailException(f"unknown step {step!r}")


@dag(
    dag_id=DAG_ID,
    schedule=CronTriggerTimetable("0 3 * * 0", timezone="UTC"),
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "training", "full-retrain"],
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=1),
        **support.failure_callbacks(),
    },
    params={
        "end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="End date",
            description="Last partition date (YYYY-MM-DD) to train on; it must have been processed. Empty: the "
            "newest processed date.",
        ),
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Window (days)",
            description="How many days of partitions, ending at the end date, the model trains on. Empty: "
            "RECSYS_RETRAIN_WINDOW_DAYS (90).",
        ),
    },
)
def recsys_full_retrain() -> None:
    @task
    def train_from_scratch() -> dict[str, Any]:
        return _step("train")

    @task
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        return _step("evaluate", int(trained["version"]))

    @task.short_circuit
    def deploy_if_blessed(decision: dict[str, Any]) -> bool:
        """Skip the deploy unless the retrain was blessed (the reason is in the registry)."""
        return bool(decision["blessed"])

    @task
    def deploy(decision: dict[str, Any]) -> dict[str, Any]:
        return _step("deploy", int(decision["candidate_version"]))

    decision = evaluate(train_from_scratch())
    deploy_if_blessed(decision) >> deploy(decision)


recsys_full_retrain()
