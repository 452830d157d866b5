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

from datetime import date, timedelta
from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task
from recsys_airflow import assets
from recsys_airflow import dag_support as support

DAG_ID = "recsys_full_retrain"
# read when this file is parsed: the queue of the training task and the champion asset (its store)
SETTINGS = support.settings_without_alerts()
TRAINING_QUEUE = support.training_queue(SETTINGS)
CHAMPION = assets.champion(SETTINGS)


@dag(
    dag_id=DAG_ID,
    schedule=CronTriggerTimetable("0 3 * * 0", timezone="UTC"),
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "training", "full-retrain"],
    default_args=support.default_args(retry_delay=timedelta(minutes=1)),
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
    @task(**TRAINING_QUEUE, **support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def train_from_scratch() -> dict[str, Any]:
        from recsys import retrain

        step = support.current_step()
        end, window = step.params.get("end_date"), step.params.get("window_days")
        return retrain.train(step.store, step.settings, date.fromisoformat(end) if end else None,
                             int(window) if window else None, run_id=step.run_id)

    @task(**support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        from recsys import retrain

        step = support.current_step()
        return retrain.evaluate(step.store, step.settings, int(trained["version"]), run_id=step.run_id)

    @task.short_circuit
    def deploy_if_blessed(decision: dict[str, Any]) -> bool:
        """Skip the deploy unless the retrain was blessed (the reason is in the registry)."""
        return bool(decision["blessed"])

    @task(outlets=[CHAMPION], **support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def deploy(decision: dict[str, Any]) -> dict[str, Any]:
        from recsys import retrain

        step = support.current_step()
        result = retrain.deploy(step.store, step.settings, int(decision["candidate_version"]), run_id=step.run_id)
        return support.champion_event(CHAMPION, result)

    decision = evaluate(train_from_scratch())
    deploy_if_blessed(decision) >> deploy(decision)  # type: ignore[arg-type]  # an XComArg: its value at run time


recsys_full_retrain()
