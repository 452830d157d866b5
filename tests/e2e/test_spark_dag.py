"""The incremental DAG's Spark steps (``RECSYS_COMPUTE=spark``) as a worker runs them: the
``RecsysSparkSubmitOperator`` tasks built by the real DAG file, executed with the real ``spark-submit`` against a
real Spark standalone master and worker (fixture ``spark_standalone``, scripts/spark.sh) through the connection
``spark_default``, in client mode, with every option the operator adds (the driver JVM's of
``recsys.spark.session.submit_conf``, the ``RECSYS_SPARK_*`` resources).

tests/unit/test_spark_operator.py checks the command line with a stand-in ``spark-submit``; tests/e2e/
test_spark_job.py submits the job by hand on HDFS. Here the operator's own submission runs, and the task returns
what the in-process task returns, on outputs equal to the pandas path's. Fails, never skips, when Spark cannot
start.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pendulum
import pytest

from recsys.config import Settings
from recsys.datasets import landing
from recsys.features import vocab
from recsys.storage import layout
from recsys.storage.local import LocalStore

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = date(2010, 12, 1)


def test_the_dags_spark_steps_submit_to_a_standalone_cluster_and_match_pandas(spark_standalone, monkeypatch,
                                                                              tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    from recsys.features import build_features
    from recsys.validation import validate_partition

    spark, local = LocalStore(tmp_path / "spark"), LocalStore(tmp_path / "pandas")
    for store in (spark, local):
        landing.land_days(store, DAY, 1, exact=True)
    env = {"RECSYS_COMPUTE": "spark", "RECSYS_STORAGE_ROOT": str(spark.root), "RECSYS_SPARK_UI": "false",
           "RECSYS_SPARK_SHUFFLE_PARTITIONS": "2", "RECSYS_SPARK_DRIVER_MEMORY": "768m",
           "RECSYS_SPARK_EXECUTOR_MEMORY": "768m", "RECSYS_MIN_USER_COUNT": "1", "RECSYS_MIN_ITEM_COUNT": "1",
           "SPARK_LOCAL_IP": "127.0.0.1", "AIRFLOW_CONN_SPARK_DEFAULT": spark_standalone.connection_uri("client")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "recsys_incremental_update.py"))
    assert bag.import_errors == {}
    dag = bag.dags["recsys_incremental_update"]
    context = {"params": {"partition_date": None, "accept_invalid": False, "accept_reason": None,
                          "force_revalidate": False},
               "logical_date": pendulum.datetime(DAY.year, DAY.month, DAY.day, tz="UTC"), "run_id": "e2e-spark-dag"}

    validate, features = dag.get_task("validate"), dag.get_task("build_features")
    # each step's driver JVM options (recsys.spark.session.DRIVER_JAVA_OPTIONS): an empty value is submitted too
    assert validate.conf["spark.driver.extraJavaOptions"] == ""
    assert features.conf["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1"
    verdict = validate.execute(context)
    stats = features.execute(context)

    settings = Settings(min_user_count=1, min_item_count=1)
    expected = validate_partition(local, settings, DAY)
    build_features(local, settings, DAY)
    assert (verdict["date"], verdict["success"], verdict["rows"]) == (DAY.isoformat(), True, expected.rows)
    assert verdict["report"] == spark.uri(layout.validation_summary(DAY))
    assert stats == local.read_json(f"{layout.features(DAY)}/{layout.STATS_FILE}")
    assert spark.is_complete(layout.features(DAY))
    for name in (layout.EXAMPLES_FILE, layout.QUERY_FILE, layout.HISTORY_FILE):
        path = f"{layout.features(DAY)}/{name}"
        assert spark.read_bytes(path) == local.read_bytes(path), name
    for name in (vocab.USERS, vocab.ITEMS):
        assert vocab.load(spark, name).equals(vocab.load(local, name)), name
