"""The features step on Spark: :func:`recsys.features.build.build_features` with the events' work on Spark.

What scales with the events runs on Spark's executors: reading the partition, the cleaning decisions of
:func:`recsys.features.cleaning.clean_events` (repeated ``event_id``, the first in delivery order kept; ids
that are missing or break the id rule, checked by a JVM expression of the same rule; ``quantity <= 0``), their
counts, and the distinct (user, item) pairs of the day, coded as integers against each side's distinct ids
(:func:`_coded`). Each row of the partition is read once: one window (the first of each event id; skipped
when the day's validation summary proves every event id distinct, :func:`event_ids_proven_unique`) and one
aggregation per (user, item) give the pairs and every count (:func:`_grouped`, persisted for the passes over
it). Only the distinct ids with their counts and the codes come back to the driver, the codes a range of users
at a time: what grows from them (append-only vocabularies, the train/holdout split, the query history and the
history snapshot, the stats) is the pandas path's own code (:mod:`recsys.spark.ranges`: ``write_features``' steps
per range of users), so the outputs are byte-for-byte the pandas path's (tests/integration/test_spark_parity.py)
and a later step cannot tell which engine built a day. Memory on the driver: each distinct id once as Arrow
text, one range's pairs as two int32 codes each, and the state that exists anyway (vocabularies, the previous
history snapshot as codes), not the events or the day's pairs.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys import schema
from recsys.config import Settings
from recsys.features.build import (
    READ_COLUMNS,
    FeatureError,
    FeatureStats,
    _check_order,
    validated_delivery,
)
from recsys.features.cleaning import CleaningStats
from recsys.spark import ranges
from recsys.spark.read import ORDER, check_delivery, read_events
from recsys.spark.session import BROADCAST_IDS
from recsys.storage import PartitionStore, layout
from recsys.storage.raw import fingerprint
from recsys.validation.merge import UNIQUE_PROPORTION

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)
_DUP, _VALID, _POSITIVE = "_duplicate", "_valid", "_positive"
_DUPLICATES, _KEPT = "_duplicates", "_kept"
_USER, _ITEM = "_user", "_item"
_USER_CODE, _ITEM_CODE = "_user_code", "_item_code"
NOT_NULL = "expect_column_values_to_not_be_null"
# ids of ASCII letters, digits, '_' and '-' only: valid by the id rule (no dot, no space, nothing forbidden),
# and matched without the rule's large classes and backtracking (Java's \z: the very end, no final new line)
PLAIN_ID = r"^[0-9A-Za-z_-]+\z"


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
    events = read_events(spark, store, settings, partition_dir, READ_COLUMNS, nanos=delivery.nanos,
                         spark_columns=delivery.spark_columns)
    unique = event_ids_proven_unique(store, day, delivered)
    grouped = _grouped(events, settings.validation_max_id_length, unique).persist(StorageLevel.MEMORY_AND_DISK)
    coded = None
    coded_ids: list[DataFrame] = []
    try:
        cleaning = _cleaning_stats(grouped)
        ids, coded, coded_ids = _coded(grouped)
        if len(ids.user_ids) > ranges.RANGE_USERS:  # fetched a range at a time: the codes cached, not the groups
            coded = coded.persist(StorageLevel.MEMORY_AND_DISK)
            coded.count()
            grouped.unpersist()
            for frame in coded_ids:
                frame.unpersist()

        def unchanged() -> None:  # after every range was fetched: Spark's executors read the files again
            if fingerprint(store, partition_dir) != delivered:
                raise _changed(store, day, fingerprint(store, partition_dir), passed)

        if cleaning.invalid_ids:  # only an accepted partition gets here with them: validation refuses them
            log.warning("partition %s: %d rows dropped whose user_id or item_id is missing or not a valid id",
                        day, cleaning.invalid_ids)
        if not ids.pairs:
            log.warning("partition %s has no usable events after cleaning: %s", day, cleaning.as_dict())
        return ranges.write_by_range(store, settings, day, ids, _fetch(coded), cleaning, delivered,
                                     before_save=unchanged)
    finally:
        grouped.unpersist()
        for frame in coded_ids:
            frame.unpersist()
        if coded is not None:
            coded.unpersist()


def _changed(store: PartitionStore, day: date, delivered: str, passed: str) -> FeatureError:
    return FeatureError(
        f"partition {day} changed since it was validated: the delivery now in "
        f"{store.uri(layout.raw_events(day))} ({delivered[:12]}) is not the one that passed validation "
        f"({passed[:12]}). Run the validate step for {day} again, then build its features"
    )


def event_ids_proven_unique(store: PartitionStore, day: date, delivered: str) -> bool:
    """Whether validation proved that the delivery ``delivered`` of ``day`` repeats no ``event_id``: its summary
    is of that delivery and records no missing event id (two would repeat each other, as in pandas) and a
    share of distinct event ids of exactly 1 (exact counts on both engines: the share is 1.0 only when every
    id is distinct). Anything else (an accepted day with repeats, a suite without these checks): False."""
    path = layout.validation_summary(day)
    summary = store.read_json(path) if store.exists(path) else None
    if not summary or summary.get("fingerprint") != delivered:
        return False
    checks = [c for c in summary.get("checks") or [] if c.get("column") == schema.EVENT_ID and not c.get("error")]
    no_nulls = any(c.get("expectation") == NOT_NULL and c.get("unexpected_count") == 0 for c in checks)
    distinct = any(c.get("expectation") == UNIQUE_PROPORTION and c.get("observed_value") == 1.0 for c in checks)
    return no_nulls and distinct


def _grouped(events: DataFrame, max_id_length: int, unique_ids: bool = False) -> DataFrame:
    """``events`` as one row per distinct (user text, item text) with the cleaning counts of its rows.

    A row is a duplicate when an earlier row (delivery order) has the same ``event_id`` (nulls equal, as in
    pandas; one window, a shuffle and a sort of every row). ``unique_ids``: validation proved there are none
    (:func:`event_ids_proven_unique`), and the window is skipped. Per group: ``_duplicates`` (rows that repeat
    an event id), ``_kept`` (the others), ``_positive`` (kept rows with ``quantity > 0``; a missing quantity is
    not), and ``_valid``: both ids present and ids by the rule (:func:`valid_id_column`, a JVM expression
    evaluated once per group, never a Python worker). Nothing per id comes to the driver.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy(schema.EVENT_ID).orderBy(ORDER)
    duplicate = F.lit(False) if unique_ids else F.row_number().over(first) > 1
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

    rule = (F.length(column) >= 1) & (F.length(column) <= max_id_length) & (
        column.rlike(PLAIN_ID) | column.rlike(java_id_pattern()))
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


