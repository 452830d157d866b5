"""
# Incremental update of the two-tower recommender

One run per daily partition of user-behaviour events, in date order, each exactly once:

1. **wait_for_partition**: waits (in reschedule mode, so no worker slot is held) until
   `raw/events/dt=<date>/_SUCCESS` exists in the partition store.
2. **validate**: Great Expectations suite `expectations/raw_events.json`; on failure the partition is
   quarantined, this run fails without retries, the champion stays, later dates wait.
3. **build_features**: cleaning (counted), append-only vocabularies, train/holdout examples.
4. **fine_tune**: restores the previous day's checkpoint, grows its tables, trains on the day plus a
   replay sample (cold start on the first partition).
5. **evaluate**: candidate and champion on the same held-out users; the decision and its reason go
   to the registry either way.
6. **deploy_if_blessed** / **deploy**: only a blessed candidate is exported, indexed and made champion.

The partition date is the run's logical date (for scheduled runs, the start of the day's data
interval). To reprocess a
date by hand, trigger the DAG with the **Partition date** parameter; every task is idempotent, so
rerunning a processed date changes nothing.

Configuration: `RECSYS_*` environment variables of the workers (see the README).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

DAG_ID = "recsys_incremental_update"


def _partition_date(context: Any) -> Any:
    """The ``partition_date`` param if set, else the run's logical date, as a ``date``.

    Scheduled runs use a data-interval timetable, so their logical date is the start of the day they
    process; a manual run's logical date is the date the operator picked.
    """
    from datetime import date

    explicit = context["params"].get("partition_date")
    if explicit:
        return date.fromisoformat(explicit)
    logical = context.get("logical_date")
    if logical is None:
        raise AirflowFailException(
            "this run has no logical date: trigger it with the 'Partition date' parameter set"
        )
    return logical.date()


def _run_step(step: str) -> dict[str, Any]:
    """Run one recsys step for this run's partition date; domain errors fail the task without retry."""
    from recsys.config import Settings
    from recsys.errors import DOMAIN_ERRORS
    from recsys.storage import open_store

    context = get_current_context()
    day = _partition_date(context)
    run_id = context["run_id"]
    try:
        settings = Settings.from_env()
        store = open_store(settings)
        if step == "validate":
            from recsys.validation import validate_partition

            report = validate_partition(store, day)
            return {"date": day.isoformat(), "success": report.success, "rows": report.rows,
                    "report": store.uri(report.report_path)}
        if step == "features":
            from recsys.features import build_features

            return build_features(store, day, settings.holdout_fraction).as_dict()
        if step == "train":
            from recsys.training import fine_tune

            return fine_tune(store, settings, day, run_id=run_id)
        if step == "evaluate":
            from recsys.evaluation import evaluate_candidate

            return evaluate_candidate(store, settings, day, run_id=run_id)
        if step == "deploy":
            from recsys.serving.deploy import deploy

            return deploy(store, settings, day, run_id=run_id)
    except DOMAIN_ERRORS as err:
        raise AirflowFailException(f"{step} of {day} failed: {err}") from err
    raise AirflowFailException(f"unknown step {step!r}")


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "training", "incremental"],
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=1),
        # each fine-tune starts from the day before: a date waits until the previous one succeeded
        "depends_on_past": True,
    },
    params={
        "partition_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Partition date",
            description="Process this date (YYYY-MM-DD) instead of the run's data interval start. "
            "Use it to rerun a date by hand; rerunning a processed date changes nothing.",
        ),
    },
)
def recsys_incremental_update() -> None:
    @task.sensor(poke_interval=60, timeout=timedelta(hours=12), mode="reschedule")
    def wait_for_partition() -> bool:
        """True once the partition's ``_SUCCESS`` marker exists."""
        import logging

        from recsys.config import Settings
        from recsys.storage import layout, open_store

        day = _partition_date(get_current_context())
        store = open_store(Settings.from_env())
        partition = layout.raw_events(day)
        complete = store.is_complete(partition)
        logging.getLogger(__name__).info(
            "partition %s %s", store.uri(partition), "is complete" if complete else "has no _SUCCESS marker yet"
        )
        return complete

    @task
    def validate() -> dict[str, Any]:
        return _run_step("validate")

    @task
    def build_features() -> dict[str, Any]:
        return _run_step("features")

    @task
    def fine_tune() -> dict[str, Any]:
        return _run_step("train")

    @task
    def evaluate() -> dict[str, Any]:
        return _run_step("evaluate")

    @task.short_circuit
    def deploy_if_blessed(decision: dict[str, Any]) -> bool:
        """Skip the deploy unless the candidate was blessed (the reason is in the registry)."""
        return bool(decision["blessed"])

    @task
    def deploy() -> dict[str, Any]:
        return _run_step("deploy")

    decision = evaluate()
    wait_for_partition() >> validate() >> build_features() >> fine_tune() >> decision
    deploy_if_blessed(decision) >> deploy()


recsys_incremental_update()
