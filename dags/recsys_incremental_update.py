"""
# Incremental update of the two-tower recommender

One run per daily partition of user-behaviour events, in date order, each exactly once:

1. **wait_for_partition**: waits (in reschedule mode, so no worker slot is held between looks) until
   `raw/events/dt=<date>/_SUCCESS` exists in the partition store. On HDFS
   (`RECSYS_STORAGE_BACKEND=webhdfs`) this is the HDFS provider's `WebHdfsSensor` on the marker's path,
   through the Airflow connection `RECSYS_WEBHDFS_CONN_ID` (default `webhdfs_default`); on the local
   store, a sensor that asks the store. It looks every `RECSYS_SENSOR_POKE_SECONDS` (default 60) and
   fails the run after `RECSYS_SENSOR_TIMEOUT_SECONDS` (default 43200, 12 hours). If the marker is still
   missing at `RECSYS_PARTITION_LATE_HOUR` (UTC, default 6) on the day after the partition date, it sends
   one lateness alert and keeps waiting.
2. **validate**: Great Expectations suites `expectations/raw_events.json` and `catalog.json`; the summary
   goes to `reports/validation/dt=<date>/summary.json` and the Data Docs to
   `reports/validation/site/index.html`. On failure the partition is quarantined, this run fails without
   retries naming the failing expectations, the champion stays, later dates wait (`depends_on_past`).
   On-call can accept a failed partition anyway: rerun the date with **Accept invalid partition** and an
   **Acceptance reason** (recorded in the registry history). **Force re-validation** runs the suites again
   on a delivery that passed before (recorded too).
3. **build_features**: cleaning (counted), append-only vocabularies, train/holdout examples.
4. **fine_tune**: restores the previous day's checkpoint, grows its tables, trains on the day plus a
   replay sample (cold start on the first partition).
5. **evaluate**: candidate and champion on the same held-out users; the decision and its reason go
   to the registry either way.
6. **deploy_if_blessed** / **deploy**: only a blessed candidate is exported, indexed and made champion.
   On-call may override the gate with **Deploy decision** = `skip` or `force` and a **Deploy override
   reason** (recorded in the registry history with the run id; a forced date's decision becomes blessed).
7. **refresh_serving_index**: runs whether or not a deploy happened; applies the newest catalog
   snapshot to the champion's serving index, so an item delisted in the day's catalog is never
   recommended again (and a relisted one comes back) without retraining. Skipped before the first
   champion exists.

Alerts: a task that fails for good (a domain error at once, anything else after its retry) sends an
alert through `RECSYS_NOTIFY_BACKEND` (log by default; smtp or webhook, see recsys/notify.py).

Backfill: `airflow backfill create --dag-id recsys_incremental_update --from-date D1 --to-date D2
--reprocess-behavior failed --max-active-runs 1` (Airflow refuses `none` and `--run-backwards` for a DAG with
`depends_on_past`). Runs go in date order; the first failed date stops the rest: the next date's run waits
at `validate` until the failed date succeeds, later dates stay queued. Once fixed, clear the failed date AND
put the waiting run back in the queue (REST PATCH state=queued; never "mark as failed": skipped tasks count as
done for the next date). A date with no
partition (Online Retail has no Saturdays) fails at the sensor's time-out and holds the later dates the same
way; if upstream confirms there is no data for it, mark that run as success (nothing is trained for the
date; the next date fine-tunes from the last model). The README's "Operating the platform" has the details.

The partition date is the run's logical date (for scheduled runs, the start of the day's data
interval). To reprocess a
date by hand, trigger the DAG with the **Partition date** parameter; every task is idempotent, so
rerunning a processed date changes nothing.

Configuration: `RECSYS_*` environment variables of the workers (see the README). The storage backend,
the connection id and the sensor's interval and time-out are also read when this file is parsed (they
choose and set up the sensor), so give the DAG processor the same values.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if str(Path(__file__).resolve().parent) not in sys.path:  # the shared glue next to this file
    sys.path.append(str(Path(__file__).resolve().parent))
import recsys_container_training as container_training
import recsys_dag_support as support

DAG_ID = "recsys_incremental_update"


def _seconds(name: str, default: int) -> int:
    """A positive whole number of seconds from environment variable ``name``; a bad value names it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive whole number of seconds")
    return value


