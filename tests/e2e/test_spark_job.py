"""The Spark job (recsys/spark/job.py) submitted with spark-submit to a real Spark standalone master and worker
(fixture ``spark_standalone``, scripts/spark.sh), reading its raw partition from a real HDFS (the MiniDFSCluster
of ``hdfs_cluster``) over ``hdfs://`` RPC and writing every output through the WebHDFS store.

What the DAG's SparkSubmitOperator submits (tests/unit/test_spark_operator.py checks the command line); here
the application itself runs on the cluster, and its outputs must equal the pandas path's on the same day.
Fails, never skips, when Spark or HDFS cannot start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from recsys.config import Settings
from recsys.datasets import landing
from recsys.features import vocab
from recsys.spark.session import submit_conf
from recsys.storage import layout
from recsys.storage.local import LocalStore

pytestmark = [pytest.mark.e2e, pytest.mark.hdfs, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = date(2010, 12, 1)


def _submit(cluster, store, step: str, hdfs_rpc: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update({
        "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": store.root, "RECSYS_WEBHDFS_URL": store.url,
        "RECSYS_WEBHDFS_USER": store.user, "RECSYS_SPARK_HDFS_URL": hdfs_rpc, "RECSYS_SPARK_UI": "false",
        "RECSYS_SPARK_SHUFFLE_PARTITIONS": "2", "RECSYS_MIN_USER_COUNT": "1", "RECSYS_MIN_ITEM_COUNT": "1",
        "HADOOP_USER_NAME": store.user, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    })
    submit = Path(sys.executable).with_name("spark-submit")
    argv = [str(submit), "--master", cluster.master, "--deploy-mode", "client", "--driver-memory", "768m",
            "--executor-memory", "768m", "--conf", "spark.ui.enabled=false"]
    for key, value in submit_conf(step).items():  # the driver JVM's options, as the DAG's operator passes them
        argv += ["--conf", f"{key}={value}"]
    argv += [str(REPO_ROOT / "recsys" / "spark" / "job.py"), step, "--date", DAY.isoformat(), "--run-id", "e2e"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd="/")


def test_job_on_a_standalone_cluster_reads_hdfs_and_matches_pandas(spark_standalone, hdfs_cluster, tmp_path):
    from recsys.features import build_features
    from recsys.validation import validate_partition

    hdfs = hdfs_cluster.store("spark-job")
    local = LocalStore(tmp_path / "pandas")
    for store in (hdfs, local):
        landing.land_days(store, DAY, 1, exact=True)

    for step in ("validate", "features"):
        done = _submit(spark_standalone, hdfs, step, hdfs_cluster.namenode)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
        printed = [line for line in done.stdout.splitlines() if line.startswith("{")]  # Spark may print too
        assert printed, f"{step} printed no result: {done.stdout[-2000:]}"
        assert json.loads(printed[-1])["date"] == DAY.isoformat()

    settings = Settings(min_user_count=1, min_item_count=1)
    validate_partition(local, settings, DAY)
    build_features(local, settings, DAY)
    def verdict(store):  # the run's clock ("now") and the store's URIs differ between the two runs
        summary = store.read_json(layout.validation_summary(DAY))
        checks = [(c["check"], c["success"], c["unexpected_count"], c["observed_value"]) for c in summary["checks"]]
        return summary["success"], summary["rows"], summary["problem"], summary["fingerprint"], checks

    assert verdict(hdfs)[0] is True
    assert verdict(hdfs) == verdict(local)
    assert hdfs.is_complete(layout.features(DAY))
    stats = f"{layout.features(DAY)}/{layout.STATS_FILE}"
    assert hdfs.read_json(stats) == local.read_json(stats)
    for name in (layout.EXAMPLES_FILE, layout.QUERY_FILE, layout.HISTORY_FILE):
        path = f"{layout.features(DAY)}/{name}"
        assert hdfs.read_parquet(path).equals(local.read_parquet(path)), name
    for name in (vocab.USERS, vocab.ITEMS):
        assert vocab.load(hdfs, name).equals(vocab.load(local, name)), name
