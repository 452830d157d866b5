"""Event-driven runs: the daily DAG's AssetWatcher trigger against the real Kafka broker of scripts/kafka.sh.

The sink closes a day and announces it as it does in production; the watcher's trigger (the Kafka provider's
``KafkaMessageQueueTrigger`` built by ``recsys_airflow.assets`` from the settings, through an Airflow
connection) runs as the triggerer runs it (its async ``run()``), without a scheduler; the day a run made from
its event processes is the announced one (``runtime.partition_day``, the rule every task uses). The scheduler +
triggerer path end to end is measured by ``bench/freshness --mode event``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import airflow.sdk  # noqa: F401 - puts plugins/ on sys.path (recsys_airflow)
import pytest
from fastapi.testclient import TestClient

from recsys.config import Settings
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.streaming.collector import CollectorConfig, create_app
from recsys.streaming.sink import SINK_MARKER, Sink, SinkConfig
from tests.integration.test_streaming import make_events, post_all, run_sink
from tests.kafka_broker import KafkaBroker, broker_session

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    yield from broker_session()


def next_event(watched: Any, timeout: float = 60.0) -> Any:
    """The first event the trigger's ``run()`` yields, run as the triggerer runs it: the trigger class and
    arguments it serialises to (stored in the metadata DB), ``run()`` until the first event, then ``cleanup()``
    (the consumer leaves its group, so the next trigger of the watcher takes the partition over at once)."""
    from airflow.providers.common.compat.module_loading import import_string

    classpath, kwargs = watched.serialize()
    trigger = import_string(classpath)(**kwargs)

    async def first() -> Any:
        events = trigger.run()
        try:
            return await asyncio.wait_for(events.__anext__(), timeout)
        finally:
            await events.aclose()
            await trigger.cleanup()

    return asyncio.run(first())


def as_asset_events(*payloads: dict[str, Any]) -> dict[str, list[Any]]:
    """What a run made from these trigger events has as ``triggering_asset_events`` (the triggerer records each
    event's payload under ``extra["payload"]``; the task SDK gives objects with ``.extra``)."""
    return {"recsys_raw_events": [SimpleNamespace(extra={"from_trigger": True, "payload": p}) for p in payloads]}


def test_the_watcher_fires_on_the_sinks_announcement_and_the_run_processes_that_day(
        kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import Producer
    from recsys_airflow import assets
    from recsys_airflow.runtime import announced_days, partition_day

    closed_topic = kafka_broker.new_topic("days-closed", partitions=1)
    # the connection scripts/airflow-init.sh creates, here from the environment (Airflow's secrets backend)
    conn_id = f"kafka_test_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kafka", "extra": {
        "bootstrap.servers": kafka_broker.bootstrap, "group.id": f"airflow-{conn_id}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False}}))
    store = LocalStore(tmp_path / "store")
    settings = Settings(storage_root=str(tmp_path / "store"), days_closed_topic=closed_topic, kafka_conn_id=conn_id)

    # the sink closes day D (two days ago: the wall-clock watermark passes D + 1 day + 1 h) and announces it
    topic = kafka_broker.new_topic("events-ev")
    day = datetime.now(UTC).date() - timedelta(days=2)
    with TestClient(create_app(CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic))) as client:
        assert post_all(client, make_events("ev", day, 40, 7)) == 40
    sink = Sink(store, SinkConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group=f"sink-{conn_id}",
                                  max_file_events=64, max_file_seconds=0.5, allowed_lateness=timedelta(hours=1),
                                  close_check_seconds=0.2, closed_topic=closed_topic))
    run_sink(sink, lambda s: day in s.announced)
    marker = store.read_json(f"{layout.raw_events(day)}/{SINK_MARKER}")

    # the DAG's watcher: its trigger, as the DAG file builds it from the settings
    watched = assets.raw_events(settings)
    assert [w.name for w in watched.watchers] == [assets.WATCHER]
    trigger = watched.watchers[0].trigger
    classpath, kwargs = trigger.serialize()  # what the triggerer stores and runs
    assert classpath.endswith("AwaitMessageTrigger")
    assert (kwargs["topics"], kwargs["kafka_config_id"]) == ([closed_topic], conn_id)
    assert kwargs["apply_function"] == "recsys_airflow.assets.closed_day"

    event = next_event(trigger)
    assert event.payload["date"] == day.isoformat()
    assert event.payload["partition"] == marker["partition"] == layout.raw_events(day)
    assert event.payload["files"] == marker["files"] >= 1
    # the run made from it has no logical date and no params: it processes the announced day
    assert partition_day({"partition_date": None}, None, as_asset_events(event.payload)) == day
    # a rerun by hand of another date still wins (the 'Partition date' param), as on the sensor path
    assert partition_day({"partition_date": "2010-12-02"}, None, as_asset_events(event.payload)).isoformat() \
        == "2010-12-02"

    # not an announcement (a bad key, a value naming another day) is skipped; the trigger fires on the next
    # real one. The sink announces at least once: the same day again fires again (its run is a no-op rerun)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(closed_topic, key=b"not-a-date", value=b"{}")
    producer.produce(closed_topic, key=day.isoformat().encode(), value=json.dumps({"date": "2010-12-01"}).encode())
    producer.produce(closed_topic, key=day.isoformat().encode(), value=json.dumps(marker).encode())
    assert producer.flush(30) == 0
    again = next_event(assets.raw_events(settings).watchers[0].trigger)
    assert again.payload["date"] == day.isoformat() and again.payload["offset"] == event.payload["offset"] + 3

    # a run given several days (announcements queued while the previous run ran) processes the oldest; its last
    # task announces the oldest closed day not processed yet, the way the sink does; the watcher fires for it
    later = day + timedelta(days=1)
    store.write_json(f"{layout.raw_events(later)}/{SINK_MARKER}", {**marker, "date": later.isoformat(),
                                                                  "partition": layout.raw_events(later)})
    store.mark_success(layout.raw_events(later))
    queued = as_asset_events({"date": later.isoformat()}, event.payload, again.payload)
    assert announced_days(queued) == [day, later]
    assert partition_day({}, None, queued) == day
    record_processed(store, day)
    assert assets.announce_next_day(settings, store, day) == [later.isoformat()]
    fired = next_event(assets.raw_events(settings).watchers[0].trigger).payload
    assert (fired["date"], fired["files"]) == (later.isoformat(), marker["files"])  # the day's _sink.json
    record_processed(store, later)
    assert assets.announce_next_day(settings, store, later) == []


def record_processed(store: LocalStore, day: date, blessed: bool = False) -> None:
    """Record ``day`` as evaluate does (a decision; rejected, so nothing to deploy): the day is processed."""
    from recsys import registry

    registry.update(store, lambda reg: reg["decisions"].__setitem__(
        day.isoformat(), {"date": day.isoformat(), "candidate_version": None, "blessed": blessed, "reason": "test"}))


def kafka_settings(kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   closed_topic: str) -> Settings:
    """Settings of an event-driven deployment on a fresh store, its Kafka connection in the environment."""
    conn_id = f"kafka_test_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kafka", "extra": {
        "bootstrap.servers": kafka_broker.bootstrap, "group.id": f"airflow-{conn_id}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False}}))
    return Settings(storage_root=str(tmp_path / "store"), days_closed_topic=closed_topic, kafka_conn_id=conn_id,
                    schedule_start="2026-01-01")


def test_a_day_waits_for_an_earlier_closed_day_never_run_which_is_announced_again_and_then_hands_over(
        kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17's gaps 1 and 2: a lost announcement (day B closed, never run) and a failed day (B quarantined)
    hold the later day C (its first task fails naming B) and B is announced again; once B is processed, C is
    announced. A run by hand of C leaves a quarantined B behind."""
    from airflow.sdk.exceptions import AirflowFailException
    from recsys_airflow import assets

    settings = kafka_settings(kafka_broker, tmp_path, monkeypatch, kafka_broker.new_topic("days-closed", 1))
    store = LocalStore(tmp_path / "store")
    a, b, c = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
    for closed in (a, b, c):
        store.write_json(f"{layout.raw_events(closed)}/{SINK_MARKER}",
                         {"date": closed.isoformat(), "partition": layout.raw_events(closed), "files": 2})
        store.mark_success(layout.raw_events(closed))
    record_processed(store, a)
    trigger = assets.raw_events(settings).watchers[0].trigger

    # C's run: B's announcement was lost. C fails naming B, and B is announced again (the watcher fires for it)
    with pytest.raises(AirflowFailException, match=rf"^{c} waits for {b}: .*no run has validated it yet"):
        assets.hold_for_earlier_days(settings, store, c)
    assert next_event(trigger).payload["date"] == b.isoformat()
    assert assets.hold_for_earlier_days(settings, store, b) == {"date": b.isoformat(), "earlier": []}

    # B's run fails validation: B is quarantined; C's next run fails again, naming B and why
    store.write_json(layout.validation_summary(b), {"date": b.isoformat(), "success": False, "accepted": None,
                                                   "failed": ["expect_column_values_to_be_in_set"]})
    with pytest.raises(AirflowFailException, match=rf"{c} waits for {b}: .*failed validation"):
        assets.hold_for_earlier_days(settings, store, c)
    assert next_event(trigger).payload["date"] == b.isoformat()  # retried by the next run

    # on-call accepts B (a run by hand); its run ends by announcing C, whose run is no longer held
    # A's run, had it ended after B closed, announces B; a later day's run never announces an earlier day (B)
    assert assets.announce_next_day(settings, store, a) == [b.isoformat()]
    assert next_event(trigger).payload["date"] == b.isoformat()
    assert assets.announce_next_day(settings, store, c) == []
    record_processed(store, b)
    assert assets.announce_next_day(settings, store, b) == [c.isoformat()]
    assert next_event(trigger).payload["date"] == c.isoformat()
    assert assets.hold_for_earlier_days(settings, store, c)["earlier"] == []


def test_rebuild_catalog_reads_the_days_item_events_through_the_airflow_connection(
        kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17's gap 3: the event-driven run's rebuild_catalog step builds raw/catalog/dt=D from D-1's catalog
    and D's item events on the catalog topic; it leaves a complete partition alone and writes nothing when the
    shop collects no item events or there is nothing to build from."""
    import pandas as pd
    from confluent_kafka import Producer
    from recsys_airflow import assets

    from recsys import schema
    from recsys.streaming import events
    from recsys.streaming.catalog import rebuild_from_topic

    settings = kafka_settings(kafka_broker, tmp_path, monkeypatch, "unused")
    store = LocalStore(tmp_path / "store")
    consumer = assets.consumer_config(settings)
    assert consumer["bootstrap.servers"] == kafka_broker.bootstrap
    day = date(2026, 3, 2)
    topic = kafka_broker.new_topic("catalog-events", 1)

    # no topic: item events are not collected, nothing written
    missing = rebuild_from_topic(store, settings, day, consumer=consumer, topic=f"{topic}-absent")
    assert not missing["rebuilt"] and "no topic" in missing["why"]
    # a topic, but no earlier catalog and no item event of the day: nothing to build from
    assert not rebuild_from_topic(store, settings, day, consumer=consumer, topic=topic)["rebuilt"]
    assert not store.exists(layout.raw_catalog(day))

    # the newest catalog is two days old: the day before had no run (no behaviour events), but an item event
    two_days_before, day_before = day - timedelta(days=2), day - timedelta(days=1)
    store.write_parquet(f"{layout.raw_catalog(two_days_before)}/part-00000.parquet", pd.DataFrame(
        {schema.ITEM_ID: ["a", "b"], schema.TITLE: ["mug", "cup"], schema.CATEGORY: [None, None],
         schema.PRICE: [1.0, 2.0], schema.AVAILABLE: [True, True]}).astype(schema.CATALOG_DTYPES))
    store.mark_success(layout.raw_catalog(two_days_before))
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    item_events = [  # b sells out the day before, a new item is listed on the day; one of the next day: not yet
        {"event_id": "c1", "event_time": at - timedelta(days=1), "item_id": "b", "event_type": "out_of_stock"},
        {"event_id": "c2", "event_time": at, "item_id": "c", "event_type": "listed", "title": "jug", "price": 3.0},
        {"event_id": "c3", "event_time": at + timedelta(days=1), "item_id": "a", "event_type": "delisted"},
    ]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for event in item_events:
        producer.produce(topic, key=str(event["item_id"]).encode(), value=events.encode_item(event))
    assert producer.flush(30) == 0

    result = rebuild_from_topic(store, settings, day, consumer=consumer, topic=topic)
    assert result | {"catalog": None} == {"date": day.isoformat(), "catalog": None, "rebuilt": True,
                                          "item_events": 1, "items": 3, "available": 2,
                                          "gap_days": [day_before.isoformat()]}
    gap = store.read_parquet(f"{layout.raw_catalog(day_before)}/part-00000.parquet").set_index(schema.ITEM_ID)
    assert gap[schema.AVAILABLE].to_dict() == {"a": True, "b": False} and store.is_complete(
        layout.raw_catalog(day_before))
    catalog = store.read_parquet(f"{layout.raw_catalog(day)}/part-00000.parquet").set_index(schema.ITEM_ID)
    assert catalog[schema.AVAILABLE].to_dict() == {"a": True, "b": False, "c": True}  # b's sell-out carried over
    assert catalog.loc["c", schema.TITLE] == "jug" and store.is_complete(layout.raw_catalog(day))
    # a rerun (or an upstream export) leaves the complete partition as it is
    again = rebuild_from_topic(store, settings, day, consumer=consumer, topic=topic)
    assert not again["rebuilt"] and again["why"] == "the partition is complete already"
