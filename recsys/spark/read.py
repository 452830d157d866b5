"""Reading a raw partition into a Spark DataFrame, with the pandas path's checks of the delivery.

Before Spark reads anything, the driver checks the partition exactly as the pandas path does
(:func:`recsys.storage.raw.read_delivery` with no columns: every file's name, type, size and header or
parquet footer, and the fingerprint of the bytes read), so a bad delivery is reported with the same words on
both backends. Parquet data is then read by Spark's executors straight from the store (``file://`` or
``webhdfs://``/``hdfs://``); CSV data files, a small legacy format, are parsed on the driver by the pandas
reader (one set of parsing rules) and handed to Spark.

Every row carries :data:`ORDER`, its position in the delivery (file by file in name order, row by row), so
"the first" (duplicate event ids, ties of the top item) means the same row as in pandas.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from recsys.config import Settings
from recsys.spark.session import spark_path
from recsys.storage import PartitionStore, StorageError
from recsys.storage import raw as raw_files
from recsys.storage.raw import read_delivery

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

# the parquet (arrow) types whose Spark type is known without asking Spark: text, 64/32-bit integers, doubles,
# booleans, nanosecond timestamps (read as longs: spark.sql.legacy.parquet.nanosAsLong) and other timestamps with
# a time zone (instants; one without is a local date-time to Spark: left to its own reading)
SPARK_TYPES = {"string": "string", "large_string": "string", "int64": "bigint", "int32": "int", "double": "double",
               "bool": "boolean", "timestamp_ns": "bigint", "timestamp_tz": "timestamp"}
ORDER = "_order"  # a row's position in the delivery (file index * 2**40 + row index in the file)
_FILE_SHIFT = 1 << 40


@dataclass(frozen=True)
class Delivery:
    """What the driver learnt of a partition's files: rows, the fingerprint of the bytes it read, each column's
    pandas dtype as the pandas path reads the partition (what reports name), and the columns that are
    nanosecond timestamps in parquet (Spark reads those as longs, :func:`read_events` converts them)."""

    rows: int
    fingerprint: str
    dtypes: dict[str, str] = field(default_factory=dict)
    nanos: tuple[str, ...] = ()
    # column -> what the pandas engine of GX reports as a type check's observed value (the dtype's scalar type)
    observed: dict[str, str] = field(default_factory=dict)
    # (column, Spark type) as Spark reads a delivery of one parquet file, when every column's type is one whose
    # reading is known (:data:`SPARK_TYPES`): handed to Spark, which then does not run a job to read the footer
    spark_columns: tuple[tuple[str, str], ...] | None = None


def check_delivery(store: PartitionStore, partition_dir: str) -> Delivery:
    """The :class:`Delivery` of a published partition, every file read once; StorageError as the pandas reader
    (:func:`recsys.storage.raw.read_delivery`) raises it for a partition or data file that cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not store.is_complete(partition_dir):
        raise StorageError(f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet")
    files = store.data_files(partition_dir)
    if not files:
        raise StorageError(f"{store.uri(partition_dir)} has a _SUCCESS marker but no data files")
    digest = hashlib.sha256()
    rows, empties, nanos, columns = 0, [], set[str](), None
    for path in files:
        kind = path.rpartition("/")[2].rpartition(".")[2]
        if kind not in raw_files._READERS:
            read_delivery(store, partition_dir, columns=())  # raises the pandas path's words
        data = raw_files.read_data_file(store, path)
        if not data:
            read_delivery(store, partition_dir, columns=())
        raw_files._digest_file(digest, path, data)
        if kind == "csv":
            frame = raw_files._csv_file(store, path, data, None)
            rows += len(frame)
            empties.append(frame.iloc[:0])
            continue
        rows += len(raw_files._parquet_file(store, path, data, ()))
        schema = pq.ParquetFile(io.BytesIO(data)).schema_arrow
        nanos.update(f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns")
        columns = _spark_columns(schema) if len(files) == 1 else None
        buffer = io.BytesIO()
        pq.write_table(schema.empty_table(), buffer)  # the pandas reader on no rows: the same dtypes
        empties.append(raw_files._canonical_text(pd.read_parquet(io.BytesIO(buffer.getvalue()))))
    types = pd.concat(empties, ignore_index=True).dtypes if empties else pd.Series(dtype=object)
    return Delivery(rows, digest.hexdigest(), {str(c): str(t) for c, t in types.items()}, tuple(sorted(nanos)),
                    {str(c): t.type.__name__ for c, t in types.items() if str(t) != "object"}, columns)


def _spark_columns(schema: pa.Schema) -> tuple[tuple[str, str], ...] | None:
    """(column, Spark type name) of each field of a parquet file's ``schema`` as Spark reads it, or None if a
    type is not one of the few whose reading is known here (Spark then reads the footer itself)."""
    import pyarrow as pa

    columns = []
    for f in schema:
        kind = ("timestamp_ns" if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
                else "timestamp_tz" if pa.types.is_timestamp(f.type) and f.type.tz is not None
                else str(f.type))
        if kind not in SPARK_TYPES or not f.name or "`" in f.name:
            return None
        columns.append((f.name, SPARK_TYPES[kind]))
    return tuple(columns)


def read_events(
    spark: SparkSession, store: PartitionStore, settings: Settings, partition_dir: str,
    columns: Sequence[str] | None = None, nanos: Sequence[str] = (),
    spark_columns: Sequence[tuple[str, str]] | None = None,
) -> DataFrame:
    """The partition's rows (``columns`` of them, or all) plus :data:`ORDER`, as a Spark DataFrame.

    Call :func:`check_delivery` first: this assumes readable files. ``nanos``: the parquet columns of
    nanosecond timestamps (:attr:`Delivery.nanos`), read as longs and turned into Spark timestamps
    (microseconds, as Spark holds every timestamp); ``spark_columns``: :attr:`Delivery.spark_columns`.
    """
    from pyspark.sql import functions as F

    files = store.data_files(partition_dir)
    if not files:
        raise StorageError(f"{store.uri(partition_dir)} has a _SUCCESS marker but no data files")
    if any(not path.endswith(".parquet") for path in files):
        frame = read_delivery(store, partition_dir, columns)[0]
        sdf = spark.createDataFrame(frame) if len(frame.columns) else spark.range(len(frame)).drop("id")
        return sdf.withColumn(ORDER, F.monotonically_increasing_id())
    paths = [spark_path(store, settings, path) for path in files]
    if spark_columns and len(paths) == 1:  # the schema given: no job to read the footer (a second at 1M events)
        sdf = spark.read.schema(", ".join(f"`{name}` {kind}" for name, kind in spark_columns)).parquet(*paths)
    else:  # several files: their schemas merged (a column missing from a part is null there, as in pandas' concat)
        sdf = spark.read.option("mergeSchema", "true").parquet(*paths)
    if columns is not None:
        missing = [c for c in columns if c not in sdf.columns]
        if missing:
            raise StorageError(
                f"{store.uri(partition_dir)} has no column {', '.join(missing)} (it has {', '.join(sdf.columns)})"
            )
        sdf = sdf.select(*columns, "_metadata")
    for column in nanos:
        if column in sdf.columns:
            sdf = sdf.withColumn(column, F.timestamp_micros(F.floor(F.col(column) / F.lit(1000)).cast("long")))
    index = F.create_map(*[x for n, path in enumerate(files) for x in (F.lit(path.rpartition("/")[2]), F.lit(n))])
    order = index[F.col("_metadata.file_name")].cast("long") * F.lit(_FILE_SHIFT) + F.col("_metadata.row_index")
    return sdf.withColumn(ORDER, order).select(*(columns or [c for c in sdf.columns if c != "_metadata"]), ORDER)
