"""``validate`` and ``build_features`` as Spark applications: the DAG's data steps with ``RECSYS_COMPUTE=spark``.

:class:`RecsysSparkSubmitOperator` is the Spark provider's ``SparkSubmitOperator`` submitting
``recsys/spark/job.py`` (``python -m recsys.spark.job validate|features --date D --run-id R ...``) through the
Airflow connection ``spark_default``: the connection names the master (``local[*]``,
``spark://host:7077``, ``yarn``, ``k8s://https://...``) and, in its extra ``deploy-mode``, client or cluster
mode; the driver's and executors' resources come from the ``RECSYS_SPARK_*`` settings, the driver JVM's
options from :func:`recsys.spark.session.submit_conf` (the settings win on the same key: :func:`submit_options`).
So the same DAG runs on one machine, a standalone cluster, YARN or Kubernetes by configuration alone.

The application gets the worker's settings as ``RECSYS_*`` variables (secrets and alert settings left out,
as for the training container), resolved when the task runs (on HDFS the NameNode comes from the Airflow
connection, as for the in-process tasks). In client mode they are the driver's environment; on YARN and
Kubernetes the provider passes them to the driver (``spark.yarn.appMasterEnv.*``,
``spark.kubernetes.driverEnv.*``); a standalone cluster in cluster mode cannot take them: its workers need
the ``RECSYS_*`` variables themselves (``spark-env.sh``).

What the task returns and how it fails is what the in-process task does, read back from the store, so it
holds in every deploy mode (a cluster-mode driver's output never reaches Airflow): ``validate`` returns the
validation summary (:func:`recsys_airflow.dag_support.validation_result`) and, when the partition failed its
expectations and was quarantined, fails without retry naming the failed expectations; ``build_features``
returns the day's ``stats.json``. Any other failure of the application keeps its log and is retried.

Importing this module imports the Spark provider: DAG files import it only when ``RECSYS_COMPUTE=spark``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from recsys_airflow.runtime import require_context_day
from recsys_airflow.runtime import settings as task_settings

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.storage import PartitionStore

CONN_ID = "spark_default"
# the DAG's task id -> the job's sub-command (python -m recsys.spark.job <step> ...)
STEPS = {"validate": "validate", "build_features": "features"}


def application() -> str:
    """The path of ``recsys/spark/job.py``, the application spark-submit runs (found without importing it)."""
    import recsys

    return str(Path(recsys.__file__).resolve().parent / "spark" / "job.py")


def spark_submit_binary() -> str | None:
    """None when ``spark-submit`` is on the PATH (the provider's default); else the one pyspark installed beside
    this Python (an Airflow worker started as ``/venv/bin/airflow`` may not have ``/venv/bin`` on its PATH)."""
    if shutil.which("spark-submit"):
        return None
    beside = Path(sys.executable).with_name("spark-submit")
    return str(beside) if beside.exists() else None


def job_environment(settings: Settings) -> dict[str, str]:
    """The application's ``RECSYS_*`` variables: ``settings`` without secrets and alert settings.

    ``Settings.from_env`` of the result gives back ``settings`` (None as ``none``); alerts are the Airflow
    task's business, and the application needs no secret.
    """
    env = {f"RECSYS_{name.upper()}": "none" if value is None else str(value)
           for name, value in settings.public().items() if not name.startswith("notify_")}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return env


def submit_options(settings: Settings, step: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``SparkSubmitOperator`` resource arguments and ``conf`` of job step ``step`` (``validate`` or
    ``features``): the job's own (the step's driver JVM options of :func:`recsys.spark.session.submit_conf`),
    then the ``RECSYS_SPARK_*`` settings', then ``conf``.

    On the same key the later wins: the settings over the job's own, ``conf`` (the operator's ``conf``
    argument, a DAG's override for one task) over both. The connection ``spark_default`` sets no Spark
    configuration (master, deploy mode, queue, namespace, principal: the provider's arguments, not ``--conf``).
    A cluster's ``spark-defaults.conf`` loses to every ``--conf`` (Spark's rule), so one that sets
    ``spark.driver.extraJavaOptions`` is replaced by the step's :data:`recsys.spark.session.DRIVER_JAVA_OPTIONS`: a
    cluster's own driver JVM options belong in ``spark.driver.defaultJavaOptions`` (Spark's key for
    administrators, put before the extra options: both apply), or in ``conf`` here.

    Unset resources are left to the cluster's defaults. The driver's and executors' Python is this worker's
    (``sys.executable``): on a cluster, install the same environment at the same path on its hosts.
    """
    from recsys.spark.session import submit_conf

    merged = {**submit_conf(step, settings), "spark.pyspark.python": sys.executable,
              "spark.pyspark.driver.python": sys.executable,
              "spark.ui.enabled": "true" if settings.spark_ui else "false", "spark.ui.showConsoleProgress": "false"}
    if settings.spark_shuffle_partitions:
        merged["spark.sql.shuffle.partitions"] = str(settings.spark_shuffle_partitions)
    if settings.spark_executor_memory_overhead:
        merged["spark.executor.memoryOverhead"] = settings.spark_executor_memory_overhead
    conf = {**merged, **(conf or {})}
    options: dict[str, Any] = {"driver_memory": settings.spark_driver_memory,
                               "executor_memory": settings.spark_executor_memory,
                               "executor_cores": settings.spark_executor_cores}
    return {"conf": conf, **{k: v for k, v in options.items() if v}}


def job_arguments(step: str, day: date, run_id: str, params: Mapping[str, Any]) -> list[str]:
    """``validate|features --date D --run-id R`` and, for validate, on-call's accept and force params."""
    args = [STEPS[step], "--date", day.isoformat(), "--run-id", run_id]
    if step != "validate":
        return args
    if params.get("accept_invalid"):
        args += ["--accept-invalid", "--accept-reason", str(params.get("accept_reason") or "")]
    if params.get("force_revalidate"):
        args.append("--force")
    return args


def validation_failure(store: PartitionStore, day: date, since: datetime) -> str | None:
    """Why ``day`` failed validation, if a validation that started at ``since`` or later concluded so (the
    summary it wrote failed and was not accepted); else None (the application failed for another reason)."""
    from recsys.storage import layout
    from recsys.validation.docs import OVERVIEW
    from recsys.validation.results import describe, previous_summary

    summary = previous_summary(store, day)
    if not summary or summary.get("success") or summary.get("accepted") or not summary.get("validated_at"):
        return None
    if datetime.fromisoformat(summary["validated_at"]) < since.replace(microsecond=0):
        return None  # an older verdict: this run did not get as far as validating
    what = summary.get("problem") or "failed expectations: " + "; ".join(
        describe(c) for c in summary["checks"] if not c["success"])
    return (f"partition {day} is invalid and was quarantined to {store.uri(layout.quarantine_events(day))}; "
            f"{what}. Report: {store.uri(layout.validation_summary(day))}; Data Docs: {store.uri(OVERVIEW)}. "
            "The champion is unchanged and later dates wait. Fix the upstream data and republish the partition, "
            "then rerun this date; or, if the data is fine to train on, rerun it with accept_invalid and an "
            "accept_reason.")


class RecsysSparkSubmitOperator(SparkSubmitOperator):
    """One recsys data step (``validate`` or ``build_features``: the task id) as a Spark application.

    :param settings: the settings read when the DAG file was parsed (resources; the task reads them again).
    :param precheck: called with the run's params before anything is submitted (on-call's override checks).
    :param conn_id: the Spark connection (default ``spark_default``).
    :param conf: Spark configuration over the job's and the settings' (:func:`submit_options`).
    """

    template_fields: Sequence[str] = tuple(SparkSubmitOperator.template_fields)

    def __init__(self, *, task_id: str, settings: Settings, precheck: Callable[[Any], None] | None = None,
                 conn_id: str | None = None, conf: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if task_id not in STEPS:
            raise ValueError(f"task_id={task_id!r}: a Spark step is one of {sorted(STEPS)}")
        super().__init__(
            task_id=task_id, application=application(), name=f"recsys-{task_id}",
            conn_id=conn_id or CONN_ID,
            spark_binary=spark_submit_binary(), **submit_options(settings, STEPS[task_id], conf), **kwargs,
        )
        self.precheck = precheck

    def execute(self, context: Any) -> dict[str, Any]:  # type: ignore[override]
        from recsys.storage import open_store

        params = context["params"]
        if self.precheck is not None:
            self.precheck(params)  # before any work
        day = require_context_day(context)
        current = task_settings()
        self.application_args = job_arguments(self.task_id, day, str(context["run_id"]), params)
        self.env_vars = {**job_environment(current), **(self.env_vars or {})}
        self._hook = hook = self._get_hook()
        connection = hook._connection  # the provider's resolved connection: master and deploy mode
        # the job's session must keep the master spark-submit was given, whatever RECSYS_SPARK_MASTER says
        self.env_vars["RECSYS_SPARK_MASTER"] = connection["master"]  # the hook holds this same dict
        if connection["master"].startswith("spark://") and connection["deploy_mode"] == "cluster":
            self.log.info("standalone cluster mode takes no driver environment: the workers' RECSYS_* apply")
            hook._env_vars = None
        started = datetime.now(UTC)
        store = open_store(current)
        try:
            super().execute(context)
        except (AirflowException, RuntimeError) as err:  # RuntimeError: a standalone cluster-mode driver failed
            failure = validation_failure(store, day, started) if self.task_id == "validate" else None
            if failure is not None:
                raise AirflowFailException(f"{self.task_id} failed: {failure}") from err
            raise
        return self._result(store, day)

    def _result(self, store: PartitionStore, day: date) -> dict[str, Any]:
        """What the in-process task returns, read back from the store."""
        from recsys.storage import layout

        if self.task_id == "build_features":
            return dict(store.read_json(f"{layout.features(day)}/{layout.STATS_FILE}"))
        from recsys.validation.results import ValidationReport, previous_summary
        from recsys_airflow.dag_support import validation_result

        summary = previous_summary(store, day)
        if summary is None:
            raise AirflowException(f"the Spark validate job of {day} succeeded but wrote no "
                                   f"{store.uri(layout.validation_summary(day))}")
        return validation_result(store, ValidationReport.from_summary(day, summary))
