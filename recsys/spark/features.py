"""The features step on Spark: :func:`recsys.features.build.build_features` with the events' work on Spark.

What scales with the events runs on Spark's executors: reading the partition, the cleaning decisions of
:func:`recsys.features.cleaning.clean_events` (repeated ``event_id``, the first in delivery order kept; ids
that are missing or break the id rule; ``quantity <= 0``), their counts, and the distinct (user, item) pairs
of the day, coded as integers against each side's distinct ids (:func:`_pairs`). Only the codes and the distinct
ids come back to the driver: what grows from them (append-only vocabularies, the
train/holdout split, the query history and the history snapshot, the stats) is the pandas path's own code on
the same pairs, so the outputs are byte-for-byte the pandas path's (tests/integration/test_spark_parity.py)
and a later step cannot tell which engine built a day. Memory on the driver: two int32 codes a pair, each
distinct id once, and the state that exists anyway (vocabularies, histories), not the events.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.features.build import (
    READ_COLUMNS,
    DayPairs,
    FeatureError,
    FeatureStats,
    _check_order,
    validated_delivery,
    write_features,
)
from recsys.features.cleaning import CleaningStats
from recsys.spark.read import ORDER, check_delivery, read_events
from recsys.spark.session import BROADCAST_IDS
from recsys.storage import PartitionStore, layout
from recsys.storage.raw import fingerprint

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
_DUP, _VALID, _POSITIVE = "_duplicate", "_valid", "_positive"
_USER, _ITEM = "_user", "_item"
_USER_CODE, _ITEM_CODE = "_user_code", "_item_code"


def build_features(
    spark: SparkSession, store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None
) -> FeatureStats:
    """:func:`recsys.features.build.build_features` on Spark: same arguments, outputs and errors."""
    from pyspark import StorageLevel

    _check_order(store, day)
    passed = validated_delivery(store, day)
    partition_dir = layout.raw_events(day)
    delivery = check_delivery(store, partition_dir)
    delivered = delivery.fingerprint
    if delivered != passed:
        raise _changed(store, day, delivered, passed)
    events = read_events(spark, store, settings, partition_dir, READ_COLUMNS, nanos=delivery.nanos)
    flagged = _flag(events, settings.validation_max_id_length).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        cleaning = _cleaning_stats(flagged)
        pairs = _pairs(flagged)
    finally:
        flagged.unpersist()
    if fingerprint(store, partition_dir) != delivered:  # Spark's executors read the files again
        raise _changed(store, day, fingerprint(store, partition_dir), passed)
    if cleaning.invalid_ids:  # only an accepted partition gets here with them: validation refuses them
        log.warning("partition %s: %d rows dropped whose user_id or item_id is missing or not a valid id",
                    day, cleaning.invalid_ids)
    if not len(pairs):
        log.warning("partition %s has no usable events after cleaning: %s", day, cleaning.as_dict())
    return write_features(store, settings, day, pairs, cleaning, delivered, engine=" (spark)")


def _changed(store: PartitionStore, day: date, delivered: str, passed: str) -> FeatureError:
    return FeatureError(
        f"partition {day} changed since it was validated: the delivery now in "
        f"{store.uri(layout.raw_events(day))} ({delivered[:12]}) is not the one that passed validation "
        f"({passed[:12]}). Run the validate step for {day} again, then build its features"
    )


def _flag(events: DataFrame, max_id_length: int) -> DataFrame:
    """``events`` as (user text, item text, quantity) with the cleaning flags of each row.

    ``_duplicate``: an earlier row (delivery order) has the same ``event_id`` (nulls equal, as in pandas);
    ``_valid``: both ids present and ids by the rule (each distinct id checked once, on the executors, by
    :func:`recsys.schema.valid_id`: :func:`_valid_ids`); ``_positive``: ``quantity > 0`` (a missing quantity is
    not). Nothing per id comes to the driver.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy(schema.EVENT_ID).orderBy(ORDER)
    rows = events.select(
        F.col(schema.USER_ID).cast("string").alias(_USER), F.col(schema.ITEM_ID).cast("string").alias(_ITEM),
        F.coalesce(F.col(schema.QUANTITY) > 0, F.lit(False)).alias(_POSITIVE),
        (F.row_number().over(first) > 1).alias(_DUP),
    )
    kept = rows.where(~F.col(_DUP))
    ids = kept.select(F.col(_USER).alias("id")).union(kept.select(F.col(_ITEM).alias("id"))).where(
        F.col("id").isNotNull()).distinct()
    bad = ids.where(~_valid_ids(max_id_length)(F.col("id")))
    valid = F.col(_USER).isNotNull() & F.col(_ITEM).isNotNull()
    count = bad.count()  # one pass; the joins below (and the second pass) only for an accepted partition
    if count:  # validation refuses such ids: usually few, then broadcast
        small = count <= BROADCAST_IDS
        for column, mark in ((_USER, "_bad_user"), (_ITEM, "_bad_item")):
            marks = bad.select(F.col("id").alias(mark))
            rows = rows.join(F.broadcast(marks) if small else marks, F.col(column) == F.col(mark), "left")
            valid = valid & F.col(mark).isNull()
    return rows.withColumn(_VALID, valid).select(_USER, _ITEM, _DUP, _VALID, _POSITIVE)


