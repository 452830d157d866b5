"""plugins/recsys_airflow/spark.py: with RECSYS_COMPUTE=spark the incremental DAG's validate and build_features
are Spark applications submitted through the connection ``spark_default``.

The operators are built by the real DAG file and executed as a worker executes them, with a stand-in
``spark-submit`` on the PATH (a script that records its command line and environment and plays the job's
part on the store: writes a verdict, exits 0 or 1). The real job on a real cluster: tests/e2e/test_spark_dag.py.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pendulum
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = date(2011, 1, 4)
MASTER = "spark://127.0.0.1:7077"
FAKE_SUBMIT = """#!{python}
import json, os, sys
from pathlib import Path
out = Path({out!r})
out.write_text(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}))
action = Path({action!r})
if action.exists():
    summary, code = json.loads(action.read_text())
    if summary is not None:
        path = Path({summary_path!r})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
    sys.exit(code)
"""


def spark_task(monkeypatch, task_id: str, env: dict[str, str]):
    """The incremental DAG's ``task_id``, parsed from the DAG file with ``env`` set."""
    from airflow.dag_processing.dagbag import DagBag

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "recsys_incremental_update.py"))
    assert bag.import_errors == {}
    return bag.dags["recsys_incremental_update"].get_task(task_id)


@pytest.fixture
def spark_env(monkeypatch, tmp_path):
    """A local store, the connection spark_default of a standalone master (client mode) and a stand-in
    spark-submit first on the PATH; yields (store, the file its command line goes to, its action file)."""
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    store = LocalStore(tmp_path / "store")
    bin_dir, out, action = tmp_path / "bin", tmp_path / "submitted.json", tmp_path / "action.json"
    bin_dir.mkdir()
    script = bin_dir / "spark-submit"
    script.write_text(FAKE_SUBMIT.format(python=sys.executable, out=str(out), action=str(action),
                                         summary_path=str(Path(store.root) / layout.validation_summary(DAY))))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(
        {"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077, "extra": {"deploy-mode": "client"}}))
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(store.root))
    monkeypatch.setenv("RECSYS_NOTIFY_BACKEND", "webhook")
    monkeypatch.setenv("RECSYS_NOTIFY_WEBHOOK_URL", "https://hooks.example.com/T0/secret-token-5e1f")
    return store, out, action


def context(params: dict) -> dict:
    base = {"partition_date": None, "accept_invalid": False, "accept_reason": None, "force_revalidate": False}
    return {"params": base | params, "logical_date": pendulum.datetime(2011, 1, 4, tz="UTC"),
            "run_id": "manual__2011-01-05"}


def summary(success: bool, validated_at: datetime) -> dict:
    from recsys.storage import layout
    from recsys.validation.results import ValidationReport

    checks = [{"expectation": "expect_column_values_to_not_be_null", "column": "user_id", "success": success,
               "observed": 3, "kwargs": {"column": "user_id"}}]
    report = ValidationReport(DAY, success, 10, checks, report_path=layout.validation_summary(DAY),
                              validated_at=validated_at.isoformat(timespec="seconds"))
    return report.as_dict()


def test_the_default_validates_in_the_worker(monkeypatch):
    monkeypatch.delenv("RECSYS_COMPUTE", raising=False)
    for task_id in ("validate", "build_features"):
        assert type(spark_task(monkeypatch, task_id, {})).__name__ == "_PythonDecoratedOperator"


def test_spark_steps_are_spark_submit_tasks_with_the_settings_resources(monkeypatch):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    env = {"RECSYS_COMPUTE": "spark", "RECSYS_SPARK_DRIVER_MEMORY": "1500m", "RECSYS_SPARK_EXECUTOR_MEMORY": "2g",
           "RECSYS_SPARK_EXECUTOR_CORES": "2", "RECSYS_SPARK_SHUFFLE_PARTITIONS": "8",
           "RECSYS_SPARK_EXECUTOR_MEMORY_OVERHEAD": "768m"}
    validate, features = (spark_task(monkeypatch, t, env) for t in ("validate", "build_features"))
    for task in (validate, features):
        assert isinstance(task, SparkSubmitOperator)
        assert task._conn_id == "spark_default"
        assert task.application == str(REPO_ROOT / "recsys" / "spark" / "job.py")
        assert (task._driver_memory, task._executor_memory, task._executor_cores) == ("1500m", "2g", 2)
        assert task.conf["spark.sql.shuffle.partitions"] == "8"
        assert task.conf["spark.executor.memoryOverhead"] == "768m"
        assert task.conf["spark.pyspark.python"] == sys.executable
        assert task.retries >= 1 and task.depends_on_past
    # each step's driver JVM options (validate: the default JIT, features: C1 only; bench/scale/README.md)
    assert validate.conf["spark.driver.extraJavaOptions"] == ""
    assert features.conf["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1"
    assert validate.pool == "recsys_registry" and features.pool != "recsys_registry"
    # the same place in the DAG as the in-process tasks
    assert validate.upstream_task_ids == {"wait_for_partition"}
    assert features.upstream_task_ids == {"validate"} and features.downstream_task_ids == {"fine_tune"}


def test_the_settings_win_over_the_jobs_own_conf_and_the_operators_conf_over_both(monkeypatch):
    from recsys_airflow.spark import RecsysSparkSubmitOperator, submit_options

    import recsys.spark.session
    from recsys.config import Settings

    job_conf = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1", "spark.sql.shuffle.partitions": "99",
                "spark.ui.enabled": "true"}
    monkeypatch.setattr(recsys.spark.session, "submit_conf", lambda step, settings=None: dict(job_conf))
    settings = Settings(spark_shuffle_partitions=8, spark_ui=False)
    conf = submit_options(settings, "validate")["conf"]
    assert (conf["spark.sql.shuffle.partitions"], conf["spark.ui.enabled"]) == ("8", "false")  # the settings'
    assert conf["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1"  # a key only the job sets
    no_setting = submit_options(Settings(), "validate")["conf"]
    assert no_setting["spark.sql.shuffle.partitions"] == "99"  # no setting: the job's

    override = {"spark.driver.extraJavaOptions": "-Dcustom=1", "spark.sql.shuffle.partitions": "4"}
    conf = submit_options(settings, "validate", override)["conf"]
    assert conf | override == conf and conf["spark.pyspark.python"] == sys.executable
    task = RecsysSparkSubmitOperator(task_id="validate", settings=settings, conf=override)
    assert task.conf == conf


def test_validate_submits_the_job_for_the_runs_date_with_the_workers_settings(monkeypatch, spark_env):
    store, out, action = spark_env
    task = spark_task(monkeypatch, "validate", {"RECSYS_COMPUTE": "spark"})
    action.write_text(json.dumps([summary(False, datetime.now(UTC)) | {"accepted": {"reason": "promo"}}, 0]))

    result = task.execute(context({"accept_invalid": True, "accept_reason": "promo", "force_revalidate": True}))

    submitted = json.loads(out.read_text())
    argv = submitted["argv"]
    assert argv[argv.index("--master") + 1] == MASTER and argv[argv.index("--deploy-mode") + 1] == "client"
    job = argv.index(str(REPO_ROOT / "recsys" / "spark" / "job.py"))
    java_options = argv.index("spark.driver.extraJavaOptions=")  # validate: the JVM's default JIT
    assert argv[java_options - 1] == "--conf" and java_options < job
    assert argv[job + 1:] == ["validate", "--date", "2011-01-04", "--run-id", "manual__2011-01-05",
                              "--accept-invalid", "--accept-reason", "promo", "--force"]
    env = submitted["env"]
    assert (env["RECSYS_COMPUTE"], env["RECSYS_STORAGE_ROOT"], env["RECSYS_SPARK_MASTER"]) == (
        "spark", str(store.root), MASTER)
    # what the task adds (all a YARN or Kubernetes driver gets) has no alert settings, so no secret; a client
    # mode driver inherits the worker's own environment besides, as an in-process task has it
    assert not any(k.startswith("RECSYS_NOTIFY_") for k in task.env_vars)
    assert "secret-token-5e1f" not in json.dumps(task.env_vars)
    # what the in-process task returns, from the summary the job wrote
    assert result == {"date": "2011-01-04", "success": False, "rows": 10, "accepted": True,
                      "report": store.uri("reports/validation/dt=2011-01-04/summary.json"),
                      "data_docs": store.uri("reports/validation/dt=2011-01-04/summary.json")}


def test_features_returns_the_days_stats(monkeypatch, spark_env):
    from recsys.storage import layout

    store, out, _ = spark_env
    task = spark_task(monkeypatch, "build_features", {"RECSYS_COMPUTE": "spark"})
    store.write_json(f"{layout.features(DAY)}/{layout.STATS_FILE}", {"date": "2011-01-04", "examples": 12})
    assert task.execute(context({"accept_invalid": True, "accept_reason": "x"})) == {
        "date": "2011-01-04", "examples": 12}
    argv = json.loads(out.read_text())["argv"]
    assert argv[-5:] == ["features", "--date", "2011-01-04", "--run-id", "manual__2011-01-05"]


def test_a_failed_validation_fails_without_retry_naming_the_expectations(monkeypatch, spark_env):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    _, _, action = spark_env
    task = spark_task(monkeypatch, "validate", {"RECSYS_COMPUTE": "spark"})
    action.write_text(json.dumps([summary(False, datetime.now(UTC)), 1]))
    with pytest.raises(AirflowFailException, match=r"validate failed: partition 2011-01-04 is invalid and was "
                       r"quarantined.*expect_column_values_to_not_be_null\(user_id\)"):
        task.execute(context({}))
    # a job that failed before validating (the summary is an older run's): an ordinary, retried failure
    action.write_text(json.dumps([summary(False, datetime.now(UTC) - timedelta(hours=1)), 1]))
    with pytest.raises(AirflowException) as caught:
        task.execute(context({}))
    assert not isinstance(caught.value, AirflowFailException)
    assert "Cannot execute" in str(caught.value)


def test_incomplete_overrides_are_refused_before_anything_is_submitted(monkeypatch, spark_env):
    from airflow.sdk.exceptions import AirflowFailException

    _, out, _ = spark_env
    task = spark_task(monkeypatch, "validate", {"RECSYS_COMPUTE": "spark"})
    with pytest.raises(AirflowFailException, match="needs an 'Acceptance reason'"):
        task.execute(context({"accept_invalid": True, "accept_reason": "  "}))
    assert not out.exists()


def test_the_class_archive_reaches_the_drivers_options_only_when_the_file_exists(tmp_path) -> None:
    from recsys.config import Settings
    from recsys.spark.session import DRIVER_JAVA_OPTIONS, submit_conf

    archive = tmp_path / "classes.jsa"
    settings = Settings(spark_class_archive=str(archive))
    jit = DRIVER_JAVA_OPTIONS["features"]
    assert submit_conf("features", settings)["spark.driver.extraJavaOptions"] == jit  # not built yet
    archive.write_bytes(b"x")
    assert submit_conf("features", settings)["spark.driver.extraJavaOptions"] == (
        f"{jit} -XX:SharedArchiveFile={archive}")
    assert submit_conf("validate", settings)["spark.driver.extraJavaOptions"] == f"-XX:SharedArchiveFile={archive}"
    assert submit_conf("features")["spark.driver.extraJavaOptions"] == jit


def test_each_step_gets_its_own_driver_jit_options() -> None:
    """validate keeps the JVM's default JIT (C2 pays off over its many scans), features stops at C1; the
    operator of each task passes its step's options, and an unknown step is refused."""
    from recsys_airflow.spark import RecsysSparkSubmitOperator

    from recsys.config import Settings
    from recsys.spark.session import submit_conf

    assert submit_conf("validate")["spark.driver.extraJavaOptions"] == ""
    assert submit_conf("features")["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1"
    with pytest.raises(ValueError, match="a Spark step is one of"):
        submit_conf("train")
    for task_id, options in (("validate", ""), ("build_features", "-XX:TieredStopAtLevel=1")):
        operator = RecsysSparkSubmitOperator(task_id=task_id, settings=Settings())
        assert operator.conf["spark.driver.extraJavaOptions"] == options


def test_spark_submits_zips_of_the_installed_pyspark_go_after_its_site_directory(tmp_path) -> None:
    from pathlib import Path

    from recsys.spark.job import script_sys_path

    site = tmp_path / "site-packages"
    (site / "pyspark" / "python" / "lib").mkdir(parents=True)
    script = tmp_path / "recsys" / "spark" / "job.py"
    script.parent.mkdir(parents=True)
    own = [str(site / "pyspark" / "python" / "lib" / n) for n in ("pyspark.zip", "py4j-0.10.9.9-src.zip")]
    other = str(tmp_path / "spark-3.5" / "python" / "lib" / "pyspark.zip")  # another Spark's: stays first
    path = [str(script.parent), *own, other, "/usr/lib/python3.11", str(site)]
    assert script_sys_path(path, Path(script)) == [other, "/usr/lib/python3.11", str(site), *own]
