"""recsys.spark.read: the schema the driver hands Spark for a one-file parquet delivery (no footer job) is the
schema Spark infers itself, and the rows read are the same, for every type the mapping knows; a type it does not
know leaves the reading to Spark."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.spark.read import _spark_columns

pytestmark = pytest.mark.integration


def _table() -> pa.Table:
    return pa.table({
        "event_id": pa.array(["a", None, "c"], pa.string()),
        "user_id": pa.array(["u1", "u2", None], pa.large_string()),
        "quantity": pa.array([1, None, 3], pa.int64()),
        "small": pa.array([1, 2, None], pa.int32()),
        "price": pa.array([1.5, None, 2.0], pa.float64()),
        "flag": pa.array([True, False, None], pa.bool_()),
        "event_time": pa.array(pd.to_datetime(["2024-05-02 10:00:00.123456789", "2024-05-02 23:59:59.000000001", None],
                                              utc=True), pa.timestamp("ns", tz="UTC")),
        "seen_at": pa.array(pd.to_datetime(["2024-05-02 10:00", None, "2024-05-02 11:00"], utc=True),
                            pa.timestamp("us", tz="Europe/Berlin")),
    })


def test_the_schema_handed_to_spark_is_the_one_it_infers(spark, tmp_path):
    path = tmp_path / "part-00000.parquet"
    pq.write_table(_table(), path)
    columns = _spark_columns(pq.ParquetFile(path).schema_arrow)
    assert columns is not None and [name for name, _ in columns] == _table().column_names

    given = spark.read.schema(", ".join(f"`{n}` {t}" for n, t in columns)).parquet(str(path))
    inferred = spark.read.parquet(str(path))
    assert given.schema == inferred.schema
    assert given.collect() == inferred.collect()


@pytest.mark.parametrize("array", [
    pa.array(pd.to_datetime(["2024-05-02 10:00"]), pa.timestamp("us")),  # no time zone: a local date-time
    pa.array(["a"], pa.string()).dictionary_encode(),  # a pandas categorical
    pa.array([1], pa.uint32()),
    pa.array([1], pa.int16()),
])
def test_a_type_the_mapping_does_not_know_is_left_to_spark(array):
    assert _spark_columns(pa.schema([("event_id", pa.string()), ("other", array.type)])) is None