def _coded(grouped: DataFrame) -> tuple[ranges.DayIds, DataFrame, list[DataFrame]]:
    """The day's distinct (user_id, item_id) of the kept rows: each side's distinct ids with their pairs' counts
    (:class:`~recsys.spark.ranges.DayIds`, on the driver) and the pairs as integer codes (``_user_code``,
    ``_item_code``: each id's position in its side's sorted ids), a DataFrame the ranges are fetched from
    (:func:`_fetch`), and the frames it persisted (the caller unpersists them).

    The codes are given on the executors (:func:`_sorted_ids`), and each side's sorted ids and counts come to
    the driver once (Arrow); the pairs are joined on the executors to their ids' codes (broadcast up to
    :data:`BROADCAST_IDS` ids, else a shuffle join), and the driver receives two int32 columns (Arrow) a range
    of users at a time, never a text value per pair, and sends no id back (the driver's share at 30M events,
    22.6M pairs and 2.3M ids, bench/scale).
    """
    from pyspark.sql import functions as F

    pairs = grouped.where(F.col(_VALID) & (F.col(_POSITIVE) > 0)).select(_USER, _ITEM)
    user_ids, user_counts, users = _sorted_ids(pairs, _USER, _USER_CODE)
    item_ids, item_counts, items = _sorted_ids(pairs, _ITEM, _ITEM_CODE)
    coded = pairs
    for ids, frame, column, code in ((user_ids, users, _USER, _USER_CODE), (item_ids, items, _ITEM, _ITEM_CODE)):
        codes = frame.select(column, code)
        coded = coded.join(F.broadcast(codes) if len(ids) <= BROADCAST_IDS else codes, column)
    day = ranges.DayIds(user_ids, user_counts, item_ids, item_counts, int(user_counts.sum()))
    return day, coded.select(_USER_CODE, _ITEM_CODE), [users, items]


def _fetch(coded: DataFrame) -> ranges.FetchPairs:
    """The pairs of the users with codes ``start`` to ``stop - 1``: (user code, item code) int32 arrays, sorted."""
    from pyspark.sql import functions as F

    def fetch(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        user = F.col(_USER_CODE)
        table = coded.where((user >= start) & (user < stop)).toArrow()
        keys = table.column(_USER_CODE).to_numpy().astype(np.int64)
        keys <<= 32
        keys |= table.column(_ITEM_CODE).to_numpy()
        del table
        keys.sort()
        return (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32)

    return fetch


def _sorted_ids(pairs: DataFrame, column: str, code: str) -> tuple[Any, np.ndarray, DataFrame]:
    """``column``'s distinct ids in ``pairs`` in text order (Arrow text on the driver: a few bytes an id, no Python
    object each), each one's number of pairs (int64), and a persisted frame (``column``, ``count``, ``code``: the
    id's position in that order, int32) to join on the executors.

    Spark orders strings by their UTF-8 bytes, which is code point order, as Python sorts str; the positions are
    a row number over that order (one task: a day's distinct ids of one side), so no id travels from the driver.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.orderBy(column)
    frame = pairs.groupBy(column).count().select(
        column, "count", (F.row_number().over(order) - 1).cast("int").alias(code)).persist(StorageLevel.MEMORY_AND_DISK)
    counted = frame.orderBy(code).select(column, "count").toArrow()
    ids = counted.column(column).combine_chunks()
    counts = counted.column("count").to_numpy().astype(np.int64)
    return ids, counts, frame
