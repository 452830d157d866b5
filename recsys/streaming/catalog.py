"""The daily catalog partition rebuilt from the item events: ``raw/catalog/dt=D`` = the catalog of the day
before + D's item events (``listed, delisted, out_of_stock, back_in_stock, price_change``).

The service applies item events the moment they arrive (:mod:`recsys.serving.live`); the catalog partition
stays the record of truth the features step and the serving index read. It is rebuilt from the same events
(the catalog topic, :data:`~recsys.streaming.topics.CATALOG_TOPIC`), so the next index holds what the live
state showed:

- the base is the newest complete catalog partition before D (an empty catalog if there is none);
- D's item events (event time in [D 00:00, D+1 00:00) UTC) are applied in event-time order (ties by event
  id), one event id once: ``listed`` adds or updates the item (title, category and price when given) and
  makes it available; ``delisted`` and ``out_of_stock`` make it unavailable (``available`` is the catalog's
  one availability flag; the index serves available items only); ``back_in_stock`` makes it available;
  ``price_change`` sets the price. An event for an item the base does not hold adds it (title ``""``).
- the result is written as ``raw/catalog/dt=D/part-00000.parquet`` and then ``_SUCCESS`` (a write is
  atomic: a temporary file renamed into place). A complete partition is not rewritten unless asked
  (``replace``): the partition may come from an upstream catalog export instead.

Run it once day D is over plus the allowed lateness (``recsys catalog-from-events --day D``; the sink closes
the behaviour partition of D at the same moment), before the DAG's run of D reads the catalog. With
event-driven runs the daily DAG does it (its ``rebuild_catalog`` task, :func:`rebuild_from_topic`, before
``validate``); on the daily schedule (no sink) the catalog partitions come from upstream, or from this command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.storage import PartitionStore, layout
from recsys.streaming import StreamingError, events
from recsys.streaming.topics import CATALOG_TOPIC

PART_FILE = "part-00000.parquet"
# rebuild_from_topic fills at most this many days without a catalog before the day (the topic's retention, 7 days
# by default, holds no older item events anyway)
MAX_GAP_DAYS = 31


def _empty_catalog() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in schema.CATALOG_DTYPES.items()})


def apply_item_events(base: pd.DataFrame, item_events: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """``base`` (a catalog: one row per item, :data:`schema.CATALOG_COLUMNS`) after ``item_events`` (checked
    item events, :func:`recsys.streaming.events.check_item_event`), applied in event-time order."""
    rows: dict[str, dict[str, Any]] = {}
    for record in base[list(schema.CATALOG_COLUMNS)].to_dict("records"):
        rows[str(record[schema.ITEM_ID])] = record
    seen: set[str] = set()
    for event in sorted(item_events, key=lambda e: (e[schema.EVENT_TIME], e[schema.EVENT_ID])):
        if event[schema.EVENT_ID] not in seen:
            seen.add(event[schema.EVENT_ID])
            _apply(rows, event)
    if not rows:
        return _empty_catalog()
    frame = pd.DataFrame(list(rows.values()), columns=list(schema.CATALOG_COLUMNS))
    frame = frame.sort_values(schema.ITEM_ID, kind="stable").reset_index(drop=True)
    return frame.astype(schema.CATALOG_DTYPES)


def _apply(rows: dict[str, dict[str, Any]], event: dict[str, Any]) -> None:
    """One item event on the catalog ``rows`` (item id -> row), in place."""
    item, kind = event[schema.ITEM_ID], event[schema.EVENT_TYPE]
    row = rows.setdefault(item, {schema.ITEM_ID: item, schema.TITLE: "", schema.CATEGORY: None,
                                 schema.PRICE: float("nan"), schema.AVAILABLE: True})
    if event.get(schema.PRICE) is not None:
        row[schema.PRICE] = float(event[schema.PRICE])
    if kind == events.LISTED:
        row.update({name: event[name] for name in (schema.TITLE, schema.CATEGORY) if event.get(name) is not None})
    if kind in (events.LISTED, events.BACK_IN_STOCK):
        row[schema.AVAILABLE] = True
    elif kind in (events.DELISTED, events.OUT_OF_STOCK):
        row[schema.AVAILABLE] = False


def base_catalog(store: PartitionStore, day: date) -> pd.DataFrame:
    """The newest complete catalog partition before ``day`` (empty if none)."""
    from recsys.storage.raw import read_partition

    for earlier in reversed([d for d in store.partitions(layout.RAW_CATALOG) if d < day]):
        frame = read_partition(store, layout.raw_catalog(earlier))
        return frame.drop_duplicates(schema.ITEM_ID, keep="last")
    return _empty_catalog()


def read_item_events(bootstrap: str | Mapping[str, Any], topic: str, day: date,
                     margin: timedelta = timedelta(hours=2), timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every valid item event of ``day`` (event time) on ``topic``, read from the broker offset of
    (start of ``day`` - ``margin``) to each partition's end at the time of the call. No group offsets are
    committed: a rebuild reads the same events again.

    ``bootstrap``: ``host:port[,...]``, or a consumer configuration (``bootstrap.servers`` and, for a production
    cluster, its security settings; group and commit settings are replaced). A missing topic is a
    :class:`StreamingError`."""
    found = _read_item_events(bootstrap, topic, day, margin, timeout)
    if found is None:
        where = bootstrap if isinstance(bootstrap, str) else bootstrap.get("bootstrap.servers")
        raise StreamingError(f"topic {topic!r} is missing on {where}")
    return found