def _valid_ids(max_id_length: int):  # type: ignore[no-untyped-def]
    """A vectorised UDF (text -> bool) of :func:`recsys.schema.valid_id` itself, run by the executors' Python
    workers (the one id rule, not a copy of it in Java regex)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("boolean")  # type: ignore[call-overload]
    def valid(ids: pd.Series) -> pd.Series:
        return pd.Series([schema.valid_id(text, max_id_length) for text in ids], index=ids.index, dtype=bool)

    return valid


def _cleaning_stats(flagged: DataFrame) -> CleaningStats:
    """The counts :func:`recsys.features.cleaning.clean_events` reports, in one pass."""
    from pyspark.sql import functions as F

    def count(condition):  # type: ignore[no-untyped-def]
        return F.sum(F.when(condition, 1).otherwise(0))

    kept, valid, positive = ~F.col(_DUP), F.col(_VALID), F.col(_POSITIVE)
    row = flagged.agg(
        F.count(F.lit(1)), count(F.col(_DUP)), count(kept & ~valid), count(kept & valid & ~positive),
        count(kept & valid & positive),
    ).first()
    rows_in, duplicates, invalid, non_positive, rows_out = (int(v or 0) for v in (row or (0,) * 5))
    return CleaningStats(rows_in=rows_in, rows_out=rows_out, duplicate_event_ids=duplicates, invalid_ids=invalid,
                         non_positive_quantity=non_positive)


def _pairs(flagged: DataFrame) -> DayPairs:
    """The day's distinct (user_id, item_id) of the kept rows as :class:`~recsys.features.build.DayPairs`: the
    pandas path's sorted ids and integer codes, with the codes made on the executors.

    Each side's distinct ids are ranked on Spark in text order (Spark compares UTF-8 bytes, which is code point
    order, as Python's sort), the pairs are joined to the ranks and sorted by them; the driver receives the
    distinct ids once and two int32 columns (Arrow), never a text value per pair (about 8 bytes a pair instead
    of two Python strings: the driver's share at 30M events, 22.6M pairs and 2.3M ids, bench/scale).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    kept = flagged.where(~F.col(_DUP) & F.col(_VALID) & F.col(_POSITIVE))
    distinct = kept.select(_USER, _ITEM).distinct().persist(StorageLevel.MEMORY_AND_DISK)
    ranked = []
    try:
        user_ids, users = _ranked(distinct, _USER, _USER_CODE)
        ranked.append(users)
        item_ids, items = _ranked(distinct, _ITEM, _ITEM_CODE)
        ranked.append(items)
        coded: pd.DataFrame = (distinct.join(users, _USER).join(items, _ITEM).select(_USER_CODE, _ITEM_CODE)
                               .orderBy(_USER_CODE, _ITEM_CODE).toPandas())
    finally:
        for frame in ranked:
            frame.unpersist()
        distinct.unpersist()
    return DayPairs(user_ids, item_ids, coded[_USER_CODE].to_numpy(np.int32), coded[_ITEM_CODE].to_numpy(np.int32))


def _ranked(distinct: DataFrame, column: str, code: str) -> tuple[np.ndarray, DataFrame]:
    """``column``'s distinct ids of ``distinct`` in text order (an object array of str, on the driver) and a
    persisted frame (``column``, ``code``: the id's position in that order, int32) to join on the executors."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ids = distinct.select(column).distinct()
    # one total order of distinct ids: a window without partitions (Spark moves the ids, not the pairs, to one
    # task; a few million short strings)
    ranks = ids.withColumn(code, (F.row_number().over(Window.orderBy(column)) - 1).cast("int")).persist(
        StorageLevel.MEMORY_AND_DISK)
    text: pd.DataFrame = ranks.orderBy(code).select(column).toPandas()
    return np.asarray(text[column].astype(str), dtype=object), ranks
