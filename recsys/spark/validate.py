"""Validation of a raw partition on Spark: the pandas path's suites, reports, quarantine and acceptance.

The steps and their outcome are those of :func:`recsys.validation.partition.validate_partition` (read its
docstring); only the engine differs. The delivery is checked on the driver as the pandas path reads it
(:mod:`recsys.spark.read`), the events are read and the derived share columns computed by Spark, and the
``raw_events`` suite runs on the Spark DataFrame through Great Expectations' Spark data source
(:func:`recsys.validation.suites.engine_suite`: the same suite, Spark's type names). The summary, Data Docs,
quarantine copy, registry entries and messages are written by the pandas path's own functions, so a later
step cannot tell which engine validated a partition. The catalog snapshot (one small file per day) and a
partition-level problem are checked with pandas, as on the pandas path.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.features import vocab
from recsys.spark.read import ORDER, Delivery, check_delivery, read_events
from recsys.spark.session import BROADCAST_IDS, spark_path
from recsys.storage import PartitionStore, StorageError, layout
from recsys.validation import partition
from recsys.validation.docs import DocsRun
from recsys.validation.health import margins
from recsys.validation.results import (
    ValidationReport,
    compact,
)
from recsys.validation.results import _jsonable as compact_value
from recsys.validation.suites import (
    EVENT_TIME_DTYPE,
    EVENTS_SUITE,
    NEW_ITEM,
    NEW_USER,
    SPARK,
    TOP_ITEM,
    TRAILING_KEYS,
    EventTotals,
    engine_checks,
    engine_suite,
    load_suite,
    partition_parameters,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)
_KNOWN = "_known_id"
NULL_TEXT = "<NA>"  # a missing id as pandas' ``astype(str)`` spells it (a new id, never the known one)


def validate_partition(
    spark: SparkSession,
    store: PartitionStore,
    settings: Settings,
    day: date,
    *,
    run_id: str | None = None,
    accept_invalid: bool = False,
    accept_reason: str | None = None,
    force: bool = False,
) -> ValidationReport:
    """:func:`recsys.validation.partition.validate_partition` on Spark: same arguments, outputs and errors
    (the events are read and checked on Spark; everything around them is the pandas path's own code)."""
    engine = partition.EventsEngine(
        read=lambda store_, settings_, day_, current, passed: _check_events(store_, day_, current, passed),
        check=lambda store_, settings_, day_, gx_run, report, delivery: _events_suite(
            spark, store_, settings_, day_, delivery, gx_run, report),
    )
    return partition.validate_partition(store, settings, day, run_id=run_id, accept_invalid=accept_invalid,
                                        accept_reason=accept_reason, force=force, engine=engine)


def _check_events(
    store: PartitionStore, day: date, current: str, passed_print: str | None
) -> tuple[str | None, Delivery | None]:
    """(the partition-level problem or None, the :class:`Delivery`), with the pandas path's words for each
    problem."""
    partition_dir = layout.raw_events(day)
    processed = partition.processed_differently(store, day, current, passed_print)
    if processed is not None:
        return processed, None
    try:
        delivery = check_delivery(store, partition_dir)
    except StorageError as err:
        return str(err), None
    if delivery.fingerprint != current:
        raise StorageError(
            f"{store.uri(partition_dir)} changed while it was being validated (a redelivery in progress?): rerun "
            f"the validate step for {day} once upstream has finished publishing it"
        )
    if delivery.rows == 0:
        files = len(store.data_files(partition_dir))
        return f"partition {day} is empty: its {files} data file(s) hold 0 rows", delivery
    return None, delivery


def _events_suite(
    spark: SparkSession, store: PartitionStore, settings: Settings, day: date, delivery: Delivery,
    gx_run: DocsRun, report: ValidationReport,
) -> None:
    """Run ``raw_events`` on the Spark DataFrame of the partition; checks, notes and margins into ``report``."""
    from pyspark import StorageLevel

    rows = delivery.rows
    events = read_events(spark, store, settings, layout.raw_events(day), nanos=delivery.nanos,
                         spark_columns=delivery.spark_columns)
    known = {name: _known_ids(spark, store, settings, name, day) for name in (vocab.USERS, vocab.ITEMS)}
    top, top_count = _top_item(events)
    time_type = delivery.dtypes.get(schema.EVENT_TIME, "missing")
    persisted = [ids for ids, _ in known.values()]
    derived = _derived(events, known, top, time_type).persist(StorageLevel.MEMORY_AND_DISK)
    persisted.append(derived)
    try:
        sums = derived.agg(*(_sum(c) for c in (NEW_USER, NEW_ITEM))).first()
        new_users, new_items = (0, 0) if sums is None else (int(sums[0] or 0), int(sums[1] or 0))
        totals = EventTotals(rows=rows, new_users=new_users, new_items=new_items, top_item=top,
                             top_count=top_count)
        params, report.notes = partition_parameters(store, day, settings, totals, {k: n for k, (_, n) in known.items()})
        average, days, top_id = (params.pop(key) for key in TRAILING_KEYS)
        suite = load_suite(EVENTS_SUITE)
        result = gx_run.run(engine_suite(suite, SPARK), derived, params)
        report.checks = _pandas_types(engine_checks(compact(result, suite), suite, SPARK), delivery)
        report.margins = margins(report.checks, average=average, days=days, top_item=top_id)
    finally:
        for frame in persisted:
            frame.unpersist()


def _text(frame: DataFrame, column: str) -> Column:
    """``column`` as text, as pandas' ``astype(str)`` gives it (a missing value: ``"<NA>"``)."""
    from pyspark.sql import functions as F

    return F.coalesce(frame[column].cast("string"), F.lit(NULL_TEXT))


def _sum(column: str) -> Column:
    from pyspark.sql import functions as F

    return F.sum(F.col(column))


def _top_item(events: DataFrame) -> tuple[str | None, int]:
    """(the most frequent item id as text, its rows); ties: the first to occur in the delivery, as pandas'
    ``value_counts``. (None, 0) without the column."""
    from pyspark.sql import functions as F

    if schema.ITEM_ID not in events.columns:
        return None, 0
    counts = events.groupBy(_text(events, schema.ITEM_ID).alias("_item")).agg(
        F.count(F.lit(1)).alias("_n"), F.min(ORDER).alias("_first"))
    top = counts.orderBy(F.desc("_n"), F.asc("_first")).first()
    return (None, 0) if top is None else (str(top["_item"]), int(top["_n"]))


def _pandas_types(checks: list[dict[str, Any]], delivery: Delivery) -> list[dict[str, Any]]:
    """``checks`` as the pandas path reports them, so a report reads the same whichever engine ran: a type
    check's observed type in pandas' words (:attr:`recsys.spark.read.Delivery.observed`), and a missing value
    among the unexpected examples as pandas spells it for the column's dtype (``<NA>``, ``NaT``, ...)."""
    for check in checks:
        column = check.get("column")
        if "type_list" in (check.get("expected") or {}) and column in delivery.observed:
            check["observed_value"] = delivery.observed[column]
        examples = check.get("unexpected_examples")
        if examples and None in examples and column in delivery.dtypes:
            missing = _missing_text(delivery.dtypes[column])
            check["unexpected_examples"] = [missing if v is None else v for v in examples]
    return checks


def _missing_text(dtype: str) -> Any:
    """A missing value of a pandas ``dtype`` as a summary holds it (what :func:`compact` makes of it)."""
    try:
        pandas_type = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return None
    if hasattr(pandas_type, "na_value"):  # extension dtypes: string, Int64, datetime64[ns, UTC], ...
        return compact_value(pandas_type.na_value)
    kind = getattr(pandas_type, "kind", "O")
    return compact_value(float("nan") if kind in "fc" else pd.NaT if kind in "mM" else None)


def _known_ids(
    spark: SparkSession, store: PartitionStore, settings: Settings, name: str, day: date
) -> tuple[DataFrame, int]:
    """The ids of vocabulary ``name`` first seen before ``day`` (:func:`recsys.features.vocab.known_before`,
    read by Spark from the vocabulary's parquet file, never through the driver) as a persisted one-column
    frame of distinct text, and how many there are."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    path = layout.vocab_table(name)
    if not store.exists(path):
        return spark.createDataFrame([], schema=f"{_KNOWN} string"), 0
    table = spark.read.parquet(spark_path(store, settings, path))
    ids = (table.where(F.col(vocab.FIRST_SEEN).cast("string") < F.lit(day.isoformat()))
           .select(F.col(vocab.ID).cast("string").alias(_KNOWN)).where(F.col(_KNOWN).isNotNull()).distinct()
           .persist(StorageLevel.MEMORY_AND_DISK))
    return ids, ids.count()


def _derived(events: DataFrame, known: dict[str, tuple[DataFrame, int]], top: str | None, time_type: str) -> DataFrame:
    """``events`` (with :data:`ORDER`) as the rows the suite sees, in delivery order, with the columns it
    derives (:func:`recsys.validation.suites.derived_columns`); ``known``: each vocabulary's known ids and their
    number (:func:`_known_ids`); ``time_type``: the pandas dtype of ``event_time`` ("missing" without it)."""
    from pyspark.sql import functions as F

    derived = events.withColumn(EVENT_TIME_DTYPE, F.lit(time_type))
    shuffled = False
    for column, name, flag in ((schema.USER_ID, vocab.USERS, NEW_USER), (schema.ITEM_ID, vocab.ITEMS, NEW_ITEM)):
        derived, joined = _new_flags(derived, column, *known[name], flag)
        shuffled = shuffled or joined
    if shuffled:  # a shuffle join moves the rows: back to delivery order, for GX's unexpected examples
        derived = derived.orderBy(ORDER)
    derived = derived.drop(ORDER)
    if top is None or schema.ITEM_ID not in events.columns:
        return derived.withColumn(TOP_ITEM, F.lit(0.0))
    return derived.withColumn(TOP_ITEM, F.when(_text(derived, schema.ITEM_ID) == F.lit(top), 1.0).otherwise(0.0))


def _new_flags(frame: DataFrame, column: str, known: DataFrame, count: int, flag: str) -> tuple[DataFrame, bool]:
    """(``frame`` with ``flag``: 1.0 where ``column`` (as text) is not one of the ``count`` ``known`` ids, else
    0.0, all 0.0 without the column; whether the rows were shuffled). Up to :data:`BROADCAST_IDS` known ids
    are broadcast (the rows keep their order); more are joined by a shuffle on the executors, so the driver
    never holds a vocabulary."""
    from pyspark.sql import functions as F

    if column not in frame.columns:
        return frame.withColumn(flag, F.lit(0.0)), False
    if count == 0:
        return frame.withColumn(flag, F.lit(1.0)), False
    key, hit = f"{flag}_id", f"{flag}_hit"
    ids = known.select(F.col(_KNOWN).alias(key)).withColumn(hit, F.lit(1.0))
    small = count <= BROADCAST_IDS
    joined = frame.join(F.broadcast(ids) if small else ids, _text(frame, column) == ids[key], "left")
    return joined.withColumn(flag, F.when(F.col(hit).isNull(), 1.0).otherwise(0.0)).drop(key, hit), not small