def _read_item_events(bootstrap: str | Mapping[str, Any], topic: str, day: date, margin: timedelta,
                      timeout: float) -> list[dict[str, Any]] | None:
    """:func:`read_item_events`, None if ``topic`` does not exist."""
    from confluent_kafka import Consumer, KafkaError

    start = datetime.combine(day, time.min, UTC)
    end = start + timedelta(days=1)
    config = {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)
    consumer = Consumer(config | {"group.id": "recsys-catalog-rebuild", "enable.auto.commit": False,
                                  "enable.partition.eof": True})
    found: list[dict[str, Any]] = []
    rules = events.EventRules()
    try:
        partitions = _topic_partitions(consumer, topic, config.get("bootstrap.servers"), timeout)
        if partitions is None:
            return None
        stop_at = _replay_range(consumer, topic, partitions, start - margin, timeout)
        if not stop_at:
            return []
        remaining = set(stop_at)
        while remaining:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                problem, partition, offset = msg.error(), int(msg.partition() or 0), int(msg.offset() or 0)
                if problem is not None:
                    if problem.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(partition)
                        continue
                    raise StreamingError(f"reading {topic!r}: {problem.str()}")
                if offset + 1 >= stop_at[partition]:  # the end as of the call
                    remaining.discard(partition)
                event = events.decode_any(msg.value(), rules)
                if (event is not None and event[schema.EVENT_TYPE] in events.ITEM_EVENT_TYPES
                        and start <= event[schema.EVENT_TIME] < end):
                    found.append(event)
    finally:
        consumer.close()
    return found


def _topic_partitions(consumer: Any, topic: str, where: Any, timeout: float) -> list[int] | None:
    """The partition numbers of ``topic``, or None if it does not exist; :class:`StreamingError` if the broker
    does not answer."""
    from confluent_kafka import KafkaException

    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as err:
        raise StreamingError(f"the broker {where} does not answer: {err.args[0].str()}") from err
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    return sorted(meta.partitions)


def _replay_range(consumer: Any, topic: str, partitions: list[int], since: datetime,
                  timeout: float) -> dict[int, int]:
    """Assign each partition of ``topic`` with messages from ``since`` on at the first such offset; the
    partitions assigned -> their end offset now (where the read stops)."""
    from confluent_kafka import TopicPartition

    ms = int(since.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=timeout)
    starts, stop_at = [], {}
    for tp in found:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
        if 0 <= tp.offset < high:  # -1: no message at or after ``since``
            starts.append(TopicPartition(topic, tp.partition, tp.offset))
            stop_at[tp.partition] = high
    if starts:
        consumer.assign(starts)
    return stop_at


