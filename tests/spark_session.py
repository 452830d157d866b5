"""One local-mode SparkSession for the whole test session (fixture ``spark`` in tests/conftest.py).

Small on purpose (CI has 2 cores): ``local[2]``, two shuffle partitions, no UI. A session that cannot start
fails the tests that need it (never a skip): they test the Spark backend, which needs Java 17 and pyspark.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

# what the tests' Spark backend runs with (RECSYS_* settings, as an operator would set them)
SPARK_TEST_ENV = {
    "RECSYS_COMPUTE": "spark",
    "RECSYS_SPARK_MASTER": "local[2]",
    "RECSYS_SPARK_SHUFFLE_PARTITIONS": "2",
    "RECSYS_SPARK_UI": "false",
    "RECSYS_SPARK_DRIVER_MEMORY": "1g",
}


def spark_settings(**extra: str) -> Any:
    """Settings of the Spark backend in tests (defaults otherwise), plus ``extra`` RECSYS_* values."""
    from recsys.config import Settings

    return Settings.from_env({**SPARK_TEST_ENV, **extra})


def session() -> Iterator[Any]:
    """Start the session (fail loudly if Spark cannot start), yield it, stop it."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback: the machine's name may not resolve
    from recsys.spark.session import spark_session

    spark = spark_session(spark_settings(), app_name="recsys-tests")
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()
