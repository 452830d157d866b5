"""The features step on Spark: :func:`recsys.features.build.build_features` with the events' work on Spark.

What scales with the events runs on Spark's executors: reading the partition, the cleaning decisions of
:func:`recsys.features.cleaning.clean_events` (repeated ``event_id``, the first in delivery order kept; ids
that are missing or break the id rule, checked by a JVM expression of the same rule; ``quantity <= 0``), their
counts, and the distinct (user, item) pairs of the day, coded as integers against each side's distinct ids
(:func:`_pairs`). Each row of the partition is read once: one window (the first of each event id) and one
aggregation per (user, item) give the pairs and every count (:func:`_grouped`, persisted for the two passes
over it). Only the codes and the distinct ids come back to the driver: what grows from them (append-only
vocabularies, the train/holdout split, the query history and the history snapshot, the stats) is the pandas
path's own code on the same pairs, so the outputs are byte-for-byte the pandas path's
(tests/integration/test_spark_parity.py) and a later step cannot tell which engine built a day. Memory on the
driver: two int32 codes a pair, each distinct id once, and the state that exists anyway (vocabularies,
histories), not the events.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

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
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)
_DUP, _VALID, _POSITIVE = "_duplicate", "_valid", "_positive"
_DUPLICATES, _KEPT = "_duplicates", "_kept"
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
    grouped = _grouped(events, settings.validation_max_id_length).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        cleaning = _cleaning_stats(grouped)
        pairs = _pairs(spark, grouped)
    finally:
        grouped.unpersist()
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


def _grouped(events: DataFrame, max_id_length: int) -> DataFrame:
    """``events`` as one row per distinct (user text, item text) with the cleaning counts of its rows.

    A row is a duplicate when an earlier row (delivery order) has the same ``event_id`` (nulls equal, as in
    pandas; one window, one shuffle). Per group: ``_duplicates`` (rows that repeat an event id), ``_kept`` (the
    others), ``_positive`` (kept rows with ``quantity > 0``; a missing quantity is not), and ``_valid``: both ids
    present and ids by the rule (:func:`valid_id_column`, a JVM expression evaluated once per group, never a
    Python worker). Nothing per id comes to the driver.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy(schema.EVENT_ID).orderBy(ORDER)
    duplicate = F.row_number().over(first) > 1
    rows = events.select(
        F.col(schema.USER_ID).cast("string").alias(_USER), F.col(schema.ITEM_ID).cast("string").alias(_ITEM),
        F.coalesce(F.col(schema.QUANTITY) > 0, F.lit(False)).alias(_POSITIVE), duplicate.alias(_DUP),
    )

    def count(condition):  # type: ignore[no-untyped-def]
        return F.sum(F.when(condition, 1).otherwise(0)).cast("long")

    dup, positive = F.col(_DUP), F.col(_POSITIVE)
    grouped = rows.groupBy(_USER, _ITEM).agg(
        count(dup).alias(_DUPLICATES), count(~dup).alias(_KEPT), count(~dup & positive).alias(_POSITIVE))
    valid = valid_id_column(F.col(_USER), max_id_length) & valid_id_column(F.col(_ITEM), max_id_length)
    return grouped.withColumn(_VALID, valid)


def java_id_pattern() -> str:
    """:data:`recsys.schema.ID_PATTERN` as a Java regex that ``rlike`` (a search) reads as Python's
    ``fullmatch`` reads the original: the end anchor is ``\\z`` (Java's ``$`` also matches before a final line
    terminator: "17135\\n" would pass). The character classes are ``\\uXXXX`` ranges of the BMP, which Java reads
    as Python does; a character beyond the BMP is one code point to both, in no range."""
    pattern = schema.ID_PATTERN
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"recsys.schema.ID_PATTERN is no longer anchored as ^...$: {pattern!r}")
    return pattern[:-1] + r"\z"