def rebuild(store: PartitionStore, day: date, item_events: Iterable[dict[str, Any]],
            replace: bool = False) -> pd.DataFrame:
    """Write ``raw/catalog/dt=day`` = the catalog before ``day`` + ``item_events`` (of ``day``); the written
    catalog. :class:`StreamingError` if the partition is complete already and ``replace`` is off."""
    folder = layout.raw_catalog(day)
    if store.is_complete(folder) and not replace:
        raise StreamingError(f"{store.uri(folder)} is complete already (pass replace to rebuild it)")
    catalog = apply_item_events(base_catalog(store, day), item_events)
    store.write_parquet(f"{folder}/{PART_FILE}", catalog)
    store.mark_success(folder)
    return catalog


def rebuild_from_topic(store: PartitionStore, settings: Settings, day: date, *, consumer: Mapping[str, Any],
                       topic: str = CATALOG_TOPIC, run_id: str | None = None) -> dict[str, Any]:
    """The event-driven DAG's ``rebuild_catalog`` step: write ``raw/catalog/dt=day`` from the catalog of the day
    before + ``day``'s item events on ``topic`` (read with the consumer configuration ``consumer``), unless
    there is nothing to rebuild it from. Idempotent; returns what it did (``rebuilt`` and why not).

    Days between the newest earlier catalog and ``day`` that have none (a day without behaviour events, so
    without a run, may still have item events) are rebuilt first, in order, the last :data:`MAX_GAP_DAYS` of
    them at most. Nothing is written when the partition is complete already (an upstream export, or an earlier
    run), when ``topic`` does not exist (this shop sends no item events: its catalog comes from upstream), or
    when there is neither an earlier catalog nor an item event of ``day`` (an empty catalog fails validation).
    ``settings`` and ``run_id`` are the step signature's (unused)."""
    folder = layout.raw_catalog(day)
    result: dict[str, Any] = {"date": day.isoformat(), "catalog": store.uri(folder), "rebuilt": False}
    if store.is_complete(folder):
        return result | {"why": "the partition is complete already"}
    base = [d for d in store.partitions(layout.RAW_CATALOG) if d < day]
    gap = [] if not base else [day - timedelta(days=n) for n in range(min((day - base[-1]).days - 1, MAX_GAP_DAYS),
                                                                         0, -1)]
    for each in [*gap, day]:
        found = _read_item_events(consumer, topic, each, timedelta(hours=2), 30.0)
        if found is None:
            return result | {"why": f"no topic {topic!r}: item events are not collected, the catalog comes from "
                                    "upstream"}
        if not found and not base:
            return result | {"why": f"no earlier catalog and no item event of {day}"}
        catalog, applied = rebuild(store, each, found), len(found)
    return result | {"rebuilt": True, "item_events": applied, "items": len(catalog),
                     "available": int(catalog[schema.AVAILABLE].sum()), "gap_days": [d.isoformat() for d in gap]}


def main(argv: list[str] | None = None) -> int:
    """``recsys catalog-from-events --day D``: rebuild the catalog partition of D from the catalog topic."""
    from recsys.storage import open_store
    from recsys.streaming.topics import default_bootstrap

    parser = argparse.ArgumentParser(prog="recsys catalog-from-events",
                                     description="rebuild raw/catalog/dt=D from the day before + D's item events")
    parser.add_argument("--day", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--bootstrap", help="host:port of a broker (default: RECSYS_KAFKA_BOOTSTRAP or var/kafka)")
    parser.add_argument("--topic", default=CATALOG_TOPIC)
    parser.add_argument("--replace", action="store_true", help="rewrite a complete partition")
    args = parser.parse_args(argv)
    try:
        store = open_store(Settings.from_env())
        found = read_item_events(args.bootstrap or default_bootstrap(), args.topic, args.day)
        catalog = rebuild(store, args.day, found, replace=args.replace)
    except StreamingError as err:
        parser.exit(1, f"recsys catalog-from-events: {err}\n")
    print(f"{store.uri(layout.raw_catalog(args.day))}: {len(catalog)} items ({int(catalog[schema.AVAILABLE].sum())} "
          f"available) after {len(found)} item events", file=sys.stderr)
    return 0