# Read when this file is parsed, because they choose and configure the sensor (recsys.config.Settings
# documents the same variables and validates them again in every task). The connection id is also the
# one the tasks use, so the sensor and the tasks always talk to the same NameNode.
STORAGE_BACKEND = os.environ.get("RECSYS_STORAGE_BACKEND", "local").strip()
WEBHDFS_CONN_ID = os.environ.get("RECSYS_WEBHDFS_CONN_ID", "").strip() or "webhdfs_default"
SENSOR_POKE_SECONDS = _seconds("RECSYS_SENSOR_POKE_SECONDS", 60)
SENSOR_TIMEOUT = timedelta(seconds=_seconds("RECSYS_SENSOR_TIMEOUT_SECONDS", 12 * 3600))


def _partition_day(params: Any, logical_date: Any) -> Any:
    """The ``partition_date`` param if set, else the run's logical date, as a ``date``.

    Scheduled runs use a data-interval timetable, so their logical date is the start of the day they
    process; a manual run's logical date is the date the operator picked.
    """
    day = support.partition_day(params, logical_date)
    if day is None:
        raise AirflowFailException(
            "this run has no logical date: trigger it with the 'Partition date' parameter set"
        )
    return day


def _partition_date(context: Any) -> Any:
    """The partition date of the running task (see :func:`_partition_day`)."""
    return _partition_day(context["params"], context.get("logical_date"))


def _success_marker(params: Any, dag_run: Any) -> str:
    """Absolute HDFS path of the run's ``_SUCCESS`` marker: the ``WebHdfsSensor``'s templated filepath."""
    from recsys.config import Settings
    from recsys.storage import layout

    day = _partition_day(params, dag_run.logical_date)
    root = Settings.from_env().storage_root.rstrip("/")
    return f"{root}/{layout.raw_events(day)}/{layout.SUCCESS}"


def _check_overrides(params: Any) -> None:
    """Refuse a run whose on-call overrides are incomplete before it does any work."""
    mode = params.get("deploy_mode") or "gate"
    if mode != "gate" and not (params.get("deploy_reason") or "").strip():
        raise AirflowFailException(
            f"'Deploy decision' is {mode!r}: set 'Deploy override reason' too (it is recorded in the registry "
            "history); trigger the date again with both"
        )
    if params.get("accept_invalid") and not (params.get("accept_reason") or "").strip():
        raise AirflowFailException(
            "'Accept invalid partition' needs an 'Acceptance reason' (it is recorded in the registry history)"
        )


