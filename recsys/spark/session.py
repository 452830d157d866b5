"""The SparkSession of the Spark backend, built from :class:`~recsys.config.Settings`, and store paths as Spark
reads them.

``RECSYS_SPARK_MASTER`` (default ``local[*]``), ``RECSYS_SPARK_DRIVER_MEMORY``, ``RECSYS_SPARK_EXECUTOR_MEMORY``,
``RECSYS_SPARK_EXECUTOR_CORES``, ``RECSYS_SPARK_SHUFFLE_PARTITIONS`` and ``RECSYS_SPARK_UI`` become the
session's configuration; under ``spark-submit`` the values spark-submit was given win for the master and the
memory (they are fixed before Python starts), the others are applied here.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.storage import PartitionStore

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JAVA_HOME_DEFAULT = "/usr/lib/jvm/java-17-openjdk-amd64"
# UTC inside Spark too: event times are instants, and day boundaries are UTC days
SESSION_TIME_ZONE = "UTC"
# a join against at most this many ids (known ids in validate, invalid ids in features) broadcasts them to the
# executors (through the driver JVM: a few MB); more are joined by a shuffle
BROADCAST_IDS = 200_000
LIMIT_PARTITIONS = 4096  # spark.sql.limit.initialNumPartitions (see spark_conf)
# The driver JVM's options per step (spark.driver.extraJavaOptions, :func:`submit_conf`). A step's driver lives
# for a minute or two; in local mode its JVM also runs the executor threads. validate keeps the JVM's default
# JIT (C1, then C2 for hot code): Great Expectations runs two dozen scans of the cached partition there, and the
# code C2 makes for them pays for its compilation (C1 alone: 10-17 s slower at 1M events on a quiet machine,
# bench/scale/README.md). features runs a few jobs and plans more than it scans: C1 alone (no C2) saves it 2-5 s
# and a third of its CPU seconds. Executors (own JVMs on a cluster) keep the JVM's defaults.
DRIVER_JAVA_OPTIONS = {"validate": "", "features": "-XX:TieredStopAtLevel=1"}


class SparkBackendError(RecsysError, RuntimeError):
    """The Spark backend cannot run: no Java, a session that cannot start, a store Spark cannot read."""


def spark_conf(settings: Settings) -> dict[str, str]:
    """The Spark configuration the settings ask for (key -> value)."""
    conf = {
        "spark.master": settings.spark_master,
        "spark.sql.session.timeZone": SESSION_TIME_ZONE,
        "spark.ui.enabled": "true" if settings.spark_ui else "false",
        # a pandas-written partition stores event_time in nanoseconds, which Spark cannot read as timestamps: it
        # reads them as longs, and recsys.spark.read turns them into (microsecond) timestamps
        "spark.sql.legacy.parquet.nanosAsLong": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # a limit query (Great Expectations' examples of unexpected values, one per expectation: a filter, then
        # the first 20) scans every partition in one job: with no unexpected value, the usual case, it reads all
        # of them anyway, and Spark's default (one partition, then 4x more, ...) is several jobs on one core each
        "spark.sql.limit.initialNumPartitions": str(LIMIT_PARTITIONS),
    }
    if settings.spark_driver_memory:
        conf["spark.driver.memory"] = settings.spark_driver_memory
    if settings.spark_executor_memory:
        conf["spark.executor.memory"] = settings.spark_executor_memory
    if settings.spark_executor_memory_overhead:
        conf["spark.executor.memoryOverhead"] = settings.spark_executor_memory_overhead
    if settings.spark_executor_cores:
        conf["spark.executor.cores"] = str(settings.spark_executor_cores)
    if settings.spark_shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(settings.spark_shuffle_partitions)
    return conf


def submit_conf(step: str, settings: Settings | None = None) -> dict[str, str]:
    """The Spark configuration a ``spark-submit`` of ``step`` (``validate`` or ``features``) is given besides
    :func:`spark_conf` (what must be fixed before the driver's JVM starts): the step's
    :data:`DRIVER_JAVA_OPTIONS`, and the class archive of ``RECSYS_SPARK_CLASS_ARCHIVE``
    (:mod:`recsys.spark.archive`) when that file exists on this machine (the driver's, in client mode)."""
    if step not in DRIVER_JAVA_OPTIONS:
        raise ValueError(f"step={step!r}: a Spark step is one of {sorted(DRIVER_JAVA_OPTIONS)}")
    options = DRIVER_JAVA_OPTIONS[step]
    archive = settings.spark_class_archive if settings is not None else None
    if archive and os.path.isfile(archive):
        options = f"{options} -XX:SharedArchiveFile={os.path.abspath(archive)}".strip()
    return {"spark.driver.extraJavaOptions": options}


def spark_session(settings: Settings, app_name: str = "recsys") -> SparkSession:
    """The active SparkSession, or a new one configured from ``settings``; SparkBackendError if Spark
    cannot start (no Java, a master that does not answer)."""
    if not os.environ.get("JAVA_HOME") and os.path.isdir(JAVA_HOME_DEFAULT):
        os.environ["JAVA_HOME"] = JAVA_HOME_DEFAULT
    if not os.environ.get("PYSPARK_PYTHON"):
        # the executors' Python workers run recsys code (the features step's id rule): this Python, whose
        # environment has recsys and pandas, not whatever ``python3`` is first on the PATH (PySpark reads the
        # variable when the session starts; spark-submit sets it from ``spark.pyspark.python``)
        os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise SparkBackendError(f"RECSYS_COMPUTE=spark needs pyspark installed ({err})") from err
    builder = SparkSession.builder.appName(app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as err:  # py4j and Java start-up failures have no common base class
        raise SparkBackendError(
            f"Spark cannot start with master {settings.spark_master!r}: {err}. Check RECSYS_SPARK_MASTER, "
            "JAVA_HOME (Java 17) and that the cluster is up"
        ) from err


def spark_path(store: PartitionStore, settings: Settings, path: str) -> str:
    """``path`` of the store as Spark reads it: ``file:///...`` on a local store, ``webhdfs://...`` (or
    ``RECSYS_SPARK_HDFS_URL`` + the path, e.g. ``hdfs://namenode:8020/data/recsys/...``) on HDFS."""
    uri = store.uri(path)
    if settings.spark_hdfs_url and uri.startswith("webhdfs://"):
        rest = uri.removeprefix("webhdfs://")
        return settings.spark_hdfs_url.rstrip("/") + "/" + rest.partition("/")[2]
    return uri
