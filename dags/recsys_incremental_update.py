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

   With `RECSYS_COMPUTE=spark` both steps run as Spark applications (`SparkSubmitOperator`, the job
   `recsys/spark/job.py`) through the Airflow connection `spark_default`: its master (`local[*]`,
   `spark://...`, `yarn`, `k8s://...`) and deploy mode decide where, the `RECSYS_SPARK_*` settings the
   resources. Same outputs, verdicts, overrides and failures as in the worker.
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

Catchup (`RECSYS_SCHEDULE_CATCHUP`, on by default): the scheduler runs every date from `RECSYS_SCHEDULE_START`
(default 2010-12-01, Online Retail's first day; both read when this file is parsed) on, one run at a time in
date order. After an outage (scheduler down, DAG paused) it creates the missed dates' runs by itself, oldest
first; a date that already has a run (a backfill, a manual run) is not run again. A new deployment sets
`RECSYS_SCHEDULE_START` to its first partition date, never later than a date it processes: with catchup on,
Airflow's `depends_on_past` does not hold runs dated before the start date.

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

Event-driven runs (`RECSYS_DAYS_CLOSED_TOPIC` set, e.g. `recsys.days-closed`): instead of the midnight schedule,
a run starts when `recsys sink` announces a closed day on that Kafka topic. The asset `recsys_raw_events` has an
`AssetWatcher` whose trigger (the Kafka provider's `KafkaMessageQueueTrigger`, run by the triggerer through the
connection `RECSYS_KAFKA_CONN_ID`, default `kafka_default`) turns each announcement into an asset event; the run
processes the day it names (it has no logical date; with several, the oldest). Three tasks more:

- **check_earlier_days** (beside `wait_for_partition`, before anything reads the day): days go in date order,
  and `depends_on_past` cannot hold a run without a logical date, so the store does: while a closed day
  (`_SUCCESS`) before this run's is not processed (its decision recorded and, if blessed, deployed), the run
  fails naming that day and what happened to it, and announces it again so that the next run retries it. A
  run by hand (**Partition date**) is not held: running a later day by hand leaves a day that will not be
  fixed behind (on the daily schedule: marking its run successful).
- **rebuild_catalog** (before validate): `raw/catalog/dt=<date>` = the catalog of the day before + the day's
  item events on the `recsys.catalog-events` topic (through the same connection); nothing when the partition
  exists already or the topic does not.
- **announce_later_days** (last): announces the oldest closed day not processed yet, so every closed day gets a
  run, in date order, even if its own announcement was lost (the trigger commits the message before Airflow
  stores the event) or queued up behind this run.

`wait_for_partition` finds the marker at its first look. Both modes: `wait_for_partition` reads
`recsys_raw_events`, `deploy` updates `recsys_champion` (as the full retrain and the rollback do).

Configuration: `RECSYS_*` environment variables of the workers (`recsys.config.Settings`, see the README).
The storage backend, the compute engine (`RECSYS_COMPUTE`, with the `RECSYS_SPARK_*` resources), the
connection id, the sensor's interval and time-out, the training container
(`RECSYS_TRAIN_IN_CONTAINER` and its image and resources) and the training queue are also read when this
file is parsed (they choose and set up tasks), so give the DAG processor the same values.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import BaseOperator, CronDataIntervalTimetable, Param, XComArg, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from recsys_airflow import assets
from recsys_airflow import dag_support as support
from recsys_airflow.sensors import LateAwareWebHdfsSensor, partition_landed

DAG_ID = "recsys_incremental_update"
# read when this file is parsed: they choose and set up tasks (every task reads its settings again)
SETTINGS = support.settings_without_alerts()
TRAINING_QUEUE = support.training_queue(SETTINGS)
# RECSYS_DAYS_CLOSED_TOPIC set: runs are created by the sink's announcements (an AssetWatcher), not the timetable
EVENT_DRIVEN = assets.event_driven(SETTINGS)
RAW_EVENTS = assets.raw_events(SETTINGS)
CHAMPION = assets.champion(SETTINGS)


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


def _wait_for_partition() -> BaseOperator | XComArg:
    """The sensor of the partition's ``_SUCCESS`` marker: the HDFS provider's on webhdfs, else one asking the store."""
    sensor_timing: dict[str, Any] = {
        "poke_interval": SETTINGS.sensor_poke_seconds,
        "timeout": timedelta(seconds=SETTINGS.sensor_timeout_seconds),
        "mode": "reschedule",
        "inlets": [RAW_EVENTS],
    }
    if SETTINGS.storage_backend == "webhdfs":
        return LateAwareWebHdfsSensor(
            task_id="wait_for_partition",
            filepath="{{ recsys_success_marker(params, dag_run, triggering_asset_events) }}",
            webhdfs_conn_id=SETTINGS.webhdfs_conn_id,
            doc_md="True once the partition's `_SUCCESS` marker exists on HDFS (the rendered filepath).",
            **sensor_timing,
        )

    @task.sensor(task_id="wait_for_partition", **sensor_timing)
    def wait_for_local_partition() -> bool:
        """True once the partition's ``_SUCCESS`` marker exists."""
        return partition_landed(get_current_context())

    return wait_for_local_partition()


def _validate() -> BaseOperator | XComArg:
    """The validate task: Great Expectations in the worker (pandas), or the Spark job (``RECSYS_COMPUTE=spark``)."""
    if SETTINGS.compute == "spark":
        from recsys_airflow.spark import RecsysSparkSubmitOperator

        return RecsysSparkSubmitOperator(task_id="validate", settings=SETTINGS, precheck=_check_overrides,
                                         **support.REGISTRY_WRITER)

    @task(**support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def validate() -> dict[str, Any]:
        from recsys.validation import validate_partition

        _check_overrides(get_current_context()["params"])  # before any work
        step, day = support.current_step(), support.current_day()
        report = validate_partition(
            step.store, step.settings, day, run_id=step.run_id, accept_invalid=bool(step.params.get("accept_invalid")),
            accept_reason=step.params.get("accept_reason"), force=bool(step.params.get("force_revalidate")),
        )
        return support.validation_result(step.store, report)

    return validate()


def _build_features() -> BaseOperator | XComArg:
    """The build_features task: pandas in the worker, or the Spark job (``RECSYS_COMPUTE=spark``)."""
    if SETTINGS.compute == "spark":
        from recsys_airflow.spark import RecsysSparkSubmitOperator

        return RecsysSparkSubmitOperator(task_id="build_features", settings=SETTINGS)

    @task
    @support.fails_on_domain_error
    def build_features() -> dict[str, Any]:
        from recsys.features import build_features as build

        step = support.current_step()
        return build(step.store, step.settings, support.current_day(), run_id=step.run_id).as_dict()

    return build_features()


def _train() -> BaseOperator | XComArg:
    """The fine-tune task: in the worker, or (docker | kubernetes) the same step, `recsys train`, in the trainer
    image."""
    if SETTINGS.train_in_container:
        from recsys_airflow.operators import trainer_operator

        return trainer_operator(SETTINGS, **TRAINING_QUEUE, **support.REGISTRY_WRITER)

    @task(**TRAINING_QUEUE, **support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def fine_tune() -> dict[str, Any]:
        from recsys.training import fine_tune as train_candidate

        step = support.current_step()
        return train_candidate(step.store, step.settings, support.current_day(), run_id=step.run_id)

    return fine_tune()


def _event_driven_tasks() -> tuple[XComArg, XComArg, XComArg]:
    """The tasks only event-driven runs have: check_earlier_days and rebuild_catalog (before validate), and the
    last, announce_later_days."""

    @task
    def check_earlier_days() -> dict[str, Any]:
        """Fail, naming the day this one waits for, while a closed day before it is not processed (that day
        is announced again, so the next run retries it). A run by hand ('Partition date') is not held."""
        step = support.current_step()
        day = support.current_day()
        if step.params.get("partition_date"):
            return {"date": day.isoformat(), "held": False, "why": "a run by hand ('Partition date')"}
        return assets.hold_for_earlier_days(step.settings, step.store, day)

    @task
    @support.fails_on_domain_error
    def rebuild_catalog() -> dict[str, Any]:
        """Build the day's catalog partition from the day before + the day's item events on the catalog topic
        (nothing if it exists already or no item events are collected), before validate reads it."""
        from recsys.streaming.catalog import rebuild_from_topic

        step = support.current_step()
        return rebuild_from_topic(step.store, step.settings, support.current_day(), run_id=step.run_id,
                                  consumer=assets.consumer_config(step.settings))

    @task(trigger_rule="none_failed")
    def announce_later_days() -> dict[str, Any]:
        """Announce the oldest closed day not processed yet (after this run's), so it gets the next run: days
        whose announcements queued up while this run ran, or were lost, each get a run, in date order."""
        step, day = support.current_step(), support.current_day()
        return {"date": day.isoformat(), "announced": assets.announce_next_day(step.settings, step.store, day)}

    return check_earlier_days(), rebuild_catalog(), announce_later_days()


@dag(
    dag_id=DAG_ID,
    # event-driven: a run per announcement of a closed day (the raw events asset's watcher); else daily
    schedule=RAW_EVENTS if EVENT_DRIVEN else CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # the first date is a setting: a new deployment does not start at Online Retail's first day
    start_date=pendulum.instance(datetime.fromisoformat(SETTINGS.schedule_start), tz="UTC"),
    # after an outage the scheduler creates every missed date's run, one at a time, in date order
    catchup=SETTINGS.schedule_catchup,  # RECSYS_SCHEDULE_CATCHUP, default on
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "training", "incremental"],
    user_defined_macros=support.user_defined_macros(),
    # each fine-tune starts from the day before: a date waits until the previous one succeeded
    default_args=support.default_args(retry_delay=timedelta(minutes=1), partitioned=True, depends_on_past=True),
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
    wait_for_partition = _wait_for_partition()

    train = _train()

    @task(**support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def evaluate() -> dict[str, Any]:
        from recsys.evaluation import evaluate_candidate

        step = support.current_step()
        return evaluate_candidate(step.store, step.settings, support.current_day(), run_id=step.run_id)

    # ignore_downstream_trigger_rules=False: only deploy is skipped; the index refresh still runs
    @task.short_circuit(ignore_downstream_trigger_rules=False, **support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def deploy_if_blessed(decision: dict[str, Any]) -> bool:
        """Skip the deploy unless the candidate was blessed, or on-call's Deploy decision says otherwise."""
        import logging

        from recsys.registry import deploy_override

        step = support.current_step()
        gate = deploy_override(step.store, support.current_day(), step.params.get("deploy_mode") or "gate",
                               step.params.get("deploy_reason"), run_id=step.run_id)
        logging.getLogger(__name__).info(
            "candidate v%s of %s: %s (%s)", decision["candidate_version"], decision["date"],
            "deploy" if gate["deploy"] else "no deploy", gate["reason"],
        )
        return bool(gate["deploy"])

    @task(outlets=[CHAMPION], **support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def deploy() -> dict[str, Any]:
        from recsys.serving.deploy import deploy as deploy_candidate

        step = support.current_step()
        result = deploy_candidate(step.store, step.settings, support.current_day(), run_id=step.run_id)
        return support.champion_event(CHAMPION, result)

    @task(trigger_rule="none_failed")
    @support.fails_on_domain_error
    def refresh_serving_index() -> dict[str, Any]:
        """Apply the newest catalog to the champion's serving index (delisted items drop out)."""
        from recsys import registry
        from recsys.serving.deploy import refresh_index

        step = support.current_step()
        if registry.load(step.store)["champion"] is None:
            raise AirflowSkipException("no champion is deployed yet: there is no serving index to refresh")
        return refresh_index(step.store, run_id=step.run_id)

    decision = evaluate()
    validate = _validate()
    validate >> _build_features() >> train >> decision
    # an XComArg: Airflow passes evaluate's return value at run time
    refreshed = deploy_if_blessed(decision) >> deploy() >> refresh_serving_index()  # type: ignore[arg-type]

    if EVENT_DRIVEN:
        first, catalog, last = _event_driven_tasks()
        # side by side: the check costs no scheduling gap on the way from the announcement to the champion
        [first, wait_for_partition] >> catalog >> validate
        refreshed >> last
    else:
        wait_for_partition >> validate


recsys_incremental_update()