def _run_step(step: str) -> dict[str, Any]:
    """Run one recsys step for this run's partition date; domain errors fail the task without retry."""
    from recsys.errors import DOMAIN_ERRORS
    from recsys.storage import open_store

    context = get_current_context()
    day = _partition_date(context)
    run_id = context["run_id"]
    params = context["params"]
    if step == "validate":
        _check_overrides(params)
    try:
        settings = support.settings()
        store = open_store(settings)
        if step == "validate":
            from recsys.validation import validate_partition

            report = validate_partition(
                store, day, settings, accept_invalid=bool(params.get("accept_invalid")),
                accept_reason=params.get("accept_reason"), run_id=run_id, force=bool(params.get("force_revalidate")),
            )
            return {"date": day.isoformat(), "success": report.success, "rows": report.rows,
                    "accepted": report.accepted is not None, "report": store.uri(report.report_path),
                    "data_docs": store.uri(report.data_docs.get("index", report.report_path))}
        if step == "features":
            from recsys.features import build_features

            return build_features(store, day, settings).as_dict()
        if step == "train":
            from recsys.training import fine_tune

            return fine_tune(store, settings, day, run_id=run_id)
        if step == "evaluate":
            from recsys.evaluation import evaluate_candidate

            return evaluate_candidate(store, settings, day, run_id=run_id)
        if step == "deploy_gate":
            from recsys import registry

            return registry.deploy_override(
                store, day, params.get("deploy_mode") or "gate", params.get("deploy_reason"), run_id
            )
        if step == "deploy":
            from recsys.serving.deploy import deploy

            return deploy(store, settings, day, run_id=run_id)
        if step == "refresh_index":
            from recsys import registry
            from recsys.serving.deploy import refresh_index

            if registry.load(store)["champion"] is None:
                raise AirflowSkipException("no champion is deployed yet: there is no serving index to refresh")
            return refresh_index(store, run_id=run_id)
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
    user_defined_macros={"recsys_success_marker": _success_marker},
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=1),
        # each fine-tune starts from the day before: a date waits until the previous one succeeded
        "depends_on_past": True,
        **support.failure_callbacks(partitioned=True),
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
        "accept_invalid": Param(
            False,
            type="boolean",
            title="Accept invalid partition",
            description="On-call only: let a partition that failed its expectations through anyway (its "
            "validation report stays failed). Needs an acceptance reason; recorded in the registry history. "
            "Unreadable or redelivered partitions cannot be accepted.",
        ),
        "accept_reason": Param(
            None,
            type=["null", "string"],
            title="Acceptance reason",
            description="Why the failed partition is fine to train on (for example a known promotion "
            "explaining a volume spike). Required with 'Accept invalid partition'.",
        ),
        "force_revalidate": Param(
            False,
            type="boolean",
            title="Force re-validation",
            description="Run the expectations again even if this delivery passed before (for example after the "
            "rules or RECSYS_VALIDATION_* thresholds changed). Recorded in the registry history. A date that now "
            "fails is quarantined and its run fails; what was trained from it stays.",
        ),
        "deploy_mode": Param(
            "gate",
            type="string",
            enum=["gate", "skip", "force"],
            values_display={
                "gate": "gate: deploy only if the evaluation blessed the candidate (normal)",
                "skip": "skip: do not deploy this date's candidate, even if blessed",
                "force": "force: deploy this date's candidate even if the gate rejected it",
            },
            title="Deploy decision",
            description="On-call override of the deploy gate. 'skip' and 'force' need a deploy override reason "
            "and are recorded in the registry history with this run's id.",
        ),
        "deploy_reason": Param(
            None,
            type=["null", "string"],
            title="Deploy override reason",
            description="Why the gate is overridden (for example 'recall dip explained by a holiday; business "
            "approved'). Required when 'Deploy decision' is skip or force.",
        ),
    },
)
def recsys_incremental_update() -> None:
    if STORAGE_BACKEND == "webhdfs":
        wait_for_partition = support.LateAwareWebHdfsSensor(
            task_id="wait_for_partition",
            filepath="{{ recsys_success_marker(params, dag_run) }}",
            webhdfs_conn_id=WEBHDFS_CONN_ID,
            poke_interval=SENSOR_POKE_SECONDS,
            timeout=SENSOR_TIMEOUT,
            mode="reschedule",
            doc_md="True once the partition's `_SUCCESS` marker exists on HDFS (the rendered filepath).",
        )
    else:

        @task.sensor(
            task_id="wait_for_partition",
            poke_interval=SENSOR_POKE_SECONDS,
            timeout=SENSOR_TIMEOUT,
            mode="reschedule",
        )
        def wait_for_local_partition() -> bool:
            """True once the partition's ``_SUCCESS`` marker exists."""
            import logging

            from recsys.config import ConfigError
            from recsys.storage import StorageError, layout, open_store

            context = get_current_context()
            day = _partition_date(context)
            try:
                store = open_store(support.settings())
            except (ConfigError, StorageError) as err:
                raise AirflowFailException(f"cannot open the partition store: {err}") from err
            partition = layout.raw_events(day)
            complete = store.is_complete(partition)
            logging.getLogger(__name__).info(
                "partition %s %s", store.uri(partition), "is complete" if complete else "has no _SUCCESS marker yet"
            )
            if not complete:
                support.alert_if_late(context)
            return complete

        wait_for_partition = wait_for_local_partition()

    @task
    def validate() -> dict[str, Any]:
        return _run_step("validate")

    @task
    def build_features() -> dict[str, Any]:
        return _run_step("features")

    # RECSYS_TRAIN_IN_CONTAINER=docker|kubernetes runs the same step (`recsys train`) in the trainer image
    train = container_training.training_task()
    if train is None:

        @task
        def fine_tune() -> dict[str, Any]:
            return _run_step("train")

        train = fine_tune()

    @task
    def evaluate() -> dict[str, Any]:
        return _run_step("evaluate")

    # ignore_downstream_trigger_rules=False: only deploy is skipped; the index refresh still runs
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def deploy_if_blessed(decision: dict[str, Any]) -> bool:
        """Skip the deploy unless the candidate was blessed, or on-call's Deploy decision says otherwise."""
        import logging

        gate = _run_step("deploy_gate")
        logging.getLogger(__name__).info(
            "candidate v%s of %s: %s (%s)", decision["candidate_version"], decision["date"],
            "deploy" if gate["deploy"] else "no deploy", gate["reason"],
        )
        return bool(gate["deploy"])

    @task
    def deploy() -> dict[str, Any]:
        return _run_step("deploy")

    @task(trigger_rule="none_failed")
    def refresh_serving_index() -> dict[str, Any]:
        """Apply the newest catalog to the champion's serving index (delisted items drop out)."""
        return _run_step("refresh_index")

    decision = evaluate()
    wait_for_partition >> validate() >> build_features() >> train >> decision
    deploy_if_blessed(decision) >> deploy() >> refresh_serving_index()


recsys_incremental_update()