def valid_id_column(column: Column, max_id_length: int) -> Column:
    """:func:`recsys.schema.valid_id` as a Spark column expression: False for a missing id. Spark's ``length``
    counts code points, as Python's ``len``; the regex is :func:`java_id_pattern` (the same verdicts:
    tests/integration/test_spark_parity.py runs both on the id rule's edge cases)."""
    from pyspark.sql import functions as F

    rule = (F.length(column) >= 1) & (F.length(column) <= max_id_length) & column.rlike(java_id_pattern())
    return F.coalesce(rule, F.lit(False))


def _cleaning_stats(grouped: DataFrame) -> CleaningStats:
    """The counts :func:`recsys.features.cleaning.clean_events` reports, in one pass over the groups."""
    from pyspark.sql import functions as F

    valid = F.col(_VALID)
    kept, positive, duplicates = F.col(_KEPT), F.col(_POSITIVE), F.col(_DUPLICATES)
    row = grouped.agg(
        F.sum(kept + duplicates), F.sum(duplicates), F.sum(F.when(~valid, kept).otherwise(0)),
        F.sum(F.when(valid, kept - positive).otherwise(0)), F.sum(F.when(valid, positive).otherwise(0)),
    ).first()
    rows_in, duplicates_n, invalid, non_positive, rows_out = (int(v or 0) for v in (row or (0,) * 5))
    return CleaningStats(rows_in=rows_in, rows_out=rows_out, duplicate_event_ids=duplicates_n, invalid_ids=invalid,
                         non_positive_quantity=non_positive)


def _pairs(spark: SparkSession, grouped: DataFrame) -> DayPairs:
    """The day's distinct (user_id, item_id) of the kept rows as :class:`~recsys.features.build.DayPairs`: the
    pandas path's sorted ids and integer codes, with the codes made on the executors.

    Each side's distinct ids come to the driver once (Arrow) and are sorted there in UTF-8 byte order, which is
    code point order, as Python's sort; the pairs are joined on the executors to each id's position in that
    order (broadcast up to :data:`BROADCAST_IDS` ids, else a shuffle join), and the driver receives two int32
    columns (Arrow), never a text value per pair (about 8 bytes a pair instead of two Python strings: the
    driver's share at 30M events, 22.6M pairs and 2.3M ids, bench/scale), and sorts them by (user, item) code.
    """
    from pyspark.sql import functions as F

    pairs = grouped.where(F.col(_VALID) & (F.col(_POSITIVE) > 0)).select(_USER, _ITEM)
    user_ids, users = _sorted_ids(spark, pairs, _USER, _USER_CODE)
    item_ids, items = _sorted_ids(spark, pairs, _ITEM, _ITEM_CODE)
    coded = pairs
    for ids, frame, column in ((user_ids, users, _USER), (item_ids, items, _ITEM)):
        coded = coded.join(F.broadcast(frame) if len(ids) <= BROADCAST_IDS else frame, column)
    table = coded.select(_USER_CODE, _ITEM_CODE).toArrow()
    user_code = table.column(_USER_CODE).to_numpy().astype(np.int64)
    item_code = table.column(_ITEM_CODE).to_numpy().astype(np.int64)
    del table
    keys = np.sort((user_code << 32) | item_code)
    del user_code, item_code
    return DayPairs(user_ids, item_ids, (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32))


def _sorted_ids(spark: SparkSession, pairs: DataFrame, column: str, code: str) -> tuple[np.ndarray, DataFrame]:
    """``column``'s distinct ids in ``pairs`` in text order (an object array of str, on the driver) and a frame
    (``column``, ``code``: the id's position in that order, int32) to join on the executors."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pairs.select(column).distinct().toArrow().column(column)
    ids = ids.take(pc.sort_indices(ids))  # binary (UTF-8) order: code point order, as Python sorts str
    table = pa.table({column: ids, code: pa.array(np.arange(len(ids), dtype=np.int32))})
    text = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)
    return text, spark.createDataFrame(table)
